"""Dashboard pages for keys: overview, the key table, key details and actions.

Views parse, build a Caller, call one selector or service, and render.
Mutating views are POST-only and return the fragment they changed; a
``KmsError`` becomes a flash message in ``policies.middleware``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib import messages
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from audit import selectors as audit_selectors
from keys import selectors, services
from keys.filters import KeyFilter
from keys.forms import (
    AliasForm,
    DefaultPolicyViewForm,
    DeleteImportedMaterialForm,
    DescriptionForm,
    GrantApprovalsForm,
    KeyCreateForm,
    PolicyForm,
    RotationForm,
    ScheduleDeletionForm,
    TagForm,
)
from keys.models import Key, KeyManager, KeySpec
from keys.policy_view import DefaultView, default_view_of, policy_from_default_view
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AlreadyExists,
    InvalidAliasName,
    KmsError,
    MalformedPolicyDocument,
    NotFound,
    TagError,
    UnsupportedOperation,
    ValidationError,
)
from kmsweb.lib.htmx import wants_partial
from policies import selectors as policy_selectors
from policies.callers import caller_from_request
from policies.roles import role_allows


def _can(caller: Caller, *actions: str) -> dict[str, bool]:
    return {a.split(":")[1]: role_allows(caller.roles, a) for a in actions}


KEY_ACTIONS = (
    "kms:CreateKey",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:RotateKeyOnDemand",
    "kms:EnableKeyRotation",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:PutKeyPolicy",
    "kms:UpdateKeyDescription",
    "kms:DeleteImportedKeyMaterial",
    "kmsweb:UpdateGrantApprovals",
)


@require_GET
def overview(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    context = {
        "summary": selectors.key_overview_for(caller=caller),
        "denials": audit_selectors.recent_denials(caller=caller),
        "ranges": audit_selectors.RANGES,
        "range": request.GET.get("range", "day"),
        "can": _can(caller, "kms:CreateKey"),
        "nav": "overview",
    }
    return render(request, "keys/overview.html", context)


@require_GET
@vary_on_headers("HX-Request")
def key_list(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    flt = KeyFilter.from_query(request.GET)
    context: dict[str, Any] = {
        "flt": flt,
        "tab_counts": selectors.key_counts_for(caller=caller),
        "can": _can(caller, "kms:CreateKey"),
        "nav": "keys",
        "key_specs": KeySpec.values,
    }
    if flt.kind == "owned":
        context["owned"] = selectors.owned_key_summary()
    else:
        context["table"] = selectors.key_table_for(caller=caller, flt=flt)
    template = "keys/partials/key_table.html" if wants_partial(request) else "keys/key_list.html"
    return render(request, template, context)


@require_GET
def key_store_list(request: Any) -> HttpResponse:
    """The account's custom key stores, read through DescribeCustomKeyStores (authorized, audited)."""
    caller = caller_from_request(request)
    stores = services.custom_key_store_describe(caller=caller, limit=1000)["CustomKeyStores"]
    counts = selectors.custom_key_store_key_counts(store_ids=[s["CustomKeyStoreId"] for s in stores])
    for store in stores:
        store["key_count"] = counts.get(store["CustomKeyStoreId"], 0)
    return render(request, "keys/key_store_list.html", {"stores": stores, "nav": "key_stores"})


def _key(caller: Caller, key_id: str) -> Key:
    try:
        uuid.UUID(key_id)
    except ValueError:
        raise NotFound(f"Invalid key id '{key_id}'.") from None
    return selectors.key_get_for(caller=caller, key_ref=key_id, allow_alias=False)


def _detail_context(caller: Caller, key: Key, **extra: Any) -> dict[str, Any]:
    detail = selectors.key_detail_for(caller=caller, key=key)
    can = _can(caller, *KEY_ACTIONS)
    if key.manager != KeyManager.CUSTOMER:
        can = dict.fromkeys(can, False)
    # Asking for a grant is a request, not a change: any role that may ask sees the link.
    can["RequestGrant"] = key.manager == KeyManager.CUSTOMER and role_allows(caller.roles, "kmsweb:RequestGrant")
    policy_text = key.policy
    try:
        policy_text = json.dumps(json.loads(key.policy), indent=2)
    except ValueError:
        pass
    default_view = default_view_of(key.policy, key.account_id or caller.account_id)
    context = {
        "key": key,
        "detail": detail,
        "can": can,
        "policy_form": PolicyForm(initial={"policy": policy_text}),
        "default_view": default_view,
        "default_view_form": _default_view_form(caller, key, default_view) if can["PutKeyPolicy"] else None,
        "deletion_form": ScheduleDeletionForm(key_id=str(key.id)),
        "delete_material_form": DeleteImportedMaterialForm(key_id=str(key.id)),
        "rotation_form": RotationForm(
            initial={"enabled": key.rotation_enabled, "rotation_period_days": key.rotation_period_days or 365}
        ),
        "alias_form": AliasForm(),
        "tag_form": TagForm(),
        "description_form": DescriptionForm(initial={"description": key.description}),
        "approvals_form": GrantApprovalsForm(initial={"required": key.grant_approvals_required}),
        "ranges": audit_selectors.RANGES,
        "nav": "keys",
    }
    context.update(extra)
    return context


def _default_view_form(
    caller: Caller, key: Key, view: DefaultView | None, data: Any = None
) -> DefaultPolicyViewForm | None:
    """The default view's form, its choices the account's users and roles (and whoever the policy names)."""
    if view is None and data is None:
        return None
    arns = [p.arn for p in policy_selectors.principal_list_for(caller=caller) if p.type in ("user", "role")]
    named = (view.administrators + view.users) if view else []
    arns += [arn for arn in named if arn not in arns]
    initial = None
    if view is not None:
        initial = {
            "administrators": view.administrators,
            "users": view.users,
            "other_accounts": "\n".join(view.other_accounts),
        }
    return DefaultPolicyViewForm(
        data, initial=initial, principal_arns=arns, account_id=key.account_id or caller.account_id
    )


@require_GET
def key_detail(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    try:
        key = _key(caller, key_id)
    except NotFound as exc:
        return render(request, "keys/key_missing.html", {"missing": exc, "key_id": key_id, "nav": "keys"}, status=404)
    services.key_describe(caller=caller, key=key)
    return render(request, "keys/key_detail.html", _detail_context(caller, key))


@require_http_methods(["GET", "POST"])
def key_create(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    if not role_allows(caller.roles, "kms:CreateKey") and request.method == "GET":
        # The POST is refused (and audited) by the service; the form is not even shown.
        return render(request, "keys/key_create.html", {"refused": True, "nav": "keys"}, status=403)
    form = KeyCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            key = services.key_create(
                caller=caller,
                origin=data["origin"] or "AWS_KMS",
                description=data["description"],
                key_spec=data["key_spec"] or None,
                key_usage=data["key_usage"] or None,
                tags=data["tags"],
                multi_region=data["multi_region"],
                alias=data["alias"] or None,
                rotation_period_days=data["rotation_period_days"] if data["rotation_enabled"] else None,
            )
        except (AlreadyExists, InvalidAliasName) as exc:
            form.add_error("alias", exc.message)
        except TagError as exc:
            form.add_error("tags", exc.message)
        except (ValidationError, UnsupportedOperation) as exc:
            form.add_error("key_usage", exc.message)
        else:
            messages.success(request, f"Created key {key.id}.")
            url = reverse("keys:key_detail", args=[key.id])
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    return render(request, "keys/key_create.html", {"form": form, "nav": "keys"})


@require_GET
def key_create_usage(request: Any) -> HttpResponse:
    """The usage menu for the key spec the create form has chosen (swapped in by HTMX)."""
    form = KeyCreateForm(initial={"key_spec": request.GET.get("key_spec", "")})
    return render(request, "keys/partials/key_create_usage.html", {"field": form["key_usage"]})


@require_GET
def key_suggest(request: Any) -> HttpResponse:
    """``<option>``s for a key field's datalist (HTMX type-ahead): aliases, descriptions, ids."""
    caller = caller_from_request(request)
    text = next((request.GET[n] for n in ("q", "key", "key_id") if request.GET.get(n)), "")
    suggestions = selectors.key_suggestions_for(caller=caller, text=text)
    return render(request, "keys/partials/key_suggestions.html", {"suggestions": suggestions})


@require_GET
def key_public_key(request: Any, key_id: str) -> HttpResponse:
    """Download an asymmetric key's public key as PEM (GetPublicKey, authorized and audited)."""
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    result = services.key_get_public_key(caller=caller, key=key)
    response = HttpResponse(selectors.public_key_pem(result.public_key), content_type="application/x-pem-file")
    response["Content-Disposition"] = f'attachment; filename="{key.id}.pem"'
    return response


def _refresh(request: Any, caller: Caller, key_id: str, event: str, **extra: Any) -> HttpResponse:
    """Re-render the key page's body after a change and announce it.

    Without HTMX a successful change redirects to the key page (so a reload
    does not repeat it); a form with errors is shown again in the full page.
    """
    key = _key(caller, key_id)
    if not wants_partial(request):
        if not any(name.endswith("_form") for name in extra):
            if extra.get("done"):
                messages.success(request, extra["done"])
            return redirect("keys:key_detail", key_id=key.id)
        return render(request, "keys/key_detail.html", _detail_context(caller, key, **extra))
    response = render(request, "keys/partials/key_body.html", _detail_context(caller, key, **extra))
    return trigger_client_event(response, event)


@require_POST
def key_enable(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    services.key_enable(caller=caller, key=_key(caller, key_id))
    return _refresh(request, caller, key_id, "keyChanged", done="Key enabled.")


@require_POST
def key_disable(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    services.key_disable(caller=caller, key=_key(caller, key_id))
    return _refresh(
        request, caller, key_id, "keyChanged", done="Key disabled: requests that use it fail until it is enabled again."
    )


@require_POST
def key_rotate(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    services.key_rotate(caller=caller, key=_key(caller, key_id), rotation_type="ON_DEMAND")
    return _refresh(request, caller, key_id, "keyRotated", done="Key rotated: new material encrypts from now on.")


@require_POST
def key_rotation(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    form = RotationForm(request.POST)
    if not form.is_valid():
        return _refresh(request, caller, key_id, "keyChanged", rotation_form=form)
    if form.cleaned_data["enabled"]:
        services.key_enable_rotation(caller=caller, key=key, period_days=form.cleaned_data["rotation_period_days"])
    else:
        services.key_disable_rotation(caller=caller, key=key)
    return _refresh(request, caller, key_id, "keyChanged")


@require_POST
def key_schedule_deletion(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    form = ScheduleDeletionForm(request.POST, key_id=str(key.id))
    if not form.is_valid():
        return _refresh(request, caller, key_id, "keyChanged", deletion_form=form, open_panel="deletion")
    days = form.cleaned_data["pending_window_days"]
    result = services.key_schedule_deletion(caller=caller, key=key, pending_window_days=days)
    done = f"Deletion scheduled in {days} days."
    if result["KeyState"] == "PendingReplicaDeletion":
        done = f"Deletion scheduled: the {days}-day waiting period begins when the last replica is deleted."
    return _refresh(request, caller, key_id, "keyChanged", done=done)


@require_POST
def key_delete_imported_material(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    form = DeleteImportedMaterialForm(request.POST, key_id=str(key.id))
    if not form.is_valid():
        return _refresh(request, caller, key_id, "keyChanged", delete_material_form=form, open_panel="material")
    services.key_delete_imported_material(caller=caller, key=key)
    return _refresh(request, caller, key_id, "keyChanged")


@require_POST
def key_cancel_deletion(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    services.key_cancel_deletion(caller=caller, key=_key(caller, key_id))
    return _refresh(
        request,
        caller,
        key_id,
        "keyChanged",
        done="Deletion cancelled. The key is disabled; enable it to use it again.",
    )


@require_POST
def key_alias_add(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    form = AliasForm(request.POST)
    if form.is_valid():
        try:
            services.alias_create(caller=caller, name=form.cleaned_data["alias"], key=key)
        except (AlreadyExists, InvalidAliasName) as exc:
            form.add_error("alias", exc.message)
    if form.errors:
        return _refresh(request, caller, key_id, "keyChanged", alias_form=form, open_panel="alias")
    return _refresh(request, caller, key_id, "keyChanged")


@require_POST
def key_alias_remove(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    name = request.POST.get("alias", "")
    # A NUL never names an alias, and PostgreSQL refuses it in a query.
    if "\x00" in name or not key.aliases.filter(name=name).exists():
        raise NotFound(f"Alias {name!r} does not point at this key.")
    services.alias_delete(caller=caller, name=name)
    return _refresh(request, caller, key_id, "keyChanged")


@require_POST
def key_tag_add(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    form = TagForm(request.POST)
    if form.is_valid():
        try:
            services.key_tag(
                caller=caller,
                key=key,
                tags=[{"TagKey": form.cleaned_data["tag_key"], "TagValue": form.cleaned_data["tag_value"]}],
            )
        except TagError as exc:
            form.add_error("tag_key", exc.message)
    if form.errors:
        return _refresh(request, caller, key_id, "keyChanged", tag_form=form, open_panel="tag")
    return _refresh(request, caller, key_id, "keyChanged")


@require_POST
def key_tag_remove(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    services.key_untag(caller=caller, key=_key(caller, key_id), tag_keys=[request.POST.get("tag_key", "")])
    return _refresh(request, caller, key_id, "keyChanged")


@require_POST
def key_policy(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    form = PolicyForm(request.POST)
    if form.is_valid():
        try:
            services.key_put_policy(caller=caller, key=key, policy=form.cleaned_data["policy"])
        except MalformedPolicyDocument as exc:
            form.add_error("policy", exc.message)
    if form.errors:
        form.mark_error_position()
        return _refresh(request, caller, key_id, "keyChanged", policy_form=form, open_panel="policy")
    return _refresh(request, caller, key_id, "keyChanged", policy_saved=True)


@require_POST
def key_policy_default_view(request: Any, key_id: str) -> HttpResponse:
    """Save the key policy from AWS's default view (administrators, users, other accounts)."""
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    current = default_view_of(key.policy, key.account_id or caller.account_id)
    form = _default_view_form(caller, key, current, data=request.POST)
    assert form is not None
    if current is None:
        form.is_valid()
        form.add_error(
            None, "This key policy has statements of its own, which the default view cannot show: edit it as JSON."
        )
    elif form.is_valid():
        view = DefaultView(
            administrators=form.cleaned_data["administrators"],
            users=form.cleaned_data["users"],
            other_accounts=form.cleaned_data["other_accounts"],
        )
        policy = policy_from_default_view(view, account_id=key.account_id or caller.account_id, key_usage=key.key_usage)
        try:
            services.key_put_policy(caller=caller, key=key, policy=policy)
        except MalformedPolicyDocument as exc:
            form.add_error(None, exc.message)
    if form.errors:
        return _refresh(request, caller, key_id, "keyChanged", default_view_form=form, open_panel="policy")
    return _refresh(request, caller, key_id, "keyChanged", default_view_saved=True)


@require_POST
def key_description(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    form = DescriptionForm(request.POST)
    if not form.is_valid():
        return _refresh(request, caller, key_id, "keyChanged", description_form=form)
    services.key_update_description(caller=caller, key=key, description=form.cleaned_data["description"])
    return _refresh(request, caller, key_id, "keyChanged")


@require_POST
def key_grant_approvals(request: Any, key_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    key = _key(caller, key_id)
    form = GrantApprovalsForm(request.POST)
    if not form.is_valid():
        return _refresh(request, caller, key_id, "keyChanged", approvals_form=form)
    services.key_set_grant_approvals(caller=caller, key=key, required=form.cleaned_data["required"])
    return _refresh(request, caller, key_id, "keyChanged")


@require_GET
def usage(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    return render(
        request,
        "keys/usage.html",
        {"ranges": audit_selectors.RANGES, "range": request.GET.get("range", "day"), "nav": "usage", "caller": caller},
    )


@require_GET
def usage_data(request: Any) -> JsonResponse:
    """Chart data for the whole account or one key (``?key=<id>``)."""
    caller = caller_from_request(request)
    key_id = request.GET.get("key") or None
    if key_id is not None:
        try:
            key_id = str(_key(caller, key_id).id)
        except KmsError as exc:
            return JsonResponse({"error": exc.code, "message": exc.message}, status=400)
    data = audit_selectors.usage_series(caller=caller, range_name=request.GET.get("range", "day"), key_id=key_id)
    return JsonResponse(data)
