"""Single sign-on's service and pages, without a browser: claims in, users, roles and sessions out.

The browser tests against a real provider are in tests/e2e/test_sso.py;
these cover the decisions one by one.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY

from audit.models import AuditEvent
from kmsweb.lib.errors import AlreadyExists, ValidationError
from policies import services
from policies.models import OidcIdentity, Principal, ProviderMfaDevice
from policies.services.sso import SsoRefused

pytestmark = pytest.mark.django_db
ISSUER = "https://idp.example.org"


@pytest.fixture(autouse=True)
def sso_settings(settings: Any) -> None:
    settings.KMSWEB_OIDC_ISSUER = ISSUER
    settings.KMSWEB_OIDC_CLIENT_ID = "kmsweb"
    settings.KMSWEB_OIDC_CLIENT_SECRET = "not-used-here"
    settings.KMSWEB_OIDC_GROUPS_CLAIM = "groups"
    settings.KMSWEB_OIDC_GROUP_ROLES = {"kms-admins": ("key-admin", "viewer"), "auditors": ("auditor",)}
    settings.KMSWEB_OIDC_MFA_AMR = ["mfa", "hwk"]
    settings.KMSWEB_OIDC_MFA_ACR = ["urn:example:mfa"]


def claims(sub: str = "sub-1", username: str = "carol", **extra: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "sub": sub, "preferred_username": username, "groups": ["kms-admins"], **extra}


def logins() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_name="ConsoleLogin").order_by("id"))


def test_it_provisions_a_user_with_the_mapped_roles_and_one_sign_in_event() -> None:
    result = services.oidc_sign_in(claims=claims(email="carol@example.org", amr=["pwd", "hwk"]), source_ip="10.0.0.1")
    user = result.user
    assert result.roles == ("key-admin", "viewer") and result.mfa_device is not None
    assert sorted(user.groups.values_list("name", flat=True)) == ["key-admin", "viewer"]
    assert user.email == "carol@example.org" and not user.has_usable_password()
    assert Principal.objects.get(user=user).name == "carol"
    [event] = logins()
    assert event.error_code == "" and event.event_source == "signin.amazonaws.com"
    assert event.additional_event_data["MFAUsed"] == "Yes" and event.additional_event_data["Provisioned"] is True
    assert event.source_ip == "10.0.0.1"


def test_it_reevaluates_roles_from_the_groups_claim_at_every_sign_in() -> None:
    services.oidc_sign_in(claims=claims())
    user = services.oidc_sign_in(claims=claims(groups=["auditors", "unmapped"])).user
    assert list(user.groups.values_list("name", flat=True)) == ["auditor"]
    assert OidcIdentity.objects.get(user=user).groups == ["auditors", "unmapped"]
    assert get_user_model().objects.count() == 1


@pytest.mark.parametrize(
    ("extra", "mfa"),
    [
        ({"amr": ["pwd"]}, False),
        ({}, False),
        ({"amr": "mfa"}, True),
        ({"amr": ["pwd", "mfa"]}, True),
        ({"acr": "urn:example:mfa"}, True),
        ({"acr": "urn:example:pwd"}, False),
        ({"amr": [{"mfa": 1}]}, False),
    ],
)
def test_it_counts_the_providers_mfa_only_when_amr_or_acr_says_so(extra: dict[str, Any], mfa: bool) -> None:
    result = services.oidc_sign_in(claims=claims(**extra))
    assert (result.mfa_device is not None) is mfa
    assert ProviderMfaDevice.objects.get(user=result.user).confirmed is mfa


def test_it_refuses_and_deactivates_a_user_left_in_no_mapped_group() -> None:
    user = services.oidc_sign_in(claims=claims(amr=["mfa"])).user
    with pytest.raises(SsoRefused):
        services.oidc_sign_in(claims=claims(groups=["staff"], amr=["mfa"]))
    user.refresh_from_db()
    assert not user.is_active and not user.groups.exists()
    assert not ProviderMfaDevice.objects.get(user=user).confirmed
    assert OidcIdentity.objects.get(user=user).suspended_for_groups
    refused = logins()[-1]
    assert refused.error_code == "AccessDeniedException" and refused.additional_event_data["Groups"] == ["staff"]
    # A mapped group again: back in.
    assert services.oidc_sign_in(claims=claims(groups=["auditors"])).user.is_active


def test_it_provisions_nobody_for_a_first_sign_in_without_a_mapped_group() -> None:
    with pytest.raises(SsoRefused):
        services.oidc_sign_in(claims=claims(groups=[]))
    assert not get_user_model().objects.exists() and not Principal.objects.exists()
    assert logins()[-1].error_code == "AccessDeniedException"


def test_it_keeps_out_a_user_an_administrator_deactivated() -> None:
    user = services.oidc_sign_in(claims=claims()).user
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    with pytest.raises(SsoRefused, match="deactivated by an administrator"):
        services.oidc_sign_in(claims=claims())
    user.refresh_from_db()
    assert not user.is_active


def test_it_never_takes_over_a_local_user_of_the_same_name(make_dashboard_user: Any) -> None:
    local = make_dashboard_user("carol", "viewer")
    before = Principal.objects.count()
    with pytest.raises(AlreadyExists):
        services.oidc_sign_in(claims=claims(username=local.username))
    assert not OidcIdentity.objects.exists() and Principal.objects.count() == before
    assert logins()[-1].error_code == "AlreadyExistsException"


def test_it_refuses_a_name_kmsweb_cannot_use_and_creates_nothing() -> None:
    with pytest.raises(ValidationError):
        services.oidc_sign_in(claims=claims(username="carol smith/../x"))
    assert not get_user_model().objects.exists() and not Principal.objects.exists()


def test_it_matches_users_by_subject_not_by_name() -> None:
    first = services.oidc_sign_in(claims=claims(sub="a", username="dave")).user
    renamed = services.oidc_sign_in(claims=claims(sub="a", username="dave2")).user
    assert renamed.pk == first.pk and renamed.username == "dave"
    with pytest.raises(AlreadyExists):
        services.oidc_sign_in(claims=claims(sub="b", username="dave"))


def test_the_provider_mfa_device_accepts_no_code() -> None:
    device = services.oidc_sign_in(claims=claims(amr=["mfa"])).mfa_device
    assert device is not None
    assert device.verify_token("000000") is False and device.verify_is_allowed()[0] is False


def session_of(user: Any, device: ProviderMfaDevice) -> Client:
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


def test_a_provider_mfa_session_opens_the_dashboard_until_the_user_loses_every_group() -> None:
    result = services.oidc_sign_in(claims=claims(amr=["mfa"]))
    assert result.mfa_device is not None
    client = session_of(result.user, result.mfa_device)
    assert client.get("/keys/").status_code == 200
    with pytest.raises(SsoRefused):
        services.oidc_sign_in(claims=claims(groups=[], amr=["mfa"]))
    response = client.get("/keys/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_later_sign_in_without_provider_mfa_unverifies_earlier_sessions() -> None:
    result = services.oidc_sign_in(claims=claims(amr=["mfa"]))
    assert result.mfa_device is not None
    client = session_of(result.user, result.mfa_device)
    services.oidc_sign_in(claims=claims(amr=["pwd"]))
    response = client.get("/keys/")
    assert response.status_code == 302 and response["Location"].startswith("/mfa/enroll/")


def test_it_hides_single_sign_on_when_no_issuer_is_set(settings: Any) -> None:
    settings.KMSWEB_OIDC_ISSUER = ""
    assert b"sso-login" not in Client().get("/login/").content
    assert Client().get("/login/sso/").status_code == 404
    assert Client().get("/login/sso/callback/?code=x&state=y").status_code == 404


def test_it_refuses_passwords_when_local_sign_in_is_switched_off(settings: Any, make_dashboard_user: Any) -> None:
    settings.KMSWEB_LOCAL_LOGIN = False
    local = make_dashboard_user("erin", "viewer")
    client = Client()
    page = client.get("/login/")
    assert b"sso-login" in page.content and b"id_password" not in page.content
    response = client.post("/login/", {"username": local.username, "password": local.password})
    assert response.status_code == 200 and b"switched off" in response.content
    assert "_auth_user_id" not in client.session


def test_it_refuses_a_callback_with_an_unknown_state_and_signs_nobody_in() -> None:
    client = Client()
    response = client.get("/login/sso/callback/?code=abc&state=forged")
    assert response.status_code == 400 and b"could not be verified" in response.content
    assert "_auth_user_id" not in client.session
    assert logins()[-1].additional_event_data["reason"].startswith("refused: ")


def test_it_gives_up_on_a_provider_that_never_answers(settings: Any) -> None:
    """A provider that accepts the connection and says nothing: an error page after the timeout, not a hung worker."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings.KMSWEB_OIDC_ISSUER = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings.KMSWEB_OIDC_TIMEOUT_SECONDS = 1
        started = time.monotonic()
        response = Client().get("/login/sso/")
        elapsed = time.monotonic() - started
    assert response.status_code == 503 and b"could not be reached" in response.content
    assert elapsed < 30
    assert logins()[-1].additional_event_data["reason"] == "provider unreachable: ReadTimeout"
