"""Imported key material over the wire: boto3 (and the openssl CLI) against a live server.

Material is wrapped on the client side exactly as an AWS user does it: with
``cryptography`` for each wrapping algorithm, and with the ``openssl``
commands from docs/IMPORT.md in a subprocess.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from audit.models import AuditEvent
from keys.models import ImportParameters, Key, KeyMaterial, KeySpec
from tests.importing import ALGORITHMS, openssl_wrap, require_tools, wrap

pytestmark = pytest.mark.django_db(transaction=True)


def external_key(kms: Any) -> str:
    return kms.create_key(Origin="EXTERNAL", Description="imported")["KeyMetadata"]["KeyId"]


def import_material(kms: Any, key_id: str, material: bytes, algorithm: str = "RSAES_OAEP_SHA_256", **extra: Any) -> Any:
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048")
    extra.setdefault("ExpirationModel", "KEY_MATERIAL_DOES_NOT_EXPIRE")
    return kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], algorithm, material),
        **extra,
    )


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_it_creates_an_external_key_pending_import_that_refuses_crypto(kms: Any) -> None:
    meta = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    assert (meta["Origin"], meta["KeyState"], meta["Enabled"]) == ("EXTERNAL", "PendingImport", False)
    assert "CurrentKeyMaterialId" not in meta and "ExpirationModel" not in meta
    with pytest.raises(ClientError) as exc:
        kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")
    assert error_code(exc) == "KMSInvalidStateException"
    with pytest.raises(ClientError) as exc:
        kms.generate_data_key(KeyId=meta["KeyId"], KeySpec="AES_256")
    assert error_code(exc) == "KMSInvalidStateException"
    assert not KeyMaterial.objects.filter(key_id=meta["KeyId"]).exists()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_it_imports_material_wrapped_by_each_algorithm_and_uses_it(kms: Any, algorithm: str) -> None:
    key_id = external_key(kms)
    material = os.urandom(32)
    answer = import_material(kms, key_id, material, algorithm)
    assert answer["KeyId"].endswith(key_id) and len(answer["KeyMaterialId"]) == 64

    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["KeyState"], meta["ExpirationModel"]) == ("Enabled", "KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert "ValidTo" not in meta
    assert meta["CurrentKeyMaterialId"] == answer["KeyMaterialId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"secret", EncryptionContext={"a": "b"})["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "b"})["Plaintext"] == b"secret"
    # The material in use is the one imported: kmsweb's blob is AES-256-GCM
    # under it, so the client can open it locally (header is the AAD).
    from keys.crypto import decrypt

    assert decrypt(material, blob, {"a": "b"}) == b"secret"


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256", "RSAES_OAEP_SHA_1"])
def test_it_imports_material_wrapped_by_the_documented_openssl_commands(
    kms: Any, tmp_path: Path, algorithm: str
) -> None:
    require_tools("openssl")
    key_id = external_key(kms)
    material = os.urandom(32)
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_3072")
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=openssl_wrap(tmp_path, params["PublicKey"], algorithm, material),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"via openssl")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"via openssl"


def test_it_returns_a_der_public_key_of_the_asked_size_valid_24_hours(kms: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    key_id = external_key(kms)
    before = datetime.now(UTC)
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSA_AES_KEY_WRAP_SHA_256", WrappingKeySpec="RSA_4096"
    )
    public = serialization.load_der_public_key(params["PublicKey"])
    assert public.key_size == 4096  # type: ignore[union-attr]
    valid_to = params["ParametersValidTo"]
    assert before + timedelta(hours=24) - timedelta(seconds=5) <= valid_to <= datetime.now(UTC) + timedelta(hours=24)
    row = ImportParameters.objects.get(key_id=key_id)
    # The private half is stored wrapped: it is not a DER private key.
    with pytest.raises(ValueError):
        serialization.load_der_private_key(bytes(row.wrapped_private_key), password=None)
    event = AuditEvent.objects.filter(event_name="GetParametersForImport").get()
    assert event.request_parameters == {
        "keyId": key_id,
        "wrappingAlgorithm": "RSA_AES_KEY_WRAP_SHA_256",
        "wrappingKeySpec": "RSA_4096",
    }
    assert "importToken" not in (event.response_elements or {}) and "publicKey" not in (event.response_elements or {})


def test_it_refuses_pkcs1_v1_5_and_keys_not_external(kms: Any) -> None:
    key_id = external_key(kms)
    with pytest.raises(ClientError) as exc:
        kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_PKCS1_V1_5", WrappingKeySpec="RSA_2048")
    assert error_code(exc) == "UnsupportedOperationException"
    native = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as exc:
        kms.get_parameters_for_import(KeyId=native, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    assert error_code(exc) == "UnsupportedOperationException"
    with pytest.raises(ClientError) as exc:
        kms.delete_imported_key_material(KeyId=native)
    assert error_code(exc) == "UnsupportedOperationException"
    assert not ImportParameters.objects.exists()


def test_it_deletes_material_and_decrypts_old_ciphertext_after_the_same_material_returns(kms: Any) -> None:
    key_id = external_key(kms)
    material = os.urandom(32)
    first = import_material(kms, key_id, material)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"kept")["CiphertextBlob"]

    deleted = kms.delete_imported_key_material(KeyId=key_id)
    assert deleted["KeyMaterialId"] == first["KeyMaterialId"]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    assert bytes(KeyMaterial.objects.get(key_id=key_id).wrapped) == b""
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=blob)
    assert error_code(exc) == "KMSInvalidStateException"

    with pytest.raises(ClientError) as exc:
        import_material(kms, key_id, os.urandom(32))
    assert error_code(exc) == "IncorrectKeyMaterialException"
    assert Key.objects.get(pk=key_id).state == "PendingImport"

    again = import_material(kms, key_id, material, "RSA_AES_KEY_WRAP_SHA_1")
    assert again["KeyMaterialId"] == first["KeyMaterialId"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"


def test_it_sets_an_expiration_and_shows_it(kms: Any) -> None:
    key_id = external_key(kms)
    valid_to = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    import_material(kms, key_id, os.urandom(32), ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["ExpirationModel"], meta["ValidTo"]) == ("KEY_MATERIAL_EXPIRES", valid_to)


def test_it_requires_valid_to_by_default(kms: Any) -> None:
    key_id = external_key(kms)
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    with pytest.raises(ClientError) as exc:
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap(params["PublicKey"], "RSAES_OAEP_SHA_1", os.urandom(32)),
        )
    assert error_code(exc) == "ValidationException"
    assert Key.objects.get(pk=key_id).state == "PendingImport"


def test_it_lists_imported_material_with_its_import_state(kms: Any) -> None:
    key_id = external_key(kms)
    valid_to = (datetime.now(UTC) + timedelta(days=5)).replace(microsecond=0)
    material = os.urandom(32)
    first = import_material(
        kms,
        key_id,
        material,
        ExpirationModel="KEY_MATERIAL_EXPIRES",
        ValidTo=valid_to,
        KeyMaterialDescription="hsm-1 export",
    )
    (entry,) = kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert entry["KeyMaterialId"] == first["KeyMaterialId"]
    assert (entry["ImportState"], entry["KeyMaterialState"], entry["KeyMaterialDescription"]) == (
        "IMPORTED",
        "CURRENT",
        "hsm-1 export",
    )
    assert (entry["ExpirationModel"], entry["ValidTo"]) == ("KEY_MATERIAL_EXPIRES", valid_to)
    kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId=first["KeyMaterialId"])
    (entry,) = kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert entry["ImportState"] == "PENDING_IMPORT" and "ValidTo" not in entry


def test_it_answers_token_and_wrapping_errors_as_modeled_exceptions(kms: Any) -> None:
    key_id, other = external_key(kms), external_key(kms)
    mine = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    theirs = kms.get_parameters_for_import(
        KeyId=other, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    material = os.urandom(32)
    with pytest.raises(kms.exceptions.InvalidImportTokenException):
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=theirs["ImportToken"],
            EncryptedKeyMaterial=wrap(theirs["PublicKey"], "RSAES_OAEP_SHA_256", material),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=mine["ImportToken"],
            EncryptedKeyMaterial=wrap(theirs["PublicKey"], "RSAES_OAEP_SHA_256", material),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    with pytest.raises(kms.exceptions.IncorrectKeyMaterialException):
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=mine["ImportToken"],
            EncryptedKeyMaterial=wrap(mine["PublicKey"], "RSAES_OAEP_SHA_256", material[:16]),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    assert set(Key.objects.filter(pk__in=[key_id, other]).values_list("state", flat=True)) == {"PendingImport"}
    assert not ImportParameters.objects.filter(used_at__isnull=False).exists()
    errors = list(
        AuditEvent.objects.filter(event_name="ImportKeyMaterial").order_by("id").values_list("error_code", flat=True)
    )
    assert errors == ["InvalidImportTokenException", "InvalidCiphertextException", "IncorrectKeyMaterialException"]


def test_it_keeps_another_account_out_of_every_import_operation(
    kms: Any, kms_client: Any, outsider: Any, key_admin: Any
) -> None:
    key_id = external_key(kms)
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    arn = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    theirs = kms_client(outsider)
    calls = [
        lambda: theirs.get_parameters_for_import(
            KeyId=arn, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        ),
        lambda: theirs.import_key_material(
            KeyId=arn,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32)),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        ),
        lambda: theirs.delete_imported_key_material(KeyId=arn),
    ]
    for call in calls:
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == "AccessDeniedException"
    assert Key.objects.get(pk=key_id).state == "PendingImport"
    assert ImportParameters.objects.filter(key_id=key_id).count() == 1
    assert ImportParameters.objects.get(key_id=key_id).used_at is None
    denied = AuditEvent.objects.filter(principal_arn=outsider.principal.arn, error_code="AccessDeniedException")
    assert sorted(denied.values_list("event_name", flat=True)) == [
        "DeleteImportedKeyMaterial",
        "GetParametersForImport",
        "ImportKeyMaterial",
    ]


@pytest.mark.skipif(
    "HMAC_256" not in KeySpec.values,
    reason="HMAC key specs arrive with the asymmetric/HMAC work (branch asym); this runs once they are merged",
)
@pytest.mark.parametrize(("spec", "digest", "size"), [("HMAC_256", "sha256", 32), ("HMAC_512", "sha512", 100)])
def test_it_macs_with_imported_hmac_material_as_python_does(kms: Any, spec: str, digest: str, size: int) -> None:
    import hmac

    key_id = kms.create_key(Origin="EXTERNAL", KeySpec=spec, KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    material = os.urandom(size)
    import_material(kms, key_id, material, "RSAES_OAEP_SHA_256")
    algorithm = f"HMAC_SHA_{spec.split('_')[1]}"
    mac = kms.generate_mac(KeyId=key_id, Message=b"imported", MacAlgorithm=algorithm)["Mac"]
    assert mac == hmac.new(material, b"imported", digest).digest()
    with pytest.raises(ClientError) as exc:
        import_material(kms, key_id, os.urandom(size))
    assert error_code(exc) == "IncorrectKeyMaterialException"


def test_it_signs_with_imported_ecc_material_and_refuses_an_rsa_key_for_it(kms: Any) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    private = ec.generate_private_key(ec.SECP256R1())
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    meta = kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ClientError) as exc:
        import_material(kms, meta["KeyId"], wrong, "RSA_AES_KEY_WRAP_SHA_256")
    assert error_code(exc) == "IncorrectKeyMaterialException"
    import_material(kms, meta["KeyId"], der, "RSA_AES_KEY_WRAP_SHA_256")
    public_der = kms.get_public_key(KeyId=meta["KeyId"])["PublicKey"]
    assert public_der == private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = kms.sign(KeyId=meta["KeyId"], Message=b"imported", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    private.public_key().verify(signature, b"imported", ec.ECDSA(hashes.SHA256()))


def test_it_rotates_on_demand_to_new_imported_material(kms: Any) -> None:
    key_id = external_key(kms)
    first = import_material(kms, key_id, os.urandom(32), KeyMaterialDescription="first")["KeyMaterialId"]
    old = kms.encrypt(KeyId=key_id, Plaintext=b"old")["CiphertextBlob"]
    with pytest.raises(ClientError) as exc:
        kms.rotate_key_on_demand(KeyId=key_id)
    assert error_code(exc) == "KMSInvalidStateException"
    assert "No available key material pending rotation" in exc.value.response["Error"]["Message"]

    second = import_material(
        kms, key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL", KeyMaterialDescription="second"
    )["KeyMaterialId"]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == first
    assert kms.list_key_rotations(KeyId=key_id)["Rotations"] == []
    pending = kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert [(r["KeyMaterialId"], r["KeyMaterialState"]) for r in pending] == [
        (first, "CURRENT"),
        (second, "PENDING_ROTATION"),
    ]
    assert pending[1]["KeyMaterialDescription"] == "second" and pending[1]["ImportState"] == "IMPORTED"

    kms.rotate_key_on_demand(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == second
    (rotation,) = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert (rotation["KeyMaterialId"], rotation["RotationType"], rotation["KeyMaterialState"]) == (
        second,
        "ON_DEMAND",
        "CURRENT",
    )
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"old"

    deleted = kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId=first)
    assert deleted["KeyMaterialId"] == first
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=old)
    assert error_code(exc) == "KMSInvalidStateException"
