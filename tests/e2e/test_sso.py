"""Single sign-on in Chromium against a real OpenID provider, started as its own process.

The provider (tests/oidc_provider: django-oauth-toolkit) has its own
database, RS256 key and users; its directory file says each user's groups
and ``amr``, and can make it misbehave (wrong audience, forged signature).
Nothing of kmsweb is mocked: Authlib talks to the provider over loopback.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from audit.models import AuditEvent
from policies.models import OidcIdentity, Principal

pytestmark = pytest.mark.usefixtures("transactional_db")

PASSWORD = "provider-password-1"
DIRECTORY: dict[str, dict[str, Any]] = {
    "alice": {"password": PASSWORD, "groups": ["kms-admins", "staff"], "amr": ["pwd", "mfa"]},
    "bob": {"password": PASSWORD, "groups": ["auditors"], "amr": ["pwd"]},
    "mallory-aud": {"password": PASSWORD, "groups": ["kms-admins"], "amr": ["mfa"], "tamper": "aud"},
    "carol-dies": {"password": PASSWORD, "groups": ["kms-admins"], "amr": ["mfa"], "tamper": "die"},
    "mallory-sig": {"password": PASSWORD, "groups": ["kms-admins"], "amr": ["mfa"], "tamper": "sig"},
}


class Provider:
    """The running provider: its issuer, client credentials and directory."""

    def __init__(self, workdir: Path, issuer: str, client_secret: str, process: subprocess.Popen[str]) -> None:
        self.workdir = workdir
        self.issuer = issuer
        self.client_secret = client_secret
        self.process = process

    def set_groups(self, username: str, groups: list[str]) -> None:
        directory = json.loads((self.workdir / "directory.json").read_text())
        directory[username]["groups"] = groups
        (self.workdir / "directory.json").write_text(json.dumps(directory))


@contextmanager
def running_provider(live_server: Any, workdir: Path) -> Iterator[Provider]:
    """Start the provider as its own process; stop it on the way out."""
    (workdir / "directory.json").write_text(json.dumps(DIRECTORY))
    secret = secrets.token_urlsafe(24)
    (workdir / "client_secret").write_text(secret)
    root = Path(django_settings.BASE_DIR)
    with open(workdir / "server.log", "w") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "tests.oidc_provider.serve", str(workdir), f"{live_server.url}/login/sso/callback/"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            line = process.stdout.readline() if process.stdout else ""
            if not line.startswith("READY "):
                pytest.fail(f"the OpenID provider did not start: {(workdir / 'server.log').read_text()[-2000:]}")
            yield Provider(workdir, line.split()[1], secret, process)
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def provider(live_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    with running_provider(live_server, tmp_path_factory.mktemp("oidc-provider")) as running:
        yield running


def configure(settings: Any, provider: Provider) -> Provider:
    settings.KMSWEB_OIDC_ISSUER = provider.issuer
    settings.KMSWEB_OIDC_CLIENT_ID = "kmsweb"
    settings.KMSWEB_OIDC_CLIENT_SECRET = provider.client_secret
    settings.KMSWEB_OIDC_GROUP_ROLES = {"kms-admins": ("key-admin",), "auditors": ("auditor",)}
    settings.KMSWEB_OIDC_MFA_AMR = ["mfa", "otp", "hwk"]
    return provider


@pytest.fixture
def sso(settings: Any, provider: Provider) -> Provider:
    return configure(settings, provider)


def sso_sign_in(page: Any, username: str, *, start: str = "/", provider_session: bool = False) -> None:
    """From a kmsweb page through the provider's sign-in form and back.

    With ``provider_session`` the browser is still signed in at the
    provider, which sends it straight back.
    """
    page.goto(start)
    page.click("#sso-login")
    if provider_session:
        return
    expect(page.locator("h1")).to_have_text("Test identity provider")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("#idp-submit")


def test_it_signs_in_with_the_providers_mfa_and_maps_groups_to_roles(page: Any, sso: Provider) -> None:
    sso_sign_in(page, "alice", start="/keys/")
    expect(page).to_have_url(re.compile(r"/keys/$"))
    expect(page.locator("#sso-login")).to_have_count(0)
    user = get_user_model().objects.get(username="alice")
    assert sorted(user.groups.values_list("name", flat=True)) == ["key-admin"]
    assert not user.has_usable_password()
    identity = OidcIdentity.objects.get(user=user)
    assert identity.issuer == sso.issuer and identity.mfa
    assert Principal.objects.get(user=user).name == "alice"
    event = AuditEvent.objects.filter(event_name="ConsoleLogin").latest("id")
    assert event.additional_event_data["MFAUsed"] == "Yes" and event.additional_event_data["Provisioned"] is True


def test_it_asks_for_kmsweb_totp_when_the_provider_did_not_use_mfa(page: Any, sso: Provider) -> None:
    sso_sign_in(page, "bob")
    expect(page).to_have_url(re.compile(r"/mfa/enroll/"))
    # Not verified: the dashboard stays shut.
    page.goto("/keys/")
    expect(page).to_have_url(re.compile(r"/mfa/enroll/"))
    user = get_user_model().objects.get(username="bob")
    assert list(user.groups.values_list("name", flat=True)) == ["auditor"]


def test_it_refuses_a_user_removed_from_every_mapped_group_and_ends_their_session(
    browser: Any, page: Any, sso: Provider, live_server: Any
) -> None:
    sso_sign_in(page, "alice")
    expect(page.locator("h1")).to_have_text("Overview")
    sso.set_groups("alice", ["staff"])
    other = browser.new_context(base_url=live_server.url)
    try:
        second = other.new_page()
        sso_sign_in(second, "alice")
        expect(second.locator("#sso-error")).to_contain_text("no group that gives a kmsweb role")
    finally:
        other.close()
    user = get_user_model().objects.get(username="alice")
    assert not user.is_active and not user.groups.exists()
    # The first browser's session ends at its next request.
    page.goto("/keys/")
    expect(page).to_have_url(re.compile(r"/login/"))
    # Back in a mapped group, the next sign-in lets them in again.
    sso.set_groups("alice", ["auditors"])
    sso_sign_in(page, "alice", provider_session=True)
    expect(page.locator("h1")).to_have_text("Overview")
    assert list(get_user_model().objects.get(username="alice").groups.values_list("name", flat=True)) == ["auditor"]
    sso.set_groups("alice", DIRECTORY["alice"]["groups"])


def test_it_shows_a_clear_error_when_the_provider_is_down(page: Any, sso: Provider, settings: Any) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.KMSWEB_OIDC_ISSUER = f"http://127.0.0.1:{port}/o"
    page.goto("/")
    page.click("#sso-login")
    expect(page.locator("#sso-error")).to_contain_text("identity provider could not be reached")
    assert not get_user_model().objects.exists()
    assert not OidcIdentity.objects.exists()


def test_it_shows_a_clear_error_when_the_provider_goes_down_at_the_code_exchange(
    page: Any, settings: Any, live_server: Any, tmp_path: Path
) -> None:
    with running_provider(live_server, tmp_path) as own:
        configure(settings, own)
        # This user makes the provider exit when kmsweb comes to redeem the code.
        sso_sign_in(page, "carol-dies")
        expect(page.locator("#sso-error")).to_contain_text("could not be reached to finish signing in")
    assert not get_user_model().objects.exists()
    assert not OidcIdentity.objects.exists() and not Principal.objects.exists()
    page.goto("/keys/")
    expect(page).to_have_url(re.compile(r"/login/"))


@pytest.mark.parametrize(
    ("username", "why"),
    [("mallory-aud", "InvalidClaimError: invalid_claim: Invalid claim: 'aud'"), ("mallory-sig", "BadSignatureError")],
)
def test_it_refuses_an_id_token_with_a_wrong_audience_or_signature(
    page: Any, sso: Provider, username: str, why: str
) -> None:
    sso_sign_in(page, username)
    expect(page.locator("#sso-error")).to_contain_text("could not be verified")
    assert not get_user_model().objects.exists()
    page.goto("/keys/")
    expect(page).to_have_url(re.compile(r"/login/"))
    event = AuditEvent.objects.filter(event_name="ConsoleLogin").latest("id")
    assert event.error_code == "AccessDeniedException"
    assert event.additional_event_data["reason"].startswith(f"refused: {why}")
