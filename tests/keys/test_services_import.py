"""Imported key material through the services: every refusal changes nothing
and leaves exactly one audit row with AWS's error; successes change exactly
what they should."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from audit.models import AuditEvent
from keys import crypto
from keys import services as svc
from keys.models import ImportParameters, Key, KeyMaterial, KeyState
from keys.services.importing import FINGERPRINT_PURPOSE, PARAMETERS_LIFETIME, TOKEN_PURPOSE
from keys.services.material import root_keyring
from keys.services.platform import platform_key_get_or_create
from keys.services.root_rotation import root_key_rotate
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AccessDenied,
    ExpiredImportToken,
    IncorrectKeyMaterial,
    InvalidCiphertext,
    InvalidImportToken,
    InvalidState,
    KmsError,
    NotFound,
    UnsupportedOperation,
    ValidationError,
)
from tests.conftest import Persona
from tests.importing import wrap
from tests.keys.test_services import assert_one_event, last_event_id, one_event, state_of

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 6, 1, 9, 0, 0, tzinfo=UTC)
NO_EXPIRY = {"expiration_model": "KEY_MATERIAL_DOES_NOT_EXPIRE"}


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def _platform_keys(db: None) -> None:
    # Made (and audited as CreateKey) on first use; made up front so each
    # test sees only the events of the operation it calls.
    for purpose in (TOKEN_PURPOSE, FINGERPRINT_PURPOSE):
        platform_key_get_or_create(purpose=purpose)


@pytest.fixture
def admin(key_admin: Persona) -> Caller:
    return key_admin.caller()


@pytest.fixture
def ext(make_key: Callable[..., Key]) -> Key:
    return make_key(origin="EXTERNAL", description="imported")


@pytest.fixture
def material() -> bytes:
    return os.urandom(32)


def fresh(key: Key) -> Key:
    return Key.objects.select_related("current_material").get(pk=key.pk)


def parameters(caller: Caller, key: Key, algorithm: str = "RSAES_OAEP_SHA_256") -> dict[str, Any]:
    return svc.key_get_parameters_for_import(
        caller=caller, key=key, wrapping_algorithm=algorithm, wrapping_key_spec="RSA_2048"
    )


def do_import(caller: Caller, key: Key, material: bytes, algorithm: str = "RSAES_OAEP_SHA_256", **kw: Any) -> Any:
    params = parameters(caller, key, algorithm)
    kw = {**NO_EXPIRY, **kw} if "valid_to" not in kw else kw
    return svc.key_import_material(
        caller=caller,
        key=fresh(key),
        import_token=params["ImportToken"],
        encrypted_key_material=wrap(params["PublicKey"], algorithm, material),
        **kw,
    )


def snapshot(key: Key) -> dict[str, Any]:
    return {
        **state_of(key),
        "material_rows": list(KeyMaterial.objects.filter(key=key).values()),
        "parameters": list(ImportParameters.objects.filter(key=key).order_by("created_at").values("pk", "used_at")),
    }


# -- CreateKey and GetParametersForImport ------------------------------------------------------


def test_it_creates_an_external_key_without_material(admin: Caller) -> None:
    mark = last_event_id()
    key = fresh(svc.key_create(caller=admin, origin="EXTERNAL"))
    event = assert_one_event(mark, "CreateKey", admin, keys=[key])
    assert (key.origin, key.state, key.current_material) == ("EXTERNAL", KeyState.PENDING_IMPORT, None)
    assert not KeyMaterial.objects.filter(key=key).exists()
    assert "keyMaterialId" not in (event.additional_event_data or {})
    meta = svc.key_describe_metadata(key)
    assert (meta["Origin"], meta["KeyState"], meta["Enabled"]) == ("EXTERNAL", "PendingImport", False)
    assert not {"ExpirationModel", "ValidTo", "CurrentKeyMaterialId"} & set(meta)


def test_it_binds_the_token_to_the_key_and_stores_the_private_key_wrapped(admin: Caller, ext: Key) -> None:
    parameters(admin, ext)  # the platform keys exist from here on
    with one_event("GetParametersForImport", admin, keys=[ext]) as rec:
        params = parameters(admin, ext, "RSA_AES_KEY_WRAP_SHA_1")
    row = ImportParameters.objects.filter(key=ext).latest("created_at")
    assert (row.wrapping_algorithm, row.wrapping_key_spec, row.used_at) == ("RSA_AES_KEY_WRAP_SHA_1", "RSA_2048", None)
    assert bytes(row.public_key) == params["PublicKey"]
    assert params["ParametersValidTo"] == row.valid_to == row.created_at + PARAMETERS_LIFETIME
    # Neither the token nor the public key go to the audit trail.
    assert rec.event is not None
    assert set(rec.event.response_elements or {}) == {"keyId", "parametersValidTo"}
    # The token names no key in the clear, and is not the row id.
    assert str(ext.id).encode() not in params["ImportToken"] and row.pk.bytes not in params["ImportToken"]


@pytest.mark.parametrize(
    ("algorithm", "spec", "error"),
    [
        ("RSAES_PKCS1_V1_5", "RSA_2048", UnsupportedOperation),
        ("SM2PKE", "RSA_2048", UnsupportedOperation),
        ("RSAES_OAEP_SHA_256", "SM2", UnsupportedOperation),
    ],
)
def test_it_refuses_wrapping_choices_aws_does_not_offer(
    admin: Caller, ext: Key, algorithm: str, spec: str, error: type[KmsError]
) -> None:
    with one_event("GetParametersForImport", admin, keys=[ext], error=error.code), pytest.raises(error):
        svc.key_get_parameters_for_import(caller=admin, key=ext, wrapping_algorithm=algorithm, wrapping_key_spec=spec)
    assert not ImportParameters.objects.exists()


def test_it_refuses_parameters_for_a_key_pending_deletion_or_not_external(
    admin: Caller, ext: Key, make_key: Callable[..., Key]
) -> None:
    svc.key_schedule_deletion(caller=admin, key=ext, pending_window_days=7)
    with one_event("GetParametersForImport", admin, keys=[ext], error="KMSInvalidStateException"):
        with pytest.raises(InvalidState):
            parameters(admin, fresh(ext))
    native = make_key()
    with one_event("GetParametersForImport", admin, keys=[native], error="UnsupportedOperationException"):
        with pytest.raises(UnsupportedOperation):
            parameters(admin, native)
    assert not ImportParameters.objects.exists()


def test_it_denies_import_operations_to_a_principal_without_rights(
    admin: Caller, ext: Key, material: bytes, make_persona: Callable[..., Persona]
) -> None:
    nobody = make_persona("nobody").caller()
    with one_event("GetParametersForImport", nobody, keys=[ext], error="AccessDeniedException"):
        with pytest.raises(AccessDenied):
            parameters(nobody, ext)
    assert not ImportParameters.objects.exists()
    params = parameters(admin, ext)
    before = snapshot(ext)
    with one_event("ImportKeyMaterial", nobody, keys=[ext], error="AccessDeniedException"):
        with pytest.raises(AccessDenied):
            svc.key_import_material(
                caller=nobody,
                key=ext,
                import_token=params["ImportToken"],
                encrypted_key_material=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", material),
                **NO_EXPIRY,
            )
    assert snapshot(ext) == before
    do_import(admin, ext, material)
    before = snapshot(ext)
    with one_event("DeleteImportedKeyMaterial", nobody, keys=[ext], error="AccessDeniedException"):
        with pytest.raises(AccessDenied):
            svc.key_delete_imported_material(caller=nobody, key=fresh(ext))
    assert snapshot(ext) == before


# -- ImportKeyMaterial -----------------------------------------------------------------------


def test_it_imports_material_enabling_the_key_and_spending_the_token(admin: Caller, ext: Key, material: bytes) -> None:
    params = parameters(admin, ext)
    with one_event("ImportKeyMaterial", admin, keys=[ext]) as rec:
        result = svc.key_import_material(
            caller=admin,
            key=ext,
            import_token=params["ImportToken"],
            encrypted_key_material=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", material),
            key_material_description="from hsm-1",
            **NO_EXPIRY,
        )
    key = fresh(ext)
    row = KeyMaterial.objects.get(key=key)
    assert key.state == KeyState.ENABLED and key.current_material == row
    assert (key.expiration_model, key.valid_to) == ("KEY_MATERIAL_DOES_NOT_EXPIRE", None)
    assert (row.version, row.description, row.material_id) == (1, "from hsm-1", result["KeyMaterialId"])
    assert ImportParameters.objects.get(key=key).used_at is not None
    # Stored wrapped, fingerprinted with a key: neither the material nor its plain hash is in the row.
    assert material not in bytes(row.wrapped)
    assert hashlib.sha256(material).hexdigest() not in (row.fingerprint, row.material_id)
    assert rec.event is not None
    assert rec.event.request_parameters == {
        "keyId": str(ext.id),
        "expirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
        "keyMaterialDescription": "from hsm-1",
    }
    assert rec.event.additional_event_data == {"keyMaterialId": row.material_id}
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"p").ciphertext
    assert crypto.decrypt(material, blob) == b"p"


def test_it_sets_and_then_resets_the_expiration_by_reimporting(
    clock: time_machine.Coordinates, admin: Caller, ext: Key, material: bytes
) -> None:
    valid_to = T0 + timedelta(days=365)
    do_import(admin, ext, material, expiration_model="KEY_MATERIAL_EXPIRES", valid_to=valid_to)
    key = fresh(ext)
    assert (key.expiration_model, key.valid_to) == ("KEY_MATERIAL_EXPIRES", valid_to)
    meta = svc.key_describe_metadata(key)
    assert (meta["ExpirationModel"], meta["ValidTo"]) == ("KEY_MATERIAL_EXPIRES", valid_to)
    svc.key_disable(caller=admin, key=key)
    do_import(admin, ext, material)  # the same material, no expiry now
    key = fresh(ext)
    assert (key.expiration_model, key.valid_to, key.state) == ("KEY_MATERIAL_DOES_NOT_EXPIRE", None, "Disabled")
    assert KeyMaterial.objects.filter(key=key).count() == 1


def _token_for_other_key(admin: Caller, make_key: Callable[..., Key], ext: Key) -> dict[str, Any]:
    other = make_key(origin="EXTERNAL")
    params = parameters(admin, other)
    return {"import_token": params["ImportToken"], "public": params["PublicKey"]}


def _tampered(admin: Caller, make_key: Callable[..., Key], ext: Key) -> dict[str, Any]:
    params = parameters(admin, ext)
    token = bytearray(params["ImportToken"])
    token[-1] ^= 1
    return {"import_token": bytes(token), "public": params["PublicKey"]}


def _garbage(admin: Caller, make_key: Callable[..., Key], ext: Key) -> dict[str, Any]:
    params = parameters(admin, ext)
    return {"import_token": b"\x01" + os.urandom(80), "public": params["PublicKey"]}


def _ciphertext_as_token(admin: Caller, make_key: Callable[..., Key], ext: Key) -> dict[str, Any]:
    # A customer ciphertext has the same outer format: it must not pass as a token.
    native = make_key()
    blob = svc.key_encrypt(caller=admin, key=native, plaintext=b'{"id": "x"}').ciphertext
    return {"import_token": blob, "public": parameters(admin, ext)["PublicKey"]}


@pytest.mark.parametrize(
    "make_token",
    [_token_for_other_key, _tampered, _garbage, _ciphertext_as_token],
    ids=["other-key", "tampered", "garbage", "ciphertext"],
)
def test_it_refuses_an_invalid_import_token_changing_nothing(
    admin: Caller, ext: Key, material: bytes, make_key: Callable[..., Key], make_token: Callable[..., dict[str, Any]]
) -> None:
    token = make_token(admin, make_key, ext)
    before = snapshot(ext)
    with one_event("ImportKeyMaterial", admin, keys=[ext], error="InvalidImportTokenException"):
        with pytest.raises(InvalidImportToken):
            svc.key_import_material(
                caller=admin,
                key=ext,
                import_token=token["import_token"],
                encrypted_key_material=wrap(token["public"], "RSAES_OAEP_SHA_256", material),
                **NO_EXPIRY,
            )
    assert snapshot(ext) == before


def test_it_refuses_a_token_already_used(admin: Caller, ext: Key, material: bytes) -> None:
    params = parameters(admin, ext)
    args = {
        "import_token": params["ImportToken"],
        "encrypted_key_material": wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", material),
        **NO_EXPIRY,
    }
    svc.key_import_material(caller=admin, key=ext, **args)
    before = snapshot(ext)
    with one_event("ImportKeyMaterial", admin, keys=[ext], error="InvalidImportTokenException"):
        with pytest.raises(InvalidImportToken, match="already been used"):
            svc.key_import_material(caller=admin, key=fresh(ext), **args)
    assert snapshot(ext) == before


def test_it_refuses_a_token_past_its_24_hours_but_not_a_second_before(
    clock: time_machine.Coordinates, admin: Caller, ext: Key, material: bytes
) -> None:
    params = parameters(admin, ext)
    args = {
        "import_token": params["ImportToken"],
        "encrypted_key_material": wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", material),
        **NO_EXPIRY,
    }
    clock.move_to(T0 + timedelta(hours=24))
    before = snapshot(ext)
    with one_event("ImportKeyMaterial", admin, keys=[ext], error="ExpiredImportTokenException"):
        with pytest.raises(ExpiredImportToken):
            svc.key_import_material(caller=admin, key=ext, **args)
    assert snapshot(ext) == before
    clock.move_to(T0 + timedelta(hours=24) - timedelta(seconds=1))
    svc.key_import_material(caller=admin, key=ext, **args)
    assert fresh(ext).state == KeyState.ENABLED


def _other_public_key(admin: Caller, ext: Key, params: dict[str, Any], material: bytes) -> bytes:
    stranger = parameters(admin, ext)  # a second pair for the same key
    return wrap(stranger["PublicKey"], "RSAES_OAEP_SHA_256", material)


def _other_algorithm(admin: Caller, ext: Key, params: dict[str, Any], material: bytes) -> bytes:
    return wrap(params["PublicKey"], "RSAES_OAEP_SHA_1", material)  # token says SHA-256


def _aes_wrap_for_oaep_token(admin: Caller, ext: Key, params: dict[str, Any], material: bytes) -> bytes:
    return wrap(params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", material)


def _truncated(admin: Caller, ext: Key, params: dict[str, Any], material: bytes) -> bytes:
    return wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", material)[:-1]


@pytest.mark.parametrize(
    "bad_wrap",
    [_other_public_key, _other_algorithm, _aes_wrap_for_oaep_token, _truncated],
    ids=["other-public-key", "other-algorithm", "aes-wrap", "truncated"],
)
def test_it_refuses_wrongly_wrapped_material_changing_nothing(
    admin: Caller, ext: Key, material: bytes, bad_wrap: Callable[..., bytes]
) -> None:
    params = parameters(admin, ext)
    encrypted = bad_wrap(admin, ext, params, material)
    before = snapshot(ext)
    with one_event("ImportKeyMaterial", admin, keys=[ext], error="InvalidCiphertextException"):
        with pytest.raises(InvalidCiphertext):
            svc.key_import_material(
                caller=admin, key=ext, import_token=params["ImportToken"], encrypted_key_material=encrypted, **NO_EXPIRY
            )
    assert snapshot(ext) == before


def test_it_refuses_a_garbled_aes_key_wrap_payload(admin: Caller, ext: Key, material: bytes) -> None:
    params = parameters(admin, ext, "RSA_AES_KEY_WRAP_SHA_256")
    encrypted = bytearray(wrap(params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", material))
    encrypted[-3] ^= 0x40
    before = snapshot(ext)
    with one_event("ImportKeyMaterial", admin, keys=[ext], error="InvalidCiphertextException"):
        with pytest.raises(InvalidCiphertext):
            svc.key_import_material(
                caller=admin,
                key=ext,
                import_token=params["ImportToken"],
                encrypted_key_material=bytes(encrypted),
                **NO_EXPIRY,
            )
    assert snapshot(ext) == before


@pytest.mark.parametrize("size", [16, 31, 33, 64])
def test_it_refuses_material_of_the_wrong_length_for_the_spec(admin: Caller, ext: Key, size: int) -> None:
    params = parameters(admin, ext)
    before = snapshot(ext)
    with one_event("ImportKeyMaterial", admin, keys=[ext], error="IncorrectKeyMaterialException"):
        with pytest.raises(IncorrectKeyMaterial, match="256 bits"):
            svc.key_import_material(
                caller=admin,
                key=ext,
                import_token=params["ImportToken"],
                encrypted_key_material=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(size)),
                **NO_EXPIRY,
            )
    assert snapshot(ext) == before


def test_it_refuses_different_material_on_reimport(admin: Caller, ext: Key, material: bytes) -> None:
    do_import(admin, ext, material)
    svc.key_delete_imported_material(caller=admin, key=fresh(ext))
    params = parameters(admin, ext)
    before = snapshot(ext)
    with one_event("ImportKeyMaterial", admin, keys=[ext], error="IncorrectKeyMaterialException"):
        with pytest.raises(IncorrectKeyMaterial):
            svc.key_import_material(
                caller=admin,
                key=fresh(ext),
                import_token=params["ImportToken"],
                encrypted_key_material=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32)),
                **NO_EXPIRY,
            )
    assert snapshot(ext) == before
    assert fresh(ext).state == KeyState.PENDING_IMPORT


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expiration_model": None}, "validTo date must be set"),
        ({"expiration_model": "KEY_MATERIAL_EXPIRES"}, "validTo date must be set"),
        ({"expiration_model": "KEY_MATERIAL_EXPIRES", "valid_to": T0}, "in the future"),
        ({"expiration_model": "KEY_MATERIAL_EXPIRES", "valid_to": T0 + timedelta(days=365, seconds=1)}, "365"),
        ({"expiration_model": "KEY_MATERIAL_DOES_NOT_EXPIRE", "valid_to": T0 + timedelta(days=1)}, "only valid"),
        (
            {
                "expiration_model": "KEY_MATERIAL_DOES_NOT_EXPIRE",
                "import_type": "NEW_KEY_MATERIAL",
                "key_material_id": "a" * 64,
            },
            "KeyMaterialId cannot be specified",
        ),
    ],
)
def test_it_refuses_bad_expiration_or_import_type_values(
    clock: time_machine.Coordinates, admin: Caller, ext: Key, material: bytes, kwargs: dict[str, Any], message: str
) -> None:
    params = parameters(admin, ext)
    before = snapshot(ext)
    with one_event("ImportKeyMaterial", admin, keys=[ext], error="ValidationException"):
        with pytest.raises(ValidationError, match=message):
            svc.key_import_material(
                caller=admin,
                key=ext,
                import_token=params["ImportToken"],
                encrypted_key_material=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", material),
                **kwargs,
            )
    assert snapshot(ext) == before


def test_it_follows_import_type_and_key_material_id(admin: Caller, ext: Key, material: bytes) -> None:
    with pytest.raises(IncorrectKeyMaterial, match="No key material"):
        do_import(admin, ext, material, import_type="EXISTING_KEY_MATERIAL")
    first = do_import(admin, ext, material, import_type="NEW_KEY_MATERIAL")
    with pytest.raises(IncorrectKeyMaterial, match="already associated"):
        do_import(admin, ext, material, import_type="NEW_KEY_MATERIAL")
    with pytest.raises(IncorrectKeyMaterial, match="previously imported"):
        do_import(admin, ext, os.urandom(32), import_type="EXISTING_KEY_MATERIAL")
    with pytest.raises(IncorrectKeyMaterial, match="previously imported"):
        do_import(admin, ext, os.urandom(32))  # EXISTING_KEY_MATERIAL is the default once there is material
    with pytest.raises(ValidationError, match="NEW_KEY_MATERIAL"):
        do_import(admin, ext, os.urandom(32), import_type="NEW_KEY_MATERIAL", key_material_id="c" * 64)
    with pytest.raises(IncorrectKeyMaterial, match="KeyMaterialId"):
        do_import(admin, ext, material, key_material_id="b" * 64)
    again = do_import(admin, ext, material, import_type="EXISTING_KEY_MATERIAL", key_material_id=first["KeyMaterialId"])
    assert again == first
    assert KeyMaterial.objects.filter(key=ext).count() == 1


def test_it_refuses_import_into_a_key_pending_deletion_or_not_external(
    admin: Caller, ext: Key, material: bytes, make_key: Callable[..., Key]
) -> None:
    params = parameters(admin, ext)
    svc.key_schedule_deletion(caller=admin, key=ext, pending_window_days=7)
    before = snapshot(ext)
    with one_event("ImportKeyMaterial", admin, keys=[ext], error="KMSInvalidStateException"):
        with pytest.raises(InvalidState):
            svc.key_import_material(
                caller=admin,
                key=fresh(ext),
                import_token=params["ImportToken"],
                encrypted_key_material=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", material),
                **NO_EXPIRY,
            )
    assert snapshot(ext) == before
    native = make_key()
    with one_event("ImportKeyMaterial", admin, keys=[native], error="UnsupportedOperationException"):
        with pytest.raises(UnsupportedOperation):
            svc.key_import_material(
                caller=admin, key=native, import_token=params["ImportToken"], encrypted_key_material=b"x", **NO_EXPIRY
            )


# -- DeleteImportedKeyMaterial ----------------------------------------------------------------


def test_it_deletes_material_keeping_its_version_for_reimport(admin: Caller, ext: Key, material: bytes) -> None:
    first = do_import(admin, ext, material, "RSA_AES_KEY_WRAP_SHA_256")
    blob = svc.key_encrypt(caller=admin, key=fresh(ext), plaintext=b"old", context={"k": "v"}).ciphertext
    with one_event("DeleteImportedKeyMaterial", admin, keys=[ext]) as rec:
        result = svc.key_delete_imported_material(caller=admin, key=fresh(ext))
    assert result == {"KeyId": ext.arn, "KeyMaterialId": first["KeyMaterialId"]}
    assert rec.event is not None and rec.event.additional_event_data == {"keyMaterialId": first["KeyMaterialId"]}
    key = fresh(ext)
    row = KeyMaterial.objects.get(key=key)
    assert (key.state, key.expiration_model, key.valid_to) == (KeyState.PENDING_IMPORT, "", None)
    assert (bytes(row.wrapped), row.root_key_id, row.destroyed_at is not None) == (b"", "", True)
    with pytest.raises(InvalidState):
        svc.key_decrypt(caller=admin, ciphertext=blob, context={"k": "v"})
    with pytest.raises(InvalidState):
        svc.key_enable(caller=admin, key=key)

    do_import(admin, ext, material, "RSAES_OAEP_SHA_1")
    assert svc.key_decrypt(caller=admin, ciphertext=blob, context={"k": "v"}).plaintext == b"old"
    assert KeyMaterial.objects.get(key=ext).destroyed_at is None


def test_it_keeps_a_key_pending_deletion_in_that_state_and_cancel_returns_it_to_pending_import(
    admin: Caller, ext: Key, material: bytes
) -> None:
    do_import(admin, ext, material)
    svc.key_schedule_deletion(caller=admin, key=fresh(ext), pending_window_days=7)
    svc.key_delete_imported_material(caller=admin, key=fresh(ext))
    assert fresh(ext).state == KeyState.PENDING_DELETION
    svc.key_cancel_deletion(caller=admin, key=fresh(ext))
    assert fresh(ext).state == KeyState.PENDING_IMPORT


def test_it_cancels_deletion_of_a_key_with_material_to_disabled(admin: Caller, ext: Key, material: bytes) -> None:
    do_import(admin, ext, material)
    svc.key_schedule_deletion(caller=admin, key=fresh(ext), pending_window_days=7)
    svc.key_cancel_deletion(caller=admin, key=fresh(ext))
    assert fresh(ext).state == KeyState.DISABLED


def test_it_refuses_to_delete_an_unknown_material_id(admin: Caller, ext: Key, material: bytes) -> None:
    do_import(admin, ext, material)
    before = snapshot(ext)
    with one_event("DeleteImportedKeyMaterial", admin, keys=[ext], error="NotFoundException"):
        with pytest.raises(NotFound):
            svc.key_delete_imported_material(caller=admin, key=fresh(ext), key_material_id="c" * 64)
    assert snapshot(ext) == before


def test_it_refuses_rotation_of_imported_material(admin: Caller, ext: Key, material: bytes) -> None:
    do_import(admin, ext, material)
    with one_event("EnableKeyRotation", admin, keys=[ext], error="UnsupportedOperationException"):
        with pytest.raises(UnsupportedOperation):
            svc.key_enable_rotation(caller=admin, key=fresh(ext))
    # On demand, an imported key rotates only to material imported for it first.
    with one_event("RotateKeyOnDemand", admin, keys=[ext], error="KMSInvalidStateException") as rec:
        with pytest.raises(InvalidState, match="No available key material pending rotation for the key: "):
            svc.key_rotate(caller=admin, key=fresh(ext), rotation_type="ON_DEMAND")
    assert rec.event is not None and ext.arn in rec.event.error_message
    assert KeyMaterial.objects.filter(key=ext).count() == 1


def test_it_rotates_on_demand_to_new_imported_material(
    admin: Caller, ext: Key, material: bytes, clock: time_machine.Coordinates
) -> None:
    first = do_import(admin, ext, material, key_material_description="first")
    old_blob = svc.key_encrypt(caller=admin, key=fresh(ext), plaintext=b"old", context=None).ciphertext
    second_material = os.urandom(32)
    valid_to = T0 + timedelta(days=30)
    second = do_import(
        admin,
        ext,
        second_material,
        import_type="NEW_KEY_MATERIAL",
        key_material_description="second",
        expiration_model="KEY_MATERIAL_EXPIRES",
        valid_to=valid_to,
    )
    assert second["KeyMaterialId"] != first["KeyMaterialId"] and len(second["KeyMaterialId"]) == 64
    # Pending rotation: the key still encrypts with the first material, and lists the second as pending.
    key = fresh(ext)
    assert key.current_material is not None and key.current_material.material_id == first["KeyMaterialId"]
    assert svc.key_describe_metadata(key)["CurrentKeyMaterialId"] == first["KeyMaterialId"]
    assert svc.key_list_rotations(caller=admin, key=key)["Rotations"] == []
    everything = svc.key_list_rotations(caller=admin, key=key, include_initial=True)["Rotations"]
    assert [(e["KeyMaterialId"], e["KeyMaterialState"], e["ImportState"]) for e in everything] == [
        (first["KeyMaterialId"], "CURRENT", "IMPORTED"),
        (second["KeyMaterialId"], "PENDING_ROTATION", "IMPORTED"),
    ]
    assert everything[1]["KeyMaterialDescription"] == "second"
    assert (everything[1]["ExpirationModel"], everything[1]["ValidTo"]) == ("KEY_MATERIAL_EXPIRES", valid_to)
    assert "RotationDate" not in everything[1] and "RotationType" not in everything[1]
    assert everything[0]["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE" and "ValidTo" not in everything[0]
    # Only one material may wait for rotation.
    with pytest.raises(InvalidState, match="pending rotation"):
        do_import(admin, ext, os.urandom(32), import_type="NEW_KEY_MATERIAL")

    clock.shift(timedelta(hours=1))
    with one_event("RotateKeyOnDemand", admin, keys=[ext]) as rec:
        svc.key_rotate(caller=admin, key=fresh(ext), rotation_type="ON_DEMAND")
    assert rec.event is not None and rec.event.additional_event_data == {"keyMaterialId": second["KeyMaterialId"]}
    key = fresh(ext)
    assert svc.key_describe_metadata(key)["CurrentKeyMaterialId"] == second["KeyMaterialId"]
    meta = svc.key_describe_metadata(key)
    assert (meta["ExpirationModel"], meta["ValidTo"]) == ("KEY_MATERIAL_EXPIRES", valid_to)
    (rotation,) = svc.key_list_rotations(caller=admin, key=key)["Rotations"]
    assert rotation["KeyMaterialId"] == second["KeyMaterialId"]
    assert (rotation["KeyMaterialState"], rotation["RotationType"]) == ("CURRENT", "ON_DEMAND")
    assert rotation["RotationDate"] == T0 + timedelta(hours=1)
    states = [
        e["KeyMaterialState"] for e in svc.key_list_rotations(caller=admin, key=key, include_initial=True)["Rotations"]
    ]
    assert states == ["NON_CURRENT", "CURRENT"]
    # New ciphertexts use the second material; the first one's still decrypt.
    new_blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"new", context=None).ciphertext
    assert crypto.parse_header(new_blob).version == 2
    assert svc.key_decrypt(caller=admin, ciphertext=old_blob).plaintext == b"old"
    with pytest.raises(InvalidState, match="No available key material pending rotation"):
        svc.key_rotate(caller=admin, key=fresh(ext), rotation_type="ON_DEMAND")


def test_it_deletes_material_pending_rotation_or_by_its_id(admin: Caller, ext: Key, material: bytes) -> None:
    first = do_import(admin, ext, material)
    pending = do_import(admin, ext, os.urandom(32), import_type="NEW_KEY_MATERIAL")
    # Material pending rotation is not bound to the key: deleting it removes it, the key stays Enabled.
    with one_event("DeleteImportedKeyMaterial", admin, keys=[ext]) as rec:
        result = svc.key_delete_imported_material(
            caller=admin, key=fresh(ext), key_material_id=pending["KeyMaterialId"]
        )
    assert result["KeyMaterialId"] == pending["KeyMaterialId"]
    assert rec.event is not None
    assert rec.event.request_parameters == {"keyId": str(ext.id), "keyMaterialId": pending["KeyMaterialId"]}
    assert fresh(ext).state == KeyState.ENABLED
    assert list(KeyMaterial.objects.filter(key=ext).values_list("material_id", flat=True)) == [first["KeyMaterialId"]]
    # Other material may take its place, and become current.
    third_material = os.urandom(32)
    third = do_import(admin, ext, third_material, import_type="NEW_KEY_MATERIAL")
    svc.key_rotate(caller=admin, key=fresh(ext), rotation_type="ON_DEMAND")
    # Without an id, the current material goes; the key waits for it (PendingImport).
    assert svc.key_delete_imported_material(caller=admin, key=fresh(ext))["KeyMaterialId"] == third["KeyMaterialId"]
    key = fresh(ext)
    assert key.state == KeyState.PENDING_IMPORT
    assert [m.destroyed_at is None for m in KeyMaterial.objects.filter(key=ext).order_by("version")] == [True, False]
    entries = svc.key_list_rotations(caller=admin, key=key, include_initial=True)["Rotations"]
    assert [e["ImportState"] for e in entries] == ["IMPORTED", "PENDING_IMPORT"]
    with pytest.raises(NotFound):
        svc.key_delete_imported_material(caller=admin, key=key, key_material_id="d" * 64)
    # Re-importing it makes the key Enabled again.
    do_import(admin, ext, third_material, key_material_id=third["KeyMaterialId"])
    assert fresh(ext).state == KeyState.ENABLED


def test_it_keeps_the_first_material_of_an_asymmetric_imported_key(admin: Caller, make_key: Callable[..., Key]) -> None:
    key = make_key(origin="EXTERNAL", key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY")

    def pkcs8() -> bytes:
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    do_import(admin, key, pkcs8(), "RSA_AES_KEY_WRAP_SHA_256")
    with pytest.raises(UnsupportedOperation):
        do_import(admin, key, pkcs8(), "RSA_AES_KEY_WRAP_SHA_256", import_type="NEW_KEY_MATERIAL")
    event = AuditEvent.objects.latest("id")
    assert (event.event_name, event.error_code) == ("ImportKeyMaterial", "UnsupportedOperationException")
    assert KeyMaterial.objects.filter(key=key).count() == 1


def test_it_records_no_secret_of_an_import_in_the_audit_trail(admin: Caller, ext: Key, material: bytes) -> None:
    do_import(admin, ext, material)
    svc.key_delete_imported_material(caller=admin, key=fresh(ext))
    text = "".join(
        str(e.request_parameters) + str(e.response_elements) + str(e.additional_event_data)
        for e in AuditEvent.objects.all()
    )
    for secret in (material.hex(), material.decode("latin-1")):
        assert secret not in text
    assert "importToken" not in text and "encryptedKeyMaterial" not in text


def test_it_offers_the_expiration_condition_keys_to_policies(
    clock: time_machine.Coordinates, ext: Key, make_persona: Callable[..., Persona], admin: Caller
) -> None:
    """AWS's example: allow imports only with material that expires within 30 days."""
    limit = int((T0 + timedelta(days=30)).timestamp())
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["kms:GetParametersForImport", "kms:DescribeKey"], "Resource": "*"},
                {
                    "Effect": "Allow",
                    "Action": "kms:ImportKeyMaterial",
                    "Resource": "*",
                    "Condition": {
                        "StringEquals": {"kms:ExpirationModel": "KEY_MATERIAL_EXPIRES"},
                        "NumericLessThanEquals": {"kms:ValidTo": str(limit)},
                    },
                },
            ],
        }
    )
    importer = make_persona("importer", policy=policy).caller()
    material = os.urandom(32)
    with pytest.raises(AccessDenied):
        do_import(importer, ext, material)  # does not expire
    with pytest.raises(AccessDenied):
        do_import(importer, ext, material, expiration_model="KEY_MATERIAL_EXPIRES", valid_to=T0 + timedelta(days=31))
    do_import(importer, ext, material, expiration_model="KEY_MATERIAL_EXPIRES", valid_to=T0 + timedelta(days=30))
    assert fresh(ext).state == KeyState.ENABLED
    denials = AuditEvent.objects.filter(event_name="ImportKeyMaterial", error_code="AccessDeniedException")
    assert denials.count() == 2


def test_it_survives_a_root_key_rotation_with_deleted_material_and_open_parameters(
    root_key_file: Any, admin: Caller, make_key: Callable[..., Key]
) -> None:
    kept, dropped = make_key(origin="EXTERNAL"), make_key(origin="EXTERNAL")
    kept_material, dropped_material = os.urandom(32), os.urandom(32)
    do_import(admin, kept, kept_material)
    do_import(admin, dropped, dropped_material)
    kept_blob = svc.key_encrypt(caller=admin, key=fresh(kept), plaintext=b"kept").ciphertext
    dropped_blob = svc.key_encrypt(caller=admin, key=fresh(dropped), plaintext=b"dropped").ciphertext
    svc.key_delete_imported_material(caller=admin, key=fresh(dropped))
    open_params = parameters(admin, dropped)  # made under the old root key

    result = root_key_rotate(caller=Caller.system("tests"), new_key=True)

    assert result["remainingUnderOldKeys"] == 0 and result.get("failed", 0) == 0
    assert bytes(KeyMaterial.objects.get(key=dropped).wrapped) == b""
    assert svc.key_decrypt(caller=admin, ciphertext=kept_blob).plaintext == b"kept"
    svc.key_import_material(
        caller=admin,
        key=fresh(dropped),
        import_token=open_params["ImportToken"],
        encrypted_key_material=wrap(open_params["PublicKey"], "RSAES_OAEP_SHA_256", dropped_material),
        **NO_EXPIRY,
    )
    assert KeyMaterial.objects.get(key=dropped).root_key_id == root_keyring().key_id
    assert svc.key_decrypt(caller=admin, ciphertext=dropped_blob).plaintext == b"dropped"
