"""Encapsulate / Decapsulate with ML-KEM keys and Sign / Verify with Ed25519 keys,
through the services as the API calls them: results, refusals in AWS's order,
and the audit rows (which never hold a shared secret or its ciphertext)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest
from Crypto.PublicKey import MLKEM as pyc_mlkem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from keys import services as svc
from keys.crypto import kem
from keys.models import Key
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    Disabled,
    DryRunOperation,
    InvalidCiphertext,
    InvalidKeyUsage,
    InvalidState,
    KmsInvalidSignature,
    ValidationError,
)
from policies.services.grants import grant_create
from tests.conftest import Persona
from tests.keys.test_services import fresh, one_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(key_admin: Persona) -> Caller:
    return key_admin.caller()


@pytest.fixture
def kem_key(make_key: Callable[..., Key]) -> Key:
    return make_key(key_spec="ML_KEM_768", key_usage="ENCAPSULATE_DECAPSULATE")


@pytest.fixture
def ed_key(make_key: Callable[..., Key]) -> Key:
    return make_key(key_spec="ECC_NIST_EDWARDS25519", key_usage="SIGN_VERIFY")


def test_it_creates_ml_kem_keys_with_aws_metadata(admin: Caller, make_key: Callable[..., Key]) -> None:
    for level in (512, 768, 1024):
        key = make_key(key_spec=f"ML_KEM_{level}", key_usage="ENCAPSULATE_DECAPSULATE")
        meta = svc.key_describe(caller=admin, key=key)
        assert meta["KeySpec"] == f"ML_KEM_{level}" and meta["EncapsulationAlgorithms"] == ["ML_KEM"]
        assert "SigningAlgorithms" not in meta and "CurrentKeyMaterialId" not in meta
        result = svc.key_get_public_key(caller=admin, key=key)
        assert result.metadata["EncapsulationAlgorithms"] == ["ML_KEM"]
        assert len(result.public_key) == 22 + kem.PUBLIC_KEY_LENGTHS[level]
    with pytest.raises(ValidationError):
        make_key(key_spec="ML_KEM_768", key_usage="ENCRYPT_DECRYPT")
    with pytest.raises(ValidationError):
        make_key(key_spec="ECC_NIST_EDWARDS25519", key_usage="KEY_AGREEMENT")


def test_it_encapsulates_and_decapsulates_without_recording_the_secret(admin: Caller, kem_key: Key) -> None:
    with one_event("Encapsulate", admin, keys=[kem_key], read_only=True) as rec:
        result = svc.key_encapsulate(caller=admin, key=kem_key, algorithm="ML_KEM")
    assert len(result.shared_secret) == 32 and len(result.ciphertext) == 1088
    assert rec.event is not None
    assert rec.event.request_parameters == {"keyId": str(kem_key.id), "encapsulationAlgorithm": "ML_KEM"}
    with one_event("Decapsulate", admin, keys=[kem_key], read_only=True) as rec:
        secret, _ = svc.key_decapsulate(caller=admin, key=kem_key, ciphertext=result.ciphertext, algorithm="ML_KEM")
    assert secret == result.shared_secret
    assert rec.event is not None
    recorded = json.dumps([rec.event.request_parameters, rec.event.response_elements, rec.event.additional_event_data])
    assert result.shared_secret.hex() not in recorded and result.shared_secret.hex().upper() not in recorded
    assert "haredSecret" not in recorded


def test_it_decapsulates_a_client_encapsulation(admin: Caller, kem_key: Key) -> None:
    der = svc.key_get_public_key(caller=admin, key=kem_key).public_key
    secret, ciphertext = serialization.load_der_public_key(der).encapsulate()  # type: ignore[union-attr]
    assert svc.key_decapsulate(caller=admin, key=kem_key, ciphertext=ciphertext, algorithm="ML_KEM")[0] == secret
    # Implicit rejection: an altered ciphertext of the right length gives another secret, no error.
    altered = bytes([ciphertext[0] ^ 0xFF]) + ciphertext[1:]
    other, _ = svc.key_decapsulate(caller=admin, key=kem_key, ciphertext=altered, algorithm="ML_KEM")
    assert len(other) == 32 and other != secret


@pytest.mark.parametrize("length", [0, 1087, 1089, 1568])
def test_it_refuses_a_ciphertext_of_the_wrong_length(admin: Caller, kem_key: Key, length: int) -> None:
    with one_event("Decapsulate", admin, keys=[kem_key], error="InvalidCiphertextException"):
        with pytest.raises(InvalidCiphertext):
            svc.key_decapsulate(caller=admin, key=kem_key, ciphertext=b"\x01" * length, algorithm="ML_KEM")


def test_it_refuses_kem_with_the_wrong_key_or_state(
    admin: Caller, kem_key: Key, ed_key: Key, make_key: Callable[..., Key]
) -> None:
    with one_event("Encapsulate", admin, keys=[ed_key], error="InvalidKeyUsageException"):
        with pytest.raises(InvalidKeyUsage):
            svc.key_encapsulate(caller=admin, key=ed_key, algorithm="ML_KEM")
    symmetric = make_key()
    with pytest.raises(InvalidKeyUsage):
        svc.key_decapsulate(caller=admin, key=symmetric, ciphertext=b"\x00" * 1088, algorithm="ML_KEM")
    with pytest.raises(DryRunOperation):
        svc.key_encapsulate(caller=admin, key=kem_key, algorithm="ML_KEM", dry_run=True)
    # A disabled key answers DisabledException before the ciphertext is looked at.
    svc.key_disable(caller=admin, key=kem_key)
    kem_key = fresh(kem_key)
    with one_event("Decapsulate", admin, keys=[kem_key], error="DisabledException"):
        with pytest.raises(Disabled):
            svc.key_decapsulate(caller=admin, key=kem_key, ciphertext=b"short", algorithm="ML_KEM")
    with pytest.raises(Disabled):
        svc.key_encapsulate(caller=admin, key=kem_key, algorithm="ML_KEM")
    svc.key_schedule_deletion(caller=admin, key=kem_key, pending_window_days=7)
    kem_key = fresh(kem_key)
    with pytest.raises(InvalidState):
        svc.key_encapsulate(caller=admin, key=kem_key, algorithm="ML_KEM")


def test_it_signs_and_verifies_with_ed25519(admin: Caller, ed_key: Key) -> None:
    meta = svc.key_describe(caller=admin, key=ed_key)
    assert meta["SigningAlgorithms"] == ["ED25519_SHA_512", "ED25519_PH_SHA_512"]
    der = svc.key_get_public_key(caller=admin, key=ed_key).public_key
    public = serialization.load_der_public_key(der)
    signature, _ = svc.key_sign(caller=admin, key=ed_key, message=b"pay 10", algorithm="ED25519_SHA_512")
    public.verify(signature, b"pay 10")  # type: ignore[call-arg, union-attr]
    svc.key_verify(caller=admin, key=ed_key, message=b"pay 10", signature=signature, algorithm="ED25519_SHA_512")
    with pytest.raises(KmsInvalidSignature):
        svc.key_verify(caller=admin, key=ed_key, message=b"pay 99", signature=signature, algorithm="ED25519_SHA_512")
    digest = hashlib.sha512(b"a large document").digest()
    ph, _ = svc.key_sign(
        caller=admin, key=ed_key, message=digest, algorithm="ED25519_PH_SHA_512", message_type="DIGEST"
    )
    svc.key_verify(
        caller=admin,
        key=ed_key,
        message=digest,
        signature=ph,
        algorithm="ED25519_PH_SHA_512",
        message_type="DIGEST",
    )
    with pytest.raises(KmsInvalidSignature):
        svc.key_verify(
            caller=admin,
            key=ed_key,
            message=digest,
            signature=signature,
            algorithm="ED25519_PH_SHA_512",
            message_type="DIGEST",
        )


@pytest.mark.parametrize(
    ("algorithm", "message_type", "length"),
    [
        ("ED25519_SHA_512", "DIGEST", 64),
        ("ED25519_SHA_512", "EXTERNAL_MU", 64),
        ("ED25519_PH_SHA_512", "RAW", 64),
        ("ED25519_PH_SHA_512", "DIGEST", 32),
        ("ED25519_PH_SHA_512", "EXTERNAL_MU", 64),
    ],
)
def test_it_refuses_the_combinations_aws_refuses(
    admin: Caller, ed_key: Key, algorithm: str, message_type: str, length: int
) -> None:
    with one_event("Sign", admin, keys=[ed_key], error="ValidationException"):
        with pytest.raises(ValidationError):
            svc.key_sign(
                caller=admin, key=ed_key, message=b"m" * length, algorithm=algorithm, message_type=message_type
            )


def test_it_refuses_ed25519_algorithms_on_other_keys(admin: Caller, make_key: Callable[..., Key], ed_key: Key) -> None:
    ecdsa = make_key(key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY")
    with pytest.raises(InvalidKeyUsage):
        svc.key_sign(caller=admin, key=ecdsa, message=b"m", algorithm="ED25519_SHA_512")
    with pytest.raises(InvalidKeyUsage):
        svc.key_sign(caller=admin, key=ed_key, message=b"m", algorithm="ECDSA_SHA_256")


@pytest.mark.parametrize("pair_spec", ["ECC_NIST_EDWARDS25519", "ML_KEM_512"])
def test_it_generates_data_key_pairs_of_the_new_specs(
    admin: Caller, make_key: Callable[..., Key], pair_spec: str
) -> None:
    wrapping = make_key()
    result = svc.key_generate_data_key_pair(caller=admin, key=wrapping, key_pair_spec=pair_spec)
    assert result.private_key_plaintext is not None
    decrypted = svc.key_decrypt(caller=admin, ciphertext=result.private_key_ciphertext).plaintext
    assert decrypted == result.private_key_plaintext
    if pair_spec == "ML_KEM_512":
        private = pyc_mlkem.import_key(result.private_key_plaintext)
        assert private.public_key().export_key(format="DER") == result.public_key
        assert len(private.seed) == 64
    else:
        loaded = serialization.load_der_private_key(result.private_key_plaintext, password=None)
        assert isinstance(loaded, ed25519.Ed25519PrivateKey)
        derived = loaded.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert derived == result.public_key


def test_it_grants_the_ml_kem_operations_and_only_those(admin: Caller, kem_key: Key, outsider: Persona) -> None:
    grant, _ = grant_create(
        caller=admin,
        key=kem_key,
        grantee_principal=outsider.principal.arn,
        operations=["Encapsulate", "Decapsulate", "GetPublicKey", "DescribeKey"],
    )
    assert sorted(grant.operations) == ["Decapsulate", "DescribeKey", "Encapsulate", "GetPublicKey"]
    with pytest.raises(ValidationError, match="Sign"):
        grant_create(caller=admin, key=kem_key, grantee_principal=outsider.principal.arn, operations=["Sign"])
    # The grantee, from another account, encapsulates and decapsulates with the key.
    other = outsider.caller()
    made = svc.key_encapsulate(caller=other, key=kem_key, algorithm="ML_KEM")
    assert svc.key_decapsulate(caller=other, key=kem_key, ciphertext=made.ciphertext, algorithm="ML_KEM")[0] == (
        made.shared_secret
    )
