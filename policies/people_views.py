"""People pages: administrators manage dashboard users.

Reads go through ``selectors.people_list_for`` / ``person_get_for``, which
only administrators pass. Writes name their user with
``selectors.person_target`` and leave the decision to the service, which
authorizes (``iam:`` actions, second factor) and audits, so a forged
request by anyone else is refused *and* recorded.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AlreadyExists, ValidationError
from policies import selectors, services
from policies.callers import caller_from_request
from policies.forms import PersonCreateForm, PersonForm
from policies.roles import ROLE_LABELS, role_policy_document


def _list_page(request: Any, caller: Caller, form: PersonCreateForm | None = None) -> HttpResponse:
    context = {
        "people": selectors.people_list_for(caller=caller),
        "form": form or PersonCreateForm(),
        "role_labels": ROLE_LABELS,
        "nav": "people",
    }
    return render(request, "policies/people_list.html", context)


def _detail_page(request: Any, caller: Caller, user_id: int, form: PersonForm | None = None) -> HttpResponse:
    person = selectors.person_get_for(caller=caller, user_id=user_id)
    user = person.user
    initial = {"first_name": user.first_name, "last_name": user.last_name, "email": user.email, "roles": person.roles}
    context = {
        "person": person,
        "form": form or PersonForm(initial=initial),
        "role_policies": [
            (role, ROLE_LABELS.get(role, role), json.dumps(json.loads(role_policy_document(role)), indent=2))
            for role in person.roles
        ],
        "nav": "people",
    }
    return render(request, "policies/person_detail.html", context)


@require_GET
def people_list(request: Any) -> HttpResponse:
    return _list_page(request, caller_from_request(request))


@require_POST
def person_create(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    form = PersonCreateForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            user = services.user_create(
                caller=caller,
                username=data["username"],
                password=data["password"],
                roles=data["roles"],
                email=data["email"],
                first_name=data["first_name"],
                last_name=data["last_name"],
            )
        except AlreadyExists as exc:
            form.add_error("username", exc.message)
        except ValidationError as exc:
            field = "email" if "e-mail" in exc.message else "username" if "user name" in exc.message else "password"
            form.add_error(field, exc.message)
        else:
            return redirect("policies:person_detail", user_id=user.pk)
    return _list_page(request, caller, form)


@require_GET
def person_detail(request: Any, user_id: int) -> HttpResponse:
    return _detail_page(request, caller_from_request(request), user_id)


@require_POST
def person_update(request: Any, user_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    user = selectors.person_target(user_id=user_id)
    form = PersonForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.user_update(
                caller=caller,
                user=user,
                first_name=data["first_name"],
                last_name=data["last_name"],
                email=data["email"],
                roles=data["roles"],
            )
        except ValidationError as exc:
            form.add_error("email" if "e-mail" in exc.message else "roles", exc.message)
        else:
            return redirect("policies:person_detail", user_id=user.pk)
    return _detail_page(request, caller, user.pk, form)


@require_POST
def person_set_active(request: Any, user_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    user = selectors.person_target(user_id=user_id)
    services.user_set_active(caller=caller, user=user, active=request.POST.get("active") == "true")
    return redirect("policies:person_detail", user_id=user.pk)


@require_POST
def person_totp_reset(request: Any, user_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    user = selectors.person_target(user_id=user_id)
    services.user_totp_reset(caller=caller, user=user)
    return redirect("policies:person_detail", user_id=user.pk)


@require_POST
def person_unlock(request: Any, user_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    user = selectors.person_target(user_id=user_id)
    services.user_unlock(caller=caller, user=user)
    return redirect("policies:person_detail", user_id=user.pk)
