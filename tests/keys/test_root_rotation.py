"""``manage.py rotate_root_key``: new root key, re-wrap everything, rotate platform keys.

The root key file is a copy in a temporary directory, so the suite's own
key under var/ is never touched.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from audit.alarm_rules import AlarmSpec
from audit.models import Alarm, AuditEvent, SigningKey
from audit.services.alarms import WEBHOOK_PURPOSE, alarm_create, webhook_secret
from audit.services.signing import signing_key_current, signing_key_sign
from keys import crypto
from keys import services as svc
from keys.models import Key, KeyManager, KeyMaterial, RotationType
from keys.services import material as material_module
from keys.services import root_rotation
from keys.services.jobs import keys_rotate_due
from keys.services.material import material_unwrap, root_keyring, root_keyring_forget
from keys.services.platform import platform_cache_clear, platform_decrypt
from keys.services.root_rotation import root_key_rotate
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InternalError
from policies.models import AccessKey, TotpDevice
from policies.services import ACCESS_KEY_PURPOSE, TOTP_PURPOSE, totp_device_enrol, user_create
from tests.conftest import REGION, Persona

SYSTEM = Caller.system("tests")
# Never called here: only its secret matters (private addresses allowed in this test).
WEBHOOK = "http://127.0.0.1:9/kmsweb"


def alarm_caller(persona: Persona) -> Caller:
    return Caller.system("tests", account_id=persona.account_id)


def alarm_spec(name: str, url: str, secret: str | None) -> AlarmSpec:
    return AlarmSpec(
        name=name,
        metric="denials",
        period=60,
        comparison="GreaterThanOrEqualToThreshold",
        threshold=1,
        webhook_url=url,
        webhook_secret=secret,
    )


# Decrypt looks for the key in the caller's region.
USER_SIDE = Caller.system("tests", account_id=settings.KMSWEB_ACCOUNT_ID, region=REGION)


def _blob(key: Key, plaintext: bytes = b"before rotation") -> bytes:
    return svc.key_encrypt(caller=USER_SIDE, key=key, plaintext=plaintext).ciphertext


def _decrypt(blob: bytes) -> bytes:
    return svc.key_decrypt(caller=USER_SIDE, ciphertext=blob).plaintext


def _root_ids() -> set[str]:
    return set(KeyMaterial.objects.values_list("root_key_id", flat=True))


def test_it_rewraps_all_material_under_a_new_root_key(
    root_key_file: Path, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    key = make_key()
    svc.key_rotate(caller=SYSTEM, key=Key.objects.get(pk=key.pk), rotation_type=RotationType.ON_DEMAND)
    blob = _blob(key)
    old_id = root_keyring().key_id
    assert _root_ids() == {old_id}
    rows = KeyMaterial.objects.count()
    assert rows >= 3  # the customer key's two versions and the access-key-secrets key

    call_command("rotate_root_key", "--new-key", stdout=None)

    lines = [line for line in root_key_file.read_text().splitlines() if line]
    assert len(lines) == 2 and lines[0] == lines[0].strip()
    new_id = root_keyring().key_id
    assert new_id != old_id
    assert _root_ids() == {new_id}
    assert _decrypt(blob) == b"before rotation"
    assert _decrypt(_blob(Key.objects.get(pk=key.pk), b"after")) == b"after"
    event = AuditEvent.objects.get(event_name="RotateRootKey")
    assert event.error_code == "" and event.event_source == "kmsweb"
    assert event.additional_event_data["rewrapped"] == rows
    assert event.additional_event_data["remainingUnderOldKeys"] == 0
    assert event.additional_event_data["rootKeyId"] == new_id
    assert root_key_file.stat().st_mode & 0o777 == 0o600


def test_it_is_safe_to_run_twice(root_key_file: Path, make_key: Callable[..., Key]) -> None:
    key = make_key()
    blob = _blob(key)
    root_key_rotate(caller=SYSTEM, new_key=True)
    wrapped = dict(KeyMaterial.objects.values_list("pk", "wrapped"))
    again = root_key_rotate(caller=SYSTEM)
    assert again["rewrapped"] == 0 and again["failed"] == 0
    assert {pk: bytes(w) for pk, w in KeyMaterial.objects.values_list("pk", "wrapped")} == {
        pk: bytes(w) for pk, w in wrapped.items()
    }
    assert _decrypt(blob) == b"before rotation"
    assert AuditEvent.objects.filter(event_name="RotateRootKey", error_code="").count() == 2


def test_it_resumes_after_an_interrupted_run(
    root_key_file: Path, make_key: Callable[..., Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [make_key() for _ in range(4)]
    blobs = [_blob(k) for k in keys]
    total = KeyMaterial.objects.count()
    original = root_rotation.material_rewrap
    calls = {"n": 0}

    def crash_on_third(material: KeyMaterial, keyring: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("power cut")
        return original(material, keyring)

    monkeypatch.setattr(root_rotation, "material_rewrap", crash_on_third)
    with pytest.raises(InternalError):
        root_key_rotate(caller=SYSTEM, new_key=True, batch=1)
    new_id = root_keyring().key_id
    done = KeyMaterial.objects.filter(root_key_id=new_id).count()
    assert done == 2  # the two committed batches
    assert AuditEvent.objects.get(event_name="RotateRootKey").error_code == "KMSInternalException"
    # Meanwhile both keys are held: every blob still decrypts.
    assert [_decrypt(b) for b in blobs] == [b"before rotation"] * 4

    monkeypatch.setattr(root_rotation, "material_rewrap", original)
    result = root_key_rotate(caller=SYSTEM, batch=1)
    assert result["rewrapped"] == total - 2
    assert _root_ids() == {new_id}
    assert [_decrypt(b) for b in blobs] == [b"before rotation"] * 4


def test_it_serves_the_api_while_rewrapping(
    root_key_file: Path, kms: Any, make_key: Callable[..., Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [make_key() for _ in range(3)]
    blobs = [kms.encrypt(KeyId=str(k.id), Plaintext=b"in flight")["CiphertextBlob"] for k in keys]
    seen: list[tuple[int, int]] = []
    bump = root_rotation.generation_bump

    def probe(*names: str) -> None:
        """After each committed batch, use every key over the wire."""
        bump(*names)
        new_id = root_keyring().key_id
        mixed = KeyMaterial.objects.filter(root_key_id=new_id).count(), KeyMaterial.objects.count()
        seen.append(mixed)
        for key, blob in zip(keys, blobs, strict=True):
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"in flight"
            fresh = kms.encrypt(KeyId=str(key.id), Plaintext=b"during")["CiphertextBlob"]
            assert kms.decrypt(CiphertextBlob=fresh)["Plaintext"] == b"during"

    monkeypatch.setattr(root_rotation, "generation_bump", probe)
    root_key_rotate(caller=SYSTEM, new_key=True, batch=1)
    # The API was used while some rows were re-wrapped and others not yet.
    assert any(0 < done < total for done, total in seen)
    assert _root_ids() == {root_keyring().key_id}


def test_it_rotates_the_owned_keys_and_reencrypts_their_secrets(
    root_key_file: Path, kms: Any, key_admin: Persona, django_user_model: Any, settings: Any
) -> None:
    settings.KMSWEB_WEBHOOK_ALLOW_PRIVATE = True
    user = user_create(caller=SYSTEM, username="ops", password="a long enough passphrase 1", roles=["viewer"])
    totp_device_enrol(caller=SYSTEM, user=user)
    signing = signing_key_current()
    signature_before = signing_key_sign(key=signing, data=b"digest")
    access_key = AccessKey.objects.get(pk=key_admin.access_key_id)
    old_secret_blob = bytes(access_key.secret_ciphertext)
    device = TotpDevice.objects.get(user=user)
    secret_before = platform_decrypt(
        purpose=TOTP_PURPOSE, blob=bytes(device.secret_ciphertext), context={"userId": str(user.pk)}
    )
    hooked = alarm_create(caller=alarm_caller(key_admin), spec=alarm_spec("hooked", WEBHOOK, "s" * 32))
    plain = alarm_create(caller=alarm_caller(key_admin), spec=alarm_spec("plain", "", None))
    owned = {k.purpose: k for k in Key.objects.filter(manager=KeyManager.OWNED)}
    assert {"access-key-secrets", "totp-secrets", "audit-signing", WEBHOOK_PURPOSE} <= set(owned)

    result = root_key_rotate(caller=SYSTEM, new_key=True, rotate_owned=True)

    assert result["ownedKeysRotated"] == len(owned)
    assert result["secretsReencrypted"]["access-key-secrets"] >= 1
    assert result["secretsReencrypted"]["totp-secrets"] == 1
    assert result["secretsReencrypted"]["audit-signing"] == 1
    assert result["secretsReencrypted"][WEBHOOK_PURPOSE] == 1  # the alarm without a webhook has no secret
    for purpose, key in owned.items():
        key.refresh_from_db()
        assert key.current_material is not None and key.current_material.version == 2, purpose
        assert key.last_rotated_at is not None and key.next_rotation_at is not None
    for model, field, purpose in (
        (AccessKey, "secret_ciphertext", "access-key-secrets"),
        (TotpDevice, "secret_ciphertext", "totp-secrets"),
        (SigningKey, "private_key_ciphertext", "audit-signing"),
        (Alarm, "webhook_secret_ciphertext", WEBHOOK_PURPOSE),
    ):
        for blob in model.objects.exclude(**{f"{field}__isnull": True}).values_list(field, flat=True):
            header = crypto.parse_header(bytes(blob))
            assert (header.key_id, header.version) == (owned[purpose].id, 2), purpose
    # What they protect still works: signing, TOTP secrets, and API signatures.
    device.refresh_from_db()
    assert (
        platform_decrypt(purpose=TOTP_PURPOSE, blob=bytes(device.secret_ciphertext), context={"userId": str(user.pk)})
        == secret_before
    )
    hooked.refresh_from_db()
    plain.refresh_from_db()
    assert webhook_secret(hooked) == b"s" * 32 and not plain.webhook_secret_ciphertext
    signing.refresh_from_db()
    assert signing_key_sign(key=signing, data=b"digest") != b""
    assert signature_before != b""
    assert kms.list_keys()["Keys"] is not None
    # A secret encrypted under the old version (say, by a process that had not
    # yet seen the rotation) still decrypts: old versions stay.
    assert (
        platform_decrypt(
            purpose=ACCESS_KEY_PURPOSE, blob=old_secret_blob, context={"accessKeyId": key_admin.access_key_id}
        ).decode()
        == key_admin.secret
    )
    second = root_key_rotate(caller=SYSTEM)
    assert second["rewrapped"] == 0


def _dump() -> bytes:
    """Every cell of every table, as bytes (the database as an attacker would read it)."""
    out = bytearray()
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                for cell in row:
                    if isinstance(cell, bytes | bytearray | memoryview):
                        out += bytes(cell)
                    else:
                        out += str(cell).encode("utf-8", "surrogateescape")
                    out += b"\x00"
    return bytes(out)


def test_it_never_leaves_plaintext_material_in_the_database(
    root_key_file: Path, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    make_key()
    secrets = [material_unwrap(row) for row in KeyMaterial.objects.all()]
    root_key_rotate(caller=SYSTEM, new_key=True, rotate_owned=True)
    secrets += [material_unwrap(row) for row in KeyMaterial.objects.all()]
    secrets.append(key_admin.secret.encode())
    dump = _dump()
    for secret in secrets:
        for form in (secret, secret.hex().encode(), base64.b64encode(secret)):
            assert form not in dump
    for line in root_key_file.read_text().splitlines():
        raw = base64.b64decode(line.rsplit(":", 1)[-1])
        assert raw not in dump and line.rsplit(":", 1)[-1].encode() not in dump


def test_it_refuses_a_new_key_when_the_root_key_is_not_in_a_file(settings: Any, make_key: Callable[..., Key]) -> None:
    settings.KMSWEB_ROOT_KEY_FILE = None
    root_keyring_forget()
    try:
        with pytest.raises(CommandError, match="KMSWEB_ROOT_KEY"):
            call_command("rotate_root_key", "--new-key")
        assert AuditEvent.objects.get(event_name="RotateRootKey").error_code == "ValidationException"
    finally:
        root_keyring_forget()


def test_it_reads_a_key_added_by_another_process(
    root_key_file: Path, make_key: Callable[..., Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(material_module, "ROOT_KEY_RECHECK_SECONDS", 3600.0)
    key = make_key()
    blob = _blob(key)
    old = root_keyring()
    # Another process appends a key and re-wraps this key's material with it.
    root_key_file.write_text(root_key_file.read_text() + crypto.new_root_key_line("other") + "\n")
    other = crypto.RootKeyring.parse(root_key_file.read_text())
    for row in KeyMaterial.objects.filter(key=key):
        material_module.material_rewrap(row, other)
        row.save(update_fields=["wrapped", "root_key_id"])
    assert root_keyring() is old  # not yet re-read (the mtime is looked at only now and then)…
    svc_key = Key.objects.get(pk=key.pk)
    assert _decrypt(blob) == b"before rotation"  # …but an unknown root key id forces a re-read
    assert root_keyring().key_id == other.key_id
    assert svc_key.current_material is not None


def test_it_rotates_platform_owned_keys_yearly_with_the_rotation_job(key_admin: Persona) -> None:
    owned = Key.objects.get(manager=KeyManager.OWNED, purpose="access-key-secrets")
    assert owned.next_rotation_at is not None
    later = timezone.now() + timedelta(days=366)
    with time_machine.travel(later, tick=False):
        counts = keys_rotate_due(caller=Caller.system("rotate_keys"), now=later)
    assert counts["rotated"] >= 1
    owned.refresh_from_db()
    assert owned.current_material is not None and owned.current_material.version == 2
    platform_cache_clear()
    access_key = AccessKey.objects.get(pk=key_admin.access_key_id)
    # The secret made under version 1 still decrypts.
    assert (
        platform_decrypt(
            purpose=ACCESS_KEY_PURPOSE, blob=bytes(access_key.secret_ciphertext), context={"accessKeyId": access_key.pk}
        ).decode()
        == key_admin.secret
    )
