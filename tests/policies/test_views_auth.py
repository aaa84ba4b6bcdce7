"""Signing in to the dashboard: password, TOTP (enrol or verify), lockout, expiry, sign-out.

Codes are computed from the enrolled secret with the RFC 6238 helper in
``tests/dashboard_fixtures.py``; the clock is moved with time-machine.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from audit.models import AuditEvent
from policies.models import Principal, TotpDevice
from tests.dashboard_fixtures import (
    PASSWORD,
    DashboardUser,
    current_step,
    dashboard_login,
    totp_code,
)
from tests.factories import AccountFactory, PrincipalFactory

T0 = datetime(2026, 5, 4, 10, 0, 5, tzinfo=UTC)  # five seconds into a 30-second step
WRONG_PASSWORD = "not-the-password-1"


def html(response: Any) -> str:
    return response.content.decode()


def post_password(client: Client, username: str, password: str, **extra: Any) -> Any:
    return client.post("/login/", {"username": username, "password": password, "next": "/"}, **extra)


def console_logins(**filters: Any) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_name="ConsoleLogin", **filters).order_by("id"))


@pytest.fixture
def enrolled(viewer_user: DashboardUser) -> DashboardUser:
    return viewer_user


@pytest.fixture
def unenrolled(make_dashboard_user: Callable[..., DashboardUser]) -> DashboardUser:
    return make_dashboard_user("newbie", "viewer", enrol=False)


# --- the helper itself, against RFC 6238's own test vector ------------------------------------


def test_it_computes_rfc_6238_codes() -> None:
    # RFC 6238 appendix B, SHA-1 seed "12345678901234567890": 94287082 at T=59 (8 digits).
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp_code(secret, at=59) == "287082"
    assert totp_code(secret, at=1111111109) == "081804"
    assert totp_code(secret, at=2000000000) == "279037"


# --- anonymous -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/keys/", "/keys/new/", "/usage/", "/usage/data/"])
def test_it_sends_an_anonymous_visitor_to_sign_in(path: str, db: None) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_it_sends_an_anonymous_visitor_from_the_mfa_pages_to_sign_in(db: None) -> None:
    for path in ("/mfa/verify/", "/mfa/enroll/"):
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"] == f"/login/?next={path}"


def test_it_leaves_the_aws_api_to_sigv4(db: None) -> None:
    # POST / with X-Amz-Target is the KMS API: no redirect to the login page.
    response = Client().post(
        "/", data="{}", content_type="application/x-amz-json-1.1", HTTP_X_AMZ_TARGET="TrentService.ListKeys"
    )
    assert response.status_code in (400, 403)
    assert json.loads(response.content)["__type"] == "MissingAuthenticationTokenException"


def test_it_shows_the_sign_in_form(db: None) -> None:
    response = Client().get("/login/?next=/keys/")
    body = html(response)
    assert response.status_code == 200
    assert 'name="username"' in body and 'name="password"' in body
    assert 'name="next" value="/keys/"' in body
    assert "no-cache" in response["Cache-Control"]


# --- the password step --------------------------------------------------------------------


def test_it_refuses_a_wrong_password_inline_and_audits_it(enrolled: DashboardUser) -> None:
    client = Client()

    response = post_password(client, enrolled.username, WRONG_PASSWORD)

    assert response.status_code == 200
    body = html(response)
    assert "Please enter a correct username and password." in body
    assert f'name="username" value="{enrolled.username}"' in body  # what was typed stays
    assert WRONG_PASSWORD not in body  # except the password
    assert "_auth_user_id" not in client.session
    [event] = console_logins()
    assert event.error_code == "AccessDeniedException"
    assert event.event_source == "signin.amazonaws.com"
    assert event.origin == "dashboard"
    assert event.response_elements == {"consoleLogin": "Failure"}
    assert event.request_parameters == {"userName": enrolled.username}
    assert event.additional_event_data == {"MFAUsed": "No", "step": "password"}
    assert event.source_ip == "127.0.0.1"
    assert WRONG_PASSWORD not in str(AuditEvent.objects.values())


def test_it_audits_an_unknown_username(db: None) -> None:
    response = post_password(Client(), "nobody", WRONG_PASSWORD)
    assert "Please enter a correct username and password." in html(response)
    [event] = console_logins()
    assert event.error_code and event.request_parameters == {"userName": "nobody"}


def test_it_asks_an_enrolled_user_for_a_code(enrolled: DashboardUser) -> None:
    client = Client()

    response = post_password(client, enrolled.username, enrolled.password)

    assert response.status_code == 302 and response["Location"] == "/mfa/verify/?next=/"
    page = client.get(response["Location"])
    assert "Two-step verification" in html(page)
    # A correct password is half a sign-in: no ConsoleLogin until the code.
    assert console_logins() == []
    [event] = AuditEvent.objects.filter(event_name="CredentialVerification")
    assert event.error_code == "" and event.additional_event_data["step"] == "password"
    assert event.principal_arn == enrolled.arn
    # Password alone opens nothing.
    assert client.get("/keys/")["Location"] == "/mfa/verify/?next=/keys/"


def test_it_refuses_an_unsafe_next_url(enrolled: DashboardUser) -> None:
    client = Client()
    client.post("/login/", {"username": enrolled.username, "password": enrolled.password, "next": "https://evil.test/"})
    response = client.post("/mfa/verify/", {"token": enrolled.code(), "next": "https://evil.test/"})
    assert response.status_code == 302 and response["Location"] == "/"


# --- enrolment ----------------------------------------------------------------------------


def enrolment_secret(body: str) -> str:
    match = re.search(r'<code id="mfa-secret">([A-Z2-7]+)</code>', body)
    assert match, "the page shows the secret for manual entry"
    return match.group(1)


def test_it_enrols_a_user_without_a_device(unenrolled: DashboardUser) -> None:
    client = Client()

    response = post_password(client, unenrolled.username, unenrolled.password)
    assert response["Location"] == "/mfa/enroll/?next=/"
    page = html(client.get(response["Location"]))
    assert '<img src="data:image/svg+xml;base64,' in page
    secret = enrolment_secret(page)
    assert len(base64.b32decode(secret + "=" * (-len(secret) % 8))) == 20
    # Reloading the page shows the same pending secret (no new device each time).
    assert enrolment_secret(html(client.get("/mfa/enroll/?next=/"))) == secret
    assert TotpDevice.objects.filter(user=unenrolled.user).count() == 1

    response = client.post("/mfa/enroll/", {"token": totp_code(secret), "next": "/"})

    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert TotpDevice.objects.get(user=unenrolled.user).confirmed
    enable = AuditEvent.objects.get(event_name="EnableMFADevice", error_code="")
    assert enable.additional_event_data == {"step": "enrol"} and enable.principal_arn == unenrolled.arn
    assert secret not in str(AuditEvent.objects.values())


def test_it_refuses_a_wrong_first_code_inline(unenrolled: DashboardUser) -> None:
    client = Client()
    post_password(client, unenrolled.username, unenrolled.password)
    secret = enrolment_secret(html(client.get("/mfa/enroll/")))
    wrong = f"{(int(totp_code(secret)) + 1) % 1_000_000:06d}"

    response = client.post("/mfa/enroll/", {"token": wrong, "next": "/"})

    assert response.status_code == 200
    body = html(response)
    assert "That code is not valid, or it was already used." in body
    assert f'value="{wrong}"' in body
    assert enrolment_secret(body) == secret
    assert not TotpDevice.objects.get(user=unenrolled.user).confirmed
    assert AuditEvent.objects.get(event_name="EnableMFADevice").error_code == "AccessDeniedException"
    assert client.get("/")["Location"] == "/mfa/enroll/?next=/"


@pytest.mark.parametrize("token", ["12345", "1234567", "abcdef", "١٢٣٤٥٦"])
def test_it_refuses_a_malformed_code_inline(token: str, enrolled: DashboardUser) -> None:
    client = Client()
    post_password(client, enrolled.username, enrolled.password)
    response = client.post("/mfa/verify/", {"token": token})
    assert response.status_code == 200
    assert re.search(r"six digits|at least 6|at most 6", html(response))
    assert TotpDevice.objects.get(user=enrolled.user).throttling_failure_count == 0


def test_it_sends_an_enrolled_user_from_the_enrol_page_to_verify(enrolled: DashboardUser) -> None:
    client = Client()
    post_password(client, enrolled.username, enrolled.password)
    assert client.get("/mfa/enroll/")["Location"] == "/mfa/verify/"


# --- the code step -------------------------------------------------------------------------


def test_it_signs_in_with_password_and_code(enrolled: DashboardUser) -> None:
    client = Client()
    dashboard_login(client, enrolled, next="/keys/")

    assert client.get("/keys/").status_code == 200
    # One ConsoleLogin per sign-in (the password step is a CredentialVerification).
    success = console_logins(error_code="")
    assert [e.additional_event_data for e in success] == [{"MFAUsed": "Yes", "step": "mfa"}]
    assert success[0].response_elements == {"consoleLogin": "Success"}
    # Once verified, the MFA page sends the user on.
    assert client.get("/mfa/verify/?next=/usage/")["Location"] == "/usage/"


def test_it_refuses_a_wrong_code_inline_and_audits_it(enrolled: DashboardUser) -> None:
    client = Client()
    post_password(client, enrolled.username, enrolled.password)
    wrong = f"{(int(enrolled.code()) + 1) % 1_000_000:06d}"

    response = client.post("/mfa/verify/", {"token": wrong, "next": "/"})

    assert response.status_code == 200
    assert "That code is not valid, or it was already used." in html(response)
    assert f'value="{wrong}"' in html(response)
    failure = console_logins(error_code="AccessDeniedException")[-1]
    assert failure.additional_event_data == {"MFAUsed": "Yes", "step": "mfa"}
    assert failure.principal_arn == enrolled.arn
    assert client.get("/")["Location"] == "/mfa/verify/?next=/"


def test_it_refuses_a_replayed_code(enrolled: DashboardUser) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        code = totp_code(enrolled.secret_b32)
        first = Client()
        post_password(first, enrolled.username, enrolled.password)
        assert first.post("/mfa/verify/", {"token": code})["Location"] == "/"

        second = Client()
        post_password(second, enrolled.username, enrolled.password)
        response = second.post("/mfa/verify/", {"token": code})

        assert response.status_code == 200
        assert "already used" in html(response)
        assert second.get("/").status_code == 302
        # The next step's code (the server accepts one step of drift) is new, so it
        # works once the one-second throttle after the failure has passed.
        clock.shift(1)
        later = totp_code(enrolled.secret_b32, step=current_step() + 1)
        assert second.post("/mfa/verify/", {"token": later})["Location"] == "/"


def test_it_accepts_one_step_of_clock_drift_and_no_more(enrolled: DashboardUser) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        step = current_step()
        client = Client()
        post_password(client, enrolled.username, enrolled.password)
        too_old = totp_code(enrolled.secret_b32, step=step - 2)
        assert "not valid" in html(client.post("/mfa/verify/", {"token": too_old}))
        clock.shift(2)  # past the one-second throttle
        previous = totp_code(enrolled.secret_b32, step=step - 1)
        assert client.post("/mfa/verify/", {"token": previous})["Location"] == "/"


def test_it_throttles_codes_after_failures(enrolled: DashboardUser) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        client = Client()
        post_password(client, enrolled.username, enrolled.password)
        right = totp_code(enrolled.secret_b32)
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"

        client.post("/mfa/verify/", {"token": wrong})
        # Even the right code waits one second after a failure…
        assert "Too many wrong codes" in html(client.post("/mfa/verify/", {"token": right}))
        clock.shift(1.5)
        assert "not valid" in html(client.post("/mfa/verify/", {"token": wrong}))
        # …two seconds after a second one (and the refused attempts do not reset it).
        clock.shift(1.5)
        assert "Too many wrong codes" in html(client.post("/mfa/verify/", {"token": right}))
        device = TotpDevice.objects.get(user=enrolled.user)
        assert device.throttling_failure_count == 2
        clock.shift(1)
        assert client.post("/mfa/verify/", {"token": right})["Location"] == "/"
        assert TotpDevice.objects.get(user=enrolled.user).throttling_failure_count == 0
    assert len(console_logins(error_code="AccessDeniedException")) == 4


# --- django-axes --------------------------------------------------------------------------


def test_it_locks_out_after_five_failed_passwords(enrolled: DashboardUser) -> None:
    assert settings.AXES_FAILURE_LIMIT == 5
    client = Client()
    for _ in range(4):
        response = post_password(client, enrolled.username, WRONG_PASSWORD)
        assert response.status_code == 200 and "Please enter a correct" in html(response)

    fifth = post_password(client, enrolled.username, WRONG_PASSWORD)
    assert fifth.status_code == 429
    assert "Too many failed sign-ins" in html(fifth)

    # Now even the right password is refused, and nothing is signed in.
    locked = post_password(client, enrolled.username, enrolled.password)
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in html(locked)
    assert "_auth_user_id" not in client.session
    assert client.get("/")["Location"] == "/login/?next=/"
    assert len(console_logins(error_code="AccessDeniedException")) >= 6
    assert not console_logins(error_code="")


def test_it_locks_out_only_that_user_from_that_address(
    enrolled: DashboardUser,
    make_dashboard_user: Callable[..., DashboardUser],
) -> None:
    other = make_dashboard_user("other", "viewer")
    client = Client()
    for _ in range(5):
        post_password(client, enrolled.username, WRONG_PASSWORD)

    assert post_password(Client(), other.username, other.password).status_code == 302
    assert post_password(Client(), enrolled.username, enrolled.password, REMOTE_ADDR="10.9.8.7").status_code == 302
    assert post_password(Client(), enrolled.username, enrolled.password).status_code == 429


def test_it_lifts_the_lockout_after_the_cool_off(enrolled: DashboardUser) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(5):
            post_password(Client(), enrolled.username, WRONG_PASSWORD)
        assert post_password(Client(), enrolled.username, enrolled.password).status_code == 429
        clock.shift(settings.AXES_COOLOFF_TIME + timedelta(seconds=1))
        assert post_password(Client(), enrolled.username, enrolled.password).status_code == 302


def test_it_forgets_earlier_failures_after_a_success(enrolled: DashboardUser) -> None:
    for _ in range(4):
        post_password(Client(), enrolled.username, WRONG_PASSWORD)
    assert post_password(Client(), enrolled.username, enrolled.password).status_code == 302
    for _ in range(4):
        post_password(Client(), enrolled.username, WRONG_PASSWORD)
    assert post_password(Client(), enrolled.username, enrolled.password).status_code == 302


# --- session expiry and sign-out -------------------------------------------------------------


def test_it_ends_an_idle_session(enrolled: DashboardUser) -> None:
    age = settings.SESSION_COOKIE_AGE
    with time_machine.travel(T0, tick=False) as clock:
        client = Client()
        dashboard_login(client, enrolled)
        # Activity keeps it alive (the session is saved on every request)…
        clock.shift(age // 2)
        assert client.get("/keys/").status_code == 200
        clock.shift(age // 2 + age // 4)
        assert client.get("/keys/").status_code == 200
        # …idleness ends it.
        clock.shift(age + 1)
        response = client.get("/keys/")
        assert response.status_code == 302 and response["Location"] == "/login/?next=/keys/&expired=1"
        htmx = client.get("/keys/", HTTP_HX_REQUEST="true")
        assert htmx.status_code == 204 and htmx["HX-Redirect"] == "/login/?next=/keys/&expired=1"


def test_it_tells_the_user_their_session_expired(enrolled: DashboardUser) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        client = Client()
        dashboard_login(client, enrolled)
        clock.shift(settings.SESSION_COOKIE_AGE + 1)
        page = client.get("/keys/", follow=True)
    assert re.search(r"session (has )?expired|signed out after", html(page), re.IGNORECASE)


def test_it_signs_out_on_post(enrolled: DashboardUser) -> None:
    client = Client()
    dashboard_login(client, enrolled)
    old_session = client.cookies["sessionid"].value

    assert client.get("/logout/").status_code == 405  # a link cannot sign anyone out
    response = client.post("/logout/")

    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/")["Location"] == "/login/?next=/"
    # The old session cookie is dead, not just forgotten by this client.
    replay = Client()
    replay.cookies["sessionid"] = old_session
    assert replay.get("/")["Location"] == "/login/?next=/"


def test_it_needs_a_csrf_token_to_sign_out(enrolled: DashboardUser) -> None:
    relaxed = Client()
    dashboard_login(relaxed, enrolled)
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = relaxed.cookies
    assert strict.post("/logout/").status_code == 403
    assert strict.get("/").status_code == 200


# --- secrets at rest ------------------------------------------------------------------------


def test_it_stores_no_totp_secret_in_plaintext(
    enrolled: DashboardUser, unenrolled: DashboardUser, tmp_path: Path
) -> None:
    client = Client()
    post_password(client, unenrolled.username, unenrolled.password)
    pending = enrolment_secret(html(client.get("/mfa/enroll/")))
    client.post("/mfa/enroll/", {"token": totp_code(pending)})
    dashboard_login(Client(), enrolled)

    out = StringIO()
    call_command("dumpdata", stdout=out)
    dump = out.getvalue()

    assert "policies.totpdevice" in dump  # the devices are in the dump…
    for secret_b32 in (enrolled.secret_b32, pending):
        raw = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
        # …but not their secrets, in any spelling.
        for spelling in (
            secret_b32,
            secret_b32.lower(),
            raw.hex(),
            raw.hex().upper(),
            base64.b64encode(raw).decode(),
            base64.b64encode(raw).decode().rstrip("="),
        ):
            assert spelling not in dump
        for device in TotpDevice.objects.all():
            assert raw not in bytes(device.secret_ciphertext)


# --- management commands --------------------------------------------------------------------


def test_add_totp_device_prints_an_otpauth_uri_that_signs_in(unenrolled: DashboardUser) -> None:
    out = StringIO()
    call_command("add_totp_device", unenrolled.username, stdout=out)

    uri = out.getvalue().strip()
    parsed = urlparse(uri)
    assert parsed.scheme == "otpauth" and parsed.netloc == "totp"
    assert unquote(parsed.path) == f"/kmsweb:{unenrolled.username}"
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    assert query["issuer"] == "kmsweb"
    assert (query["algorithm"], query["digits"], query["period"]) == ("SHA1", "6", "30")
    unenrolled.secret_b32 = query["secret"]
    client = Client()
    dashboard_login(client, unenrolled)
    assert client.get("/").status_code == 200


def test_add_totp_device_refuses_a_second_device_unless_replacing(enrolled: DashboardUser) -> None:
    with pytest.raises(CommandError, match="already has an authenticator"):
        call_command("add_totp_device", enrolled.username, stdout=StringIO())
    out = StringIO()
    call_command("add_totp_device", enrolled.username, "--replace", stdout=out)
    new_secret = parse_qs(urlparse(out.getvalue().strip()).query)["secret"][0]
    assert new_secret != enrolled.secret_b32
    assert TotpDevice.objects.filter(user=enrolled.user).count() == 1
    # The old secret no longer signs in.
    client = Client()
    post_password(client, enrolled.username, enrolled.password)
    assert "not valid" in html(client.post("/mfa/verify/", {"token": totp_code(enrolled.secret_b32)}))


def test_add_totp_device_refuses_an_unknown_user(db: None) -> None:
    with pytest.raises(CommandError, match="No user"):
        call_command("add_totp_device", "ghost", stdout=StringIO())


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


def test_create_user_links_a_principal_and_groups(password_file: Path, settings: Any, db: None) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    out = StringIO()
    call_command(
        "create_user",
        "carol",
        "--role",
        "key-admin",
        "--role",
        "auditor",
        "--password-file",
        str(password_file),
        stdout=out,
    )

    assert "created carol" in out.getvalue()
    user = get_user_model().objects.get(username="carol")
    assert sorted(user.groups.values_list("name", flat=True)) == ["auditor", "key-admin"]
    principal = Principal.objects.get(user=user)
    assert principal.arn == f"arn:aws:iam::{settings.KMSWEB_ACCOUNT_ID}:user/carol"
    assert user.check_password(PASSWORD)
    # The new user signs in and is sent to enrol a second factor.
    response = post_password(Client(), "carol", PASSWORD)
    assert response["Location"] == "/mfa/enroll/?next=/"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dave", "--role", "root"], "invalid choice"),
        (["dave"], "--role"),
    ],
)
def test_create_user_refuses_bad_arguments(args: list[str], message: str, password_file: Path, db: None) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("create_user", *args, "--password-file", str(password_file), stdout=StringIO())
    assert not get_user_model().objects.filter(username="dave").exists()


def test_create_user_refuses_a_weak_password_or_a_taken_name(tmp_path: Path, db: None) -> None:
    weak = tmp_path / "weak"
    weak.write_text("password")
    with pytest.raises(CommandError, match="too short|too common"):
        call_command("create_user", "erin", "--role", "viewer", "--password-file", str(weak), stdout=StringIO())
    assert not get_user_model().objects.filter(username="erin").exists()
    assert not Principal.objects.filter(name="erin").exists()


def test_a_createsuperuser_user_gets_a_principal_at_first_sign_in(
    monkeypatch: pytest.MonkeyPatch, settings: Any, db: None
) -> None:

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    call_command("createsuperuser", "--noinput", "--username", "root", "--email", "root@example.com", stdout=StringIO())
    user = get_user_model().objects.get(username="root")
    assert not Principal.objects.filter(user=user).exists()

    client = Client()
    response = post_password(client, "root", PASSWORD)

    assert response["Location"] == "/mfa/enroll/?next=/"
    principal = Principal.objects.get(user=user)
    assert principal.arn == f"arn:aws:iam::{settings.KMSWEB_ACCOUNT_ID}:user/root"
    # The first sign-in names it too.
    assert AuditEvent.objects.filter(event_name="CredentialVerification").last().principal_arn == principal.arn
    secret = enrolment_secret(html(client.get("/mfa/enroll/")))
    assert client.post("/mfa/enroll/", {"token": totp_code(secret)})["Location"] == "/"
    # A superuser holds every role: the key administrator's actions are offered.
    assert 'id="keys-create"' in html(client.get("/keys/"))
    # The second sign-in reuses the principal.
    post_password(Client(), "root", PASSWORD)
    assert Principal.objects.filter(name="root").count() == 1


@pytest.mark.parametrize("username", ["taken", "x" * 70])
def test_it_refuses_inline_a_user_who_cannot_have_a_principal(username: str, settings: Any, db: None) -> None:
    """A principal of that name exists but is not linked, or the name does not fit a principal."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    account = AccountFactory(id=settings.KMSWEB_ACCOUNT_ID)
    PrincipalFactory(account=account, name="taken")
    get_user_model().objects.create_superuser(username, "ops@example.com", PASSWORD)
    client = Client()

    response = post_password(client, username, PASSWORD)

    assert response.status_code == 200
    assert "Ask an administrator to link your user to a principal." in html(response)
    assert "_auth_user_id" not in client.session
    assert client.get("/")["Location"] == "/login/?next=/"
    assert console_logins()[-1].error_code == "AccessDeniedException"
    assert Principal.objects.filter(user__username=username).count() == 0


def test_it_answers_a_nul_character_in_the_username_inline(db: None) -> None:
    # PostgreSQL refuses NUL in text and JSON: the failure must still be audited, not a 500.
    response = post_password(Client(), "ro\x00ot", WRONG_PASSWORD)
    assert response.status_code == 200
    assert "Null characters are not allowed." in html(response)
    [event] = console_logins()
    assert event.error_code == "AccessDeniedException"


def test_it_answers_an_empty_sign_in_inline(db: None) -> None:
    response = Client().post("/login/", {"username": "", "password": ""})
    assert response.status_code == 200
    assert html(response).count("This field is required.") == 2


def test_it_does_not_loop_when_a_signed_in_users_principal_is_unlinked(enrolled: DashboardUser) -> None:
    client = Client()
    dashboard_login(client, enrolled)
    Principal.objects.filter(user=enrolled.user).update(user=None)

    response = client.get("/")

    assert not (response.status_code == 302 and response["Location"] == "/")
    page = client.get(response["Location"])
    assert "no longer linked to a principal" in html(page)
    assert "_auth_user_id" not in client.session
