"""The dashboard's gate, over every URL of the URLconf.

A session that passed the password step but not the second factor, or no
session at all, is sent to verify (or to sign in) from every view that did
not opt out, whatever the method and whatever headers it adds
(``X-Amz-Target`` and ``HX-Request`` included), and changes nothing: every
row of every app table is compared before and after. The URLs are built
from the URLconf itself, with arguments naming real rows (a key, a
principal with an access key, a pending grant request, an alarm, an audit
event, an export), so a view that ran would act. The client does not
enforce CSRF: the session's owner holds its token.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.core.exceptions import PermissionDenied
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django_otp.middleware import is_verified

from audit import selectors as audit_selectors
from audit.alarm_rules import AlarmSpec
from audit.models import AuditEvent
from audit.services.alarms import alarm_create
from audit.services.exporting import audit_export_request
from keys.models import Key
from kmsweb.lib.caller import Caller
from policies import services
from policies.models import Principal
from policies.roles import ALL_ROLES
from tests import dashboard_fixtures
from tests.conftest import REGION, Persona
from tests.dashboard_fixtures import DashboardUser
from tests.factories import PrincipalFactory

make_dashboard_user = dashboard_fixtures.make_dashboard_user

METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
HEADERS: dict[str, dict[str, str]] = {
    "none": {},
    "x-amz-target": {"HTTP_X_AMZ_TARGET": "TrentService.ScheduleKeyDeletion"},
    "hx-request": {"HTTP_HX_REQUEST": "true"},
    "both": {"HTTP_X_AMZ_TARGET": "TrentService.ScheduleKeyDeletion", "HTTP_HX_REQUEST": "true"},
}
# The views anyone may call (Django's @login_not_required), and those a
# password-only session may call (@mfa_not_required). Nothing else is open.
OPEN_VIEWS = {
    "policies:login",
    "policies:logout",
    # Single sign-on: starting it, and the provider's answer (checked by its id_token).
    "policies:oidc_login",
    "policies:oidc_callback",
    "audit:public_keys",
    "audit:public_key_pem",
    # kmsweb's REST API: each view authenticates its request by SigV4.
    "policies:api_grant_requests",
    "policies:api_grant_request",
    "policies:api_grant_request_withdraw",
    "compliance:api_findings",
    # Probes and the Prometheus scrape (kmsweb.health): no session; /metrics has its own token or network check.
    "ops:healthz",
    "ops:readyz",
    "ops:metrics",
    "compliance:api_access_review",
    "compliance:api_policy_previews",
}
PASSWORD_ONLY_VIEWS = {"policies:mfa_verify", "policies:mfa_enroll"}
FULL_KMS = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})


def url_patterns(patterns: list[Any] | None = None, namespace: str = "") -> Iterator[tuple[str, URLPattern]]:
    """Every URL pattern of the URLconf, with its namespaced name."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from url_patterns(entry.url_patterns, inner)
        else:
            assert isinstance(entry, URLPattern)
            assert entry.name, f"every URL is named: {entry.pattern}"
            yield f"{namespace}{entry.name}", entry


PATTERNS = dict(url_patterns())
GATED = sorted(set(PATTERNS) - OPEN_VIEWS - PASSWORD_ONLY_VIEWS)


def caller_of(who: DashboardUser) -> Caller:
    p = who.principal
    return Caller(
        principal_arn=p.arn,
        account_id=p.account_id,
        region=REGION,
        origin="dashboard",
        principal_type=p.type,
        principal_name=p.name,
        principal_pk=p.pk,
        mfa_present=True,
        roles=ALL_ROLES,
    )


@pytest.fixture
def admin(make_dashboard_user: Callable[..., DashboardUser]) -> DashboardUser:
    """A superuser holding every role, with a confirmed TOTP device."""
    admin = make_dashboard_user("ada", *ALL_ROLES)
    admin.user.is_superuser = True
    admin.user.save()
    return admin


@pytest.fixture
def world(admin: DashboardUser, key_admin: Persona, make_key: Callable[..., Key]) -> dict[str, Any]:
    """Real rows for every URL argument, and a form body that would act on them."""
    key = make_key(description="payroll")
    grantee = PrincipalFactory(account=key_admin.principal.account, name="billing-app", type="role")
    caller = caller_of(admin)
    grant_request = services.grant_request_create(
        caller=caller,
        key=key,
        grantee_principal=grantee.arn,
        operations=["Decrypt"],
        constraints=None,
        justification="Month-end close (FIN-12).",
        duration=timedelta(hours=4),
    )
    system = Caller.system("tests", account_id=key.account_id)
    alarm = alarm_create(
        caller=system,
        spec=AlarmSpec(name="denials", metric="denials", period=300, comparison="GreaterThanThreshold", threshold=1),
    )
    flt, errors = audit_selectors.audit_filter_for(caller=caller, params={})
    assert not errors
    export = audit_export_request(caller=caller, fmt="jsonl", flt=flt)
    from compliance.models import Finding
    from compliance.services import compliance_evaluate
    from kmsweb.lib import clock

    compliance_evaluate(caller=system, now=clock.now())
    finding = Finding.objects.order_by("pk").first()
    assert finding is not None
    from compliance.campaigns import campaign_start

    campaign = campaign_start(caller=caller, name="gate review")
    item = campaign.items.order_by("pk").first()
    assert item is not None
    args = {
        "finding_id": str(finding.pk),
        "key_id": str(key.id),
        "principal_id": key_admin.principal.pk,
        "arn": key_admin.principal.arn,
        "user_id": admin.user.pk,
        "request_id": grant_request.pk,
        "event_id": str(AuditEvent.objects.latest("id").event_id),
        "export_id": str(export.pk),
        "alarm_id": str(alarm.pk),
        "name": "rotate_keys",
        "fingerprint": "0" * 64,
        "campaign_id": str(campaign.pk),
        "item_id": str(item.pk),
    }
    form = {
        "confirm": str(key.id),
        "pending_window_days": "7",
        "enabled": "on",
        "rotation_period_days": "90",
        "alias": "alias/gate-open",
        "tag_key": "gate",
        "tag_value": "open",
        "policy": FULL_KMS,
        "description": "changed through the gate",
        "required": "1",
        "name": "GateOpen",
        "document": FULL_KMS,
        "access_key_id": key_admin.access_key_id,
        "active": "false",
        "verdict": "approve",
        "comment": "fine",
        "format": "jsonl",
        "key": str(key.id),
        "grantee_principal": grantee.arn,
        "operations": ["Decrypt"],
        "justification": "gate",
        "duration": "1",
        "duration_unit": "hours",
        "origin": "AWS_KMS",
        "key_spec": "SYMMETRIC_DEFAULT",
        "key_usage": "ENCRYPT_DECRYPT",
        "metric": "denials",
        "period": "300",
        "comparison": "GreaterThanThreshold",
        "threshold": "1",
        "until": "2099-01-01",
        "decision": "revoke",
        "review_days": "7",
        "auto_revoke": "on",
    }
    return {"args": args, "form": form}


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of kmsweb's apps and of the users and groups."""
    models = [
        m
        for label in ("keys", "policies", "audit", "compliance", "auth")
        for m in apps.get_app_config(label).get_models()
    ]
    return {m._meta.label: list(m._base_manager.order_by("pk").values()) for m in models}


def url_of(name: str, args: dict[str, Any]) -> str:
    pattern = PATTERNS[name]
    wanted = set(pattern.pattern.converters)
    unknown = wanted - set(args)
    assert not unknown, f"{name}: give the test a real value for {unknown}"
    return reverse(name, kwargs={k: args[k] for k in wanted})


def password_only(admin: DashboardUser) -> Client:
    """A session that passed the password step and stopped before the second factor."""
    client = Client(raise_request_exception=False)
    response = client.post("/login/", {"username": admin.username, "password": admin.password, "next": "/"})
    assert response.status_code == 302 and response["Location"].startswith("/mfa/verify/")
    return client


def send(client: Client, method: str, url: str, headers: dict[str, str], form: dict[str, Any]) -> Any:
    if method == "POST":
        return client.post(url, form, **headers)
    return client.generic(method, url, **headers)


def assert_sent_to(response: Any, target: str, what: str) -> None:
    assert response.status_code != 500, what
    if "HTTP_HX_REQUEST" in what:
        # htmx: a 204 telling the browser to load the page itself.
        assert response.status_code == 204, (what, response.status_code)
        assert response["HX-Redirect"].startswith(f"{target}?next="), what
    else:
        assert response.status_code == 302, (what, response.status_code, response.content[:300])
        assert response["Location"].startswith(f"{target}?next="), (what, response["Location"])


def run_matrix(client: Client, name: str, world: dict[str, Any], target: str) -> None:
    url = url_of(name, world["args"])
    before = snapshot()
    for method in METHODS:
        if url == "/" and method == "POST":
            continue  # POST / is the KMS API's (test_it_takes_every_post_to_root_for_the_api)
        for label, headers in HEADERS.items():
            response = send(client, method, url, headers, world["form"])
            assert_sent_to(response, target, f"{method} {url} {label} {headers}")
    assert snapshot() == before, f"{name}: a refused request changed rows"


def test_it_opens_only_the_views_that_say_so() -> None:
    open_views = {name for name, p in PATTERNS.items() if not getattr(p.callback, "login_required", True)}
    password_only_views = {
        name
        for name, p in PATTERNS.items()
        if getattr(p.callback, "login_required", True) and not getattr(p.callback, "mfa_required", True)
    }
    assert open_views == OPEN_VIEWS
    assert password_only_views == PASSWORD_ONLY_VIEWS
    assert len(GATED) > 50  # the matrix below covers the dashboard, not an empty list


@pytest.mark.parametrize("name", GATED)
def test_it_sends_a_password_only_session_to_verify_and_changes_nothing(
    name: str, admin: DashboardUser, world: dict[str, Any]
) -> None:
    run_matrix(password_only(admin), name, world, "/mfa/verify/")


@pytest.mark.parametrize("name", GATED)
def test_it_sends_an_anonymous_visitor_to_sign_in_and_changes_nothing(name: str, world: dict[str, Any]) -> None:
    run_matrix(Client(raise_request_exception=False), name, world, "/login/")


def test_it_sends_a_session_without_a_device_to_enrol(make_dashboard_user: Callable[..., DashboardUser]) -> None:
    newbie = make_dashboard_user("newbie", *ALL_ROLES, enrol=False)
    client = Client(raise_request_exception=False)
    client.post("/login/", {"username": newbie.username, "password": newbie.password, "next": "/"})
    for label, headers in HEADERS.items():
        response = send(client, "POST", "/keys/new/", headers, {"description": "x"})
        assert_sent_to(response, "/mfa/enroll/", f"POST /keys/new/ {label} {headers}")
    assert not Key.objects.filter(description="x").exists()


@pytest.mark.parametrize("who", ["password-only", "anonymous"])
def test_it_takes_every_post_to_root_for_the_api(who: str, admin: DashboardUser, world: dict[str, Any]) -> None:
    client = password_only(admin) if who == "password-only" else Client(raise_request_exception=False)
    before = snapshot()
    first_event = AuditEvent.objects.latest("id").id
    for headers in HEADERS.values():
        response = client.post("/", world["form"], **headers)
        # The API's refusal of an unsigned call, not the dashboard: no cookie opens it.
        assert response.status_code == 403
        assert response["Content-Type"] == "application/x-amz-json-1.1"
        assert json.loads(response.content)["__type"] == "MissingAuthenticationTokenException"
    after = snapshot()
    new_events = AuditEvent.objects.filter(id__gt=first_event)
    assert {e.error_code for e in new_events} == {"MissingAuthenticationTokenException"}
    # Refused as nobody: the session's user is not the API's caller.
    assert all(e.user_identity["type"] == "Unknown" and e.user_identity["arn"] == "" for e in new_events)
    assert {k: v for k, v in after.items() if k != "audit.AuditEvent"} == {
        k: v for k, v in before.items() if k != "audit.AuditEvent"
    }


@pytest.mark.parametrize("name", sorted(n for n in OPEN_VIEWS if ":api_" in n))
def test_it_leaves_the_rest_api_to_its_signature(name: str, admin: DashboardUser, world: dict[str, Any]) -> None:
    """A session cookie is nothing to the REST API: unsigned, every call is refused, in JSON."""
    client = password_only(admin)
    url = url_of(name, world["args"])
    before = snapshot()
    for method in ("GET", "POST"):
        for label, headers in HEADERS.items():
            response = client.generic(method, url, json.dumps({"KeyId": world["args"]["key_id"]}), **headers)
            what = f"{method} {url} {label}"
            assert response.status_code in (403, 405), (what, response.status_code)
            assert response["Content-Type"] == "application/json", what
            assert json.loads(response.content)["__type"] in (
                "MissingAuthenticationTokenException",
                "UnknownOperationException",
            ), what
    after = snapshot()
    assert {e.error_code for e in AuditEvent.objects.filter(id__gt=before["audit.AuditEvent"][-1]["id"])} == {
        "MissingAuthenticationTokenException"
    }
    assert {k: v for k, v in after.items() if k != "audit.AuditEvent"} == {
        k: v for k, v in before.items() if k != "audit.AuditEvent"
    }


@pytest.mark.parametrize("path", ["/nowhere/", "/keys/x/nowhere/", "/api/v1/nowhere"])
@pytest.mark.parametrize("headers", list(HEADERS.values()), ids=list(HEADERS))
def test_it_shows_nothing_at_an_unknown_url(
    path: str, headers: dict[str, str], admin: DashboardUser, world: dict[str, Any]
) -> None:
    for client in (password_only(admin), Client(raise_request_exception=False)):
        for method in ("GET", "POST"):
            response = send(client, method, path, headers, world["form"])
            assert response.status_code == 404
            body = response.content.decode()
            assert admin.username not in body and world["args"]["key_id"] not in body


# --- the second lock: caller_from_request ------------------------------------------------------


def dashboard_request(user: Any, *, verified: bool) -> Any:
    request = RequestFactory().post("/keys/")
    request.user = user
    # As django_otp's middleware does: the device the session verified with, if any.
    user.otp_device = object() if verified else None
    user.is_verified = functools.partial(is_verified, user)
    return request


def test_it_builds_no_caller_for_a_password_only_user(admin: DashboardUser) -> None:
    from django.contrib.auth.models import AnonymousUser

    from policies.callers import caller_from_request

    with pytest.raises(PermissionDenied):
        caller_from_request(dashboard_request(admin.user, verified=False))
    with pytest.raises(PermissionDenied):
        caller_from_request(dashboard_request(AnonymousUser(), verified=False))
    caller = caller_from_request(dashboard_request(admin.user, verified=True))
    assert caller.principal_arn == admin.principal.arn and caller.mfa_present and caller.origin == "dashboard"


@pytest.mark.parametrize(
    "name", ["keys:key_disable", "keys:key_schedule_deletion", "policies:access_key_create", "keys:key_create"]
)
def test_it_refuses_a_password_only_session_even_without_the_gate(
    name: str, admin: DashboardUser, world: dict[str, Any], settings: Any
) -> None:
    """With the gate middleware gone, the views still refuse: the second lock holds."""
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith(".DashboardAccessMiddleware")]
    client = password_only(admin)
    before = snapshot()
    for headers in HEADERS.values():
        response = client.post(url_of(name, world["args"]), world["form"], **headers)
        assert response.status_code == 403
    assert snapshot() == before
    assert Principal.objects.filter(user=admin.user).exists()
