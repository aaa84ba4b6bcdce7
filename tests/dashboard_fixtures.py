"""Dashboard personas: users per role with an enrolled TOTP device, and sign-in helpers.

A pytest plugin, loaded for every test by ``pytest_plugins`` in the root
tests/conftest.py: its fixtures are available by name everywhere. The helpers
(``create_dashboard_user``, ``dashboard_login``, ``totp_code``, ...) are
imported normally.

The TOTP code is computed here from the base32 secret (RFC 6238: HMAC-SHA-1,
6 digits, 30-second steps) rather than with the app's own code, so a test
that signs in also checks the app against the standard.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client

from kmsweb.lib.caller import Caller
from policies.models import Account, Principal, TotpDevice
from policies.services import default_account, totp_device_enrol, user_create

PASSWORD = "plum-orbit-Lantern-47"
TOTP_STEP = 30


def totp_code(secret_b32: str, *, at: float | None = None, step: int | None = None) -> str:
    """The RFC 6238 code of ``secret_b32`` at time ``at`` (default now) or at time step ``step``."""
    secret = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    counter = step if step is not None else int((time.time() if at is None else at) // TOTP_STEP)
    digest = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def current_step(at: float | None = None) -> int:
    return int((time.time() if at is None else at) // TOTP_STEP)


@dataclass
class DashboardUser:
    """A dashboard user, its principal and (when enrolled) its TOTP secret."""

    user: Any
    principal: Principal
    password: str
    secret_b32: str | None

    @property
    def username(self) -> str:
        return self.user.get_username()

    @property
    def arn(self) -> str:
        return self.principal.arn

    def code(self, *, at: float | None = None) -> str:
        """A code the server will accept now: this step's, or the next one's if this one was used.

        The server accepts a code of the step before, the current one or
        the one after, each once (it remembers the last step it accepted).
        """
        assert self.secret_b32, f"{self.username} has no TOTP device"
        step = current_step(at)
        device = TotpDevice.objects.get(user=self.user, confirmed=True)
        if device.last_t >= step:
            step = device.last_t + 1
        return totp_code(self.secret_b32, step=step)


def create_dashboard_user(
    username: str, *roles: str, account: Account | None = None, enrol: bool = True, password: str = PASSWORD
) -> DashboardUser:
    """A user made through the services: roles as groups, a linked principal, a confirmed TOTP device."""
    account = account or default_account()
    caller = Caller.system("tests", account_id=account.id)
    user = user_create(caller=caller, username=username, password=password, roles=list(roles), account=account)
    secret = totp_device_enrol(caller=caller, user=user).secret_b32 if enrol else None
    return DashboardUser(user=user, principal=Principal.objects.get(user=user), password=password, secret_b32=secret)


def dashboard_login(client: Client, who: DashboardUser, *, next: str = "/") -> HttpResponse:
    """Sign ``client`` in through the real views: POST /login/, then POST /mfa/verify/."""
    response = client.post("/login/", {"username": who.username, "password": who.password, "next": next})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"].startswith("/mfa/verify/"), response["Location"]
    response = client.post("/mfa/verify/", {"token": who.code(), "next": next})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == next
    return response


def fast_password_hashing(settings: Any) -> None:
    """MD5 instead of PBKDF2's million rounds: the same views, a fraction of the time.

    Called by the fixtures below with pytest-django's ``settings`` fixture.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_dashboard_user(db: None, settings: Any) -> Callable[..., DashboardUser]:
    """``make_dashboard_user("name", "viewer", ...)``: any user with any roles."""
    fast_password_hashing(settings)
    return create_dashboard_user


@pytest.fixture
def viewer_user(db: None, settings: Any) -> DashboardUser:
    fast_password_hashing(settings)
    return create_dashboard_user("vera", "viewer")


@pytest.fixture
def key_admin_user(db: None, settings: Any) -> DashboardUser:
    fast_password_hashing(settings)
    return create_dashboard_user("kim", "key-admin")


@pytest.fixture
def approver_user(db: None, settings: Any) -> DashboardUser:
    fast_password_hashing(settings)
    return create_dashboard_user("april", "approver")


@pytest.fixture
def auditor_user(db: None, settings: Any) -> DashboardUser:
    fast_password_hashing(settings)
    return create_dashboard_user("otto", "auditor")


@pytest.fixture
def signed_in() -> Callable[..., Client]:
    """``signed_in(user)``: a new test Client that went through password and TOTP."""

    def make(who: DashboardUser, **client_kwargs: Any) -> Client:
        client = Client(**client_kwargs)
        if client_kwargs.get("enforce_csrf_checks"):
            # Sign in with a relaxed client, then hand its cookies over.
            relaxed = Client()
            dashboard_login(relaxed, who)
            client.cookies = relaxed.cookies
        else:
            dashboard_login(client, who)
        return client

    return make
