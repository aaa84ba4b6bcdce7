"""People pages and their services: administrators manage dashboard users.

Every change is audited (one event, refusals included), needs a verified
session, and is refused to anyone but an administrator, also when the
request is forged (POSTed straight at the URL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from kmsweb.lib.errors import AccessDenied, ValidationError
from policies import services
from policies.callers import caller_from_request
from policies.models import Principal, TotpDevice
from tests.dashboard_fixtures import DashboardUser

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(make_dashboard_user: Callable[..., DashboardUser]) -> DashboardUser:
    return make_dashboard_user("ada", "administrator")


@pytest.fixture
def target(make_dashboard_user: Callable[..., DashboardUser]) -> DashboardUser:
    return make_dashboard_user("tom", "viewer")


def caller_of(client: Client) -> Any:
    """The Caller the dashboard builds for this client's session."""
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.session = client.session
    from django.contrib.auth import get_user
    from django_otp.middleware import OTPMiddleware

    request.user = get_user(request)
    OTPMiddleware(lambda r: None)._verify_user_sync(request, request.user)
    return caller_from_request(request)


def events(name: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_name=name).order_by("id"))


def lock_out(username: str, settings: Any) -> None:
    AccessAttempt.objects.create(
        username=username,
        ip_address="127.0.0.1",
        user_agent="test",
        get_data="",
        post_data="",
        http_accept="*/*",
        path_info="/login/",
        failures_since_start=settings.AXES_FAILURE_LIMIT,
    )


# --- Services ----------------------------------------------------------------


def test_it_updates_name_email_and_roles_with_one_event(
    admin: DashboardUser, target: DashboardUser, signed_in: Any
) -> None:
    caller = caller_of(signed_in(admin))
    services.user_update(
        caller=caller, user=target.user, first_name="Tom", last_name="Tit", email="tom@example.org", roles=["auditor"]
    )
    target.user.refresh_from_db()
    assert (target.user.get_full_name(), target.user.email) == ("Tom Tit", "tom@example.org")
    assert list(target.user.groups.values_list("name", flat=True)) == ["auditor"]
    [event] = events("UpdateUser")
    assert event.error_code == "" and event.principal_arn == admin.arn
    assert event.request_parameters["roles"] == ["auditor"]


def test_it_refuses_a_non_administrator_and_records_the_refusal(
    target: DashboardUser, key_admin_user: DashboardUser, signed_in: Any
) -> None:
    caller = caller_of(signed_in(key_admin_user))
    for change in (
        lambda: services.user_update(caller=caller, user=target.user, first_name="x", last_name="", email="", roles=[]),
        lambda: services.user_set_active(caller=caller, user=target.user, active=False),
        lambda: services.user_totp_reset(caller=caller, user=target.user),
        lambda: services.user_unlock(caller=caller, user=target.user),
        lambda: services.user_create(
            caller=caller, username="eve", password="a-long-password-1", roles=["administrator"]
        ),
    ):
        with pytest.raises(AccessDenied):
            change()
    target.user.refresh_from_db()
    assert target.user.is_active and target.user.first_name == ""
    assert TotpDevice.objects.filter(user=target.user).exists()
    assert not get_user_model().objects.filter(username="eve").exists()
    refused = AuditEvent.objects.filter(error_code="AccessDeniedException", principal_arn=key_admin_user.arn)
    assert sorted(refused.values_list("event_name", flat=True)) == [
        "CreateUser",
        "DeactivateMFADevice",
        "DeactivateUser",
        "UnlockUser",
        "UpdateUser",
    ]


def test_it_refuses_a_caller_without_a_second_factor(
    admin: DashboardUser, target: DashboardUser, signed_in: Any
) -> None:
    caller = dataclasses.replace(caller_of(signed_in(admin)), mfa_present=False)
    with pytest.raises(AccessDenied, match="second factor"):
        services.user_set_active(caller=caller, user=target.user, active=False)
    target.user.refresh_from_db()
    assert target.user.is_active
    assert events("DeactivateUser")[-1].error_code == "AccessDeniedException"


def test_it_does_not_let_an_administrator_lock_themself_out(admin: DashboardUser, signed_in: Any) -> None:
    caller = caller_of(signed_in(admin))
    with pytest.raises(ValidationError):
        services.user_set_active(caller=caller, user=admin.user, active=False)
    with pytest.raises(ValidationError):
        services.user_update(caller=caller, user=admin.user, first_name="", last_name="", email="", roles=["viewer"])
    admin.user.refresh_from_db()
    assert admin.user.is_active and admin.user.groups.filter(name="administrator").exists()


def test_deactivating_a_user_ends_their_session_at_the_next_request(
    admin: DashboardUser, target: DashboardUser, signed_in: Any
) -> None:
    theirs = signed_in(target)
    assert theirs.get("/keys/").status_code == 200
    services.user_set_active(caller=caller_of(signed_in(admin)), user=target.user, active=False)
    response = theirs.get("/keys/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_resetting_totp_unverifies_their_sessions_and_asks_them_to_enrol(
    admin: DashboardUser, target: DashboardUser, signed_in: Any
) -> None:
    theirs = signed_in(target)
    removed = services.user_totp_reset(caller=caller_of(signed_in(admin)), user=target.user)
    assert removed == 1 and not TotpDevice.objects.filter(user=target.user).exists()
    response = theirs.get("/keys/")
    assert response.status_code == 302 and response["Location"].startswith("/mfa/enroll/")
    assert events("DeactivateMFADevice")[-1].response_elements == {"devicesRemoved": 1}


def test_unlocking_clears_the_lockout(
    admin: DashboardUser, target: DashboardUser, signed_in: Any, settings: Any
) -> None:
    lock_out(target.username, settings)
    client = Client()
    response = client.post("/login/", {"username": target.username, "password": target.password})
    assert b"Too many failed sign-ins" in response.content
    assert services.user_unlock(caller=caller_of(signed_in(admin)), user=target.user) >= 1
    response = client.post("/login/", {"username": target.username, "password": target.password})
    assert response.status_code == 302 and response["Location"].startswith("/mfa/verify/")
    assert events("UnlockUser")[-1].error_code == ""


# --- Pages -------------------------------------------------------------------


def test_the_people_page_shows_roles_last_sign_in_mfa_and_lockout(
    admin: DashboardUser, target: DashboardUser, signed_in: Any, settings: Any, django_assert_max_num_queries: Any
) -> None:
    lock_out(target.username, settings)
    client = signed_in(admin)
    with django_assert_max_num_queries(20):
        page = client.get("/people/").content.decode()
    assert "tom" in page and "viewer" in page and "locked out" in page and "TOTP" in page
    detail = client.get(f"/people/{target.user.pk}/").content.decode()
    assert "kmsweb-role/viewer" in detail and "kms:Describe*" in detail and 'id="person-unlock-form"' in detail
    assert timezone.now().strftime("%Y-%m-%d") in client.get("/people/").content.decode()


def test_an_administrator_adds_a_user_through_the_page(admin: DashboardUser, signed_in: Any) -> None:
    client = signed_in(admin)
    form = {"username": "nina", "first_name": "Nina", "email": "nina@example.org", "roles": ["auditor"]}
    response = client.post("/people/new/", {**form, "password": "a-long-password-1"})
    nina = get_user_model().objects.get(username="nina")
    assert response.status_code == 302 and response["Location"] == f"/people/{nina.pk}/"
    assert list(nina.groups.values_list("name", flat=True)) == ["auditor"] and nina.email == "nina@example.org"
    assert Principal.objects.filter(user=nina).exists()


@pytest.mark.parametrize(
    ("form", "field_error"),
    [
        ({"username": "ada", "password": "a-long-password-1"}, "already exists"),
        ({"username": "bad name!", "password": "a-long-password-1"}, "letters, digits"),
        ({"username": "nina", "password": "short"}, "too short"),
        ({"username": "nina", "password": "a-long-password-1", "email": "not-an-address"}, "valid email"),
    ],
)
def test_it_shows_create_errors_inline_and_keeps_the_input(
    admin: DashboardUser, signed_in: Any, form: dict[str, str], field_error: str
) -> None:
    client = signed_in(admin)
    before = get_user_model().objects.count()
    response = client.post("/people/new/", {"first_name": "Kept", **form})
    page = response.content.decode()
    assert response.status_code == 200 and field_error in page.lower().replace("e-mail", "email")
    assert 'value="Kept"' in page
    assert get_user_model().objects.count() == before


def test_it_shows_edit_errors_inline(admin: DashboardUser, signed_in: Any) -> None:
    client = signed_in(admin)
    response = client.post(f"/people/{admin.user.pk}/edit/", {"first_name": "Ada", "roles": ["viewer"]})
    assert response.status_code == 200 and "cannot remove your own administrator role" in response.content.decode()


FORGED = [
    ("/people/new/", {"username": "eve", "password": "a-long-password-1", "roles": ["administrator"]}),
    ("/people/{id}/edit/", {"first_name": "Pwned", "roles": ["administrator"]}),
    ("/people/{id}/active/", {"active": "false"}),
    ("/people/{id}/totp-reset/", {}),
    ("/people/{id}/unlock/", {}),
    ("/principals/new/", {"name": "backdoor", "type": "role"}),
]


@pytest.mark.parametrize(("url", "form"), FORGED)
def test_it_refuses_forged_posts_by_non_administrators(
    url: str, form: dict[str, Any], target: DashboardUser, key_admin_user: DashboardUser, signed_in: Any, settings: Any
) -> None:
    lock_out(target.username, settings)
    client = signed_in(key_admin_user)
    before_events = AuditEvent.objects.latest("id").id
    response = client.post(url.format(id=target.user.pk), form)
    assert response.status_code in (302, 403)
    target.user.refresh_from_db()
    assert target.user.is_active and target.user.first_name == ""
    assert list(target.user.groups.values_list("name", flat=True)) == ["viewer"]
    assert TotpDevice.objects.filter(user=target.user).exists() and AccessAttempt.objects.exists()
    assert not get_user_model().objects.filter(username="eve").exists()
    assert not Principal.objects.filter(name="backdoor").exists()
    refusals = AuditEvent.objects.filter(id__gt=before_events, error_code="AccessDeniedException")
    assert refusals.count() == 1 and refusals.get().principal_arn == key_admin_user.arn


def test_non_administrators_cannot_see_people(
    key_admin_user: DashboardUser, target: DashboardUser, signed_in: Any
) -> None:
    client = signed_in(key_admin_user)
    for url in ("/people/", f"/people/{target.user.pk}/"):
        response = client.get(url)
        assert response.status_code == 302 and "tom" not in response.content.decode()
    assert b'id="nav-people"' not in client.get("/keys/").content


def test_an_administrator_creates_an_api_principal_and_its_access_key(admin: DashboardUser, signed_in: Any) -> None:
    client = signed_in(admin)
    response = client.post("/principals/new/", {"name": "ci-deployer", "type": "role"})
    principal = Principal.objects.get(name="ci-deployer")
    assert principal.type == "role" and response["Location"] == f"/principals/{principal.pk}/"
    page = client.post(f"/principals/{principal.pk}/access-keys/")
    assert b'id="new-secret"' in page.content and page["Cache-Control"] == "no-store"
    again = client.post("/principals/new/", {"name": "ci-deployer", "type": "role"})
    assert again.status_code == 200 and b"already exists" in again.content
