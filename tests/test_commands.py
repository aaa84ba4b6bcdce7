"""The management commands ``make run`` and operators use, through call_command."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import Alarm, AuditEvent
from keys.models import Alias, Key, KeyManager, KeyState
from policies.models import AccessKey, Account, Principal
from policies.services import access_key_authenticate

pytestmark = pytest.mark.django_db

ACCOUNT = settings.KMSWEB_ACCOUNT_ID
PASSWORD = "correct horse battery staple"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def counts() -> dict[str, int]:
    models: list[Any] = [Account, Principal, get_user_model(), AccessKey, Key, Alias, AuditEvent]
    return {m.__name__: m.objects.count() for m in models}


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin_password"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


# -- bootstrap --------------------------------------------------------------------------------


def test_it_bootstraps_the_account_principal_and_a_linked_superuser(password_file: Path) -> None:
    out = run("bootstrap", "--password-file", str(password_file))
    account = Account.objects.get(id=ACCOUNT)
    principal = Principal.objects.get(account=account, name="admin", type="user")
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.is_staff
    assert user.check_password(PASSWORD)
    assert principal.user == user
    assert out.splitlines() == [
        f"account {ACCOUNT}",
        f"created principal arn:aws:iam::{ACCOUNT}:user/admin",
        f"gave arn:aws:iam::{ACCOUNT}:user/admin the inline policy AdministratorAccess (kms:*)",
        "created dashboard superuser admin",
        f"linked admin to arn:aws:iam::{ACCOUNT}:user/admin",
        "created 4 built-in alarm(s)",
    ]
    assert not Key.objects.exists()
    assert Alarm.objects.filter(account_id=ACCOUNT).exclude(builtin="").count() == 4
    assert AuditEvent.objects.filter(event_name="CreatePrincipal", error_code="").count() == 1
    assert principal.inline_policies.get(name="AdministratorAccess").document.count("kms:*") == 1


def test_it_bootstraps_idempotently(password_file: Path) -> None:
    run("bootstrap", "--password-file", str(password_file))
    before = counts()
    out = run("bootstrap", "--password-file", str(password_file))
    assert counts() == before
    assert out.splitlines() == [
        f"account {ACCOUNT}",
        f"principal arn:aws:iam::{ACCOUNT}:user/admin exists",
        "dashboard user admin exists",
    ]
    # Once the user exists the password file is no longer needed.
    assert "exists" in run("bootstrap")
    assert counts() == before


def test_it_needs_a_password_file_to_bootstrap_the_user() -> None:
    with pytest.raises(CommandError, match="--password-file"):
        run("bootstrap")
    assert not get_user_model().objects.exists()


def test_it_bootstraps_by_linking_an_existing_user(password_file: Path) -> None:
    user = get_user_model().objects.create_user(username="ops", password=PASSWORD)
    out = run("bootstrap", "--username", "ops")
    assert Principal.objects.get(name="ops").user == user
    assert "dashboard user ops exists" in out
    assert f"linked ops to arn:aws:iam::{ACCOUNT}:user/ops" in out


def test_it_refuses_to_bootstrap_an_invalid_username(password_file: Path) -> None:
    with pytest.raises(CommandError):
        run("bootstrap", "--username", "bad name", "--password-file", str(password_file))
    assert not Principal.objects.exists()
    assert not get_user_model().objects.exists()


# -- create_principal ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["user", "role", "service"])
def test_it_creates_a_principal_and_prints_its_arn(kind: str) -> None:
    out = run("create_principal", "deployer", "--type", kind)
    assert out == f"arn:aws:iam::{ACCOUNT}:{kind}/deployer\n"
    assert Principal.objects.get(name="deployer").type == kind


def test_it_creates_a_user_principal_in_the_default_account_by_default() -> None:
    assert run("create_principal", "alice") == f"arn:aws:iam::{ACCOUNT}:user/alice\n"


def test_it_creates_a_principal_in_another_account() -> None:
    assert run("create_principal", "bob", "--account", "444455556666") == "arn:aws:iam::444455556666:user/bob\n"
    assert Principal.objects.get(name="bob").account_id == "444455556666"


def test_it_refuses_a_duplicate_principal() -> None:
    run("create_principal", "deployer")
    before = counts()
    with pytest.raises(CommandError, match="already exists"):
        run("create_principal", "deployer")
    assert Principal.objects.count() == before["Principal"]


@pytest.mark.parametrize(
    "args",
    [
        ("deployer", "--type", "group"),
        ("bad name",),
        ("x" * 65,),
        ("deployer", "--account", "12345"),
        ("deployer", "--account", "abcdefghijkl"),
    ],
)
def test_it_refuses_a_principal_with_bad_input(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        run("create_principal", *args)
    assert not Principal.objects.exists()


# -- create_access_key ----------------------------------------------------------------------------


def test_it_prints_an_access_key_id_and_secret_that_authenticate() -> None:
    run("create_principal", "app")
    out = run("create_access_key", "app")
    match = re.fullmatch(r"(AKIA[A-Z2-7]{16}) (\S{40})\n", out)
    assert match is not None, out
    access_key_id, secret = match.groups()
    credentials = access_key_authenticate(access_key_id=access_key_id)
    assert credentials is not None
    assert credentials.secret == secret
    assert credentials.principal.arn == f"arn:aws:iam::{ACCOUNT}:user/app"


def test_it_creates_an_access_key_with_a_fixed_id_and_secret() -> None:
    run("create_principal", "app")
    out = run(
        "create_access_key", "app", "--access-key-id", "AKIDEXAMPLE0000001", "--secret", "fixed-secret-for-ci-0001"
    )
    assert out == "AKIDEXAMPLE0000001 fixed-secret-for-ci-0001\n"
    credentials = access_key_authenticate(access_key_id="AKIDEXAMPLE0000001")
    assert credentials is not None and credentials.secret == "fixed-secret-for-ci-0001"


@pytest.mark.parametrize("args", [("--access-key-id", "AKIDEXAMPLE0000001"), ("--secret", "fixed-secret-for-ci-0001")])
def test_it_refuses_an_access_key_id_without_a_secret_or_the_reverse(args: tuple[str, ...]) -> None:
    run("create_principal", "app")
    with pytest.raises(CommandError, match="go together"):
        run("create_access_key", "app", *args)
    assert not AccessKey.objects.exists()


def test_it_refuses_a_duplicate_access_key_id() -> None:
    run("create_principal", "app")
    fixed = ("--access-key-id", "AKIDEXAMPLE0000001", "--secret", "fixed-secret-for-ci-0001")
    run("create_access_key", "app", *fixed)
    with pytest.raises(CommandError, match="already exists"):
        run("create_access_key", "app", "--access-key-id", "AKIDEXAMPLE0000001", "--secret", "another-secret-000001")
    credentials = access_key_authenticate(access_key_id="AKIDEXAMPLE0000001")
    assert credentials is not None and credentials.secret == "fixed-secret-for-ci-0001"


def test_it_refuses_an_access_key_for_an_unknown_principal() -> None:
    with pytest.raises(CommandError, match="does not exist"):
        run("create_access_key", "nobody")


def test_it_creates_the_access_key_for_the_principal_type_asked_for() -> None:
    run("create_principal", "svc", "--type", "user")
    run("create_principal", "svc", "--type", "role")
    access_key_id = run("create_access_key", "svc", "--type", "role").split()[0]
    assert AccessKey.objects.get(pk=access_key_id).principal.type == "role"


# -- ensure_demo_key ---------------------------------------------------------------------------------


def test_it_ensures_the_demo_key_and_alias_once() -> None:
    first = run("ensure_demo_key")
    key = Key.objects.get(manager=KeyManager.CUSTOMER)
    assert first == f"created alias/demo -> {key.arn}\n"
    assert (key.account_id, key.region, key.state) == (ACCOUNT, settings.KMSWEB_DEFAULT_REGION, KeyState.ENABLED)
    assert Alias.objects.get(name="alias/demo").key == key
    before = counts()
    second = run("ensure_demo_key")
    assert second == f"alias/demo -> {key.arn}\n"
    assert counts() == before


def test_it_ensures_a_demo_key_under_another_alias_and_region() -> None:
    out = run("ensure_demo_key", "--alias", "alias/other", "--region", "eu-west-1")
    key = Key.objects.get(manager=KeyManager.CUSTOMER)
    assert key.region == "eu-west-1"
    assert out == f"created alias/other -> {key.arn}\n"
    # Another region is another alias namespace.
    run("ensure_demo_key", "--alias", "alias/other")
    assert Key.objects.filter(manager=KeyManager.CUSTOMER).count() == 2
