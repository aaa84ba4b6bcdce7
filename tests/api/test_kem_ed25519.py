"""boto3 against a live kmsweb: ML-KEM keys (Encapsulate / Decapsulate) and
Ed25519 signing keys, each checked outside kmsweb with ``cryptography`` and
the key GetPublicKey returns. One key per test; the slow part is the server."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def test_it_agrees_on_ml_kem_secrets_with_a_client(kms: Any) -> None:
    key_id = kms.create_key(KeySpec="ML_KEM_768", KeyUsage="ENCAPSULATE_DECAPSULATE")["KeyMetadata"]["KeyId"]
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyUsage"] == "ENCAPSULATE_DECAPSULATE" and meta["EncapsulationAlgorithms"] == ["ML_KEM"]
    answer = kms.get_public_key(KeyId=key_id)
    assert answer["KeySpec"] == "ML_KEM_768" and answer["EncapsulationAlgorithms"] == ["ML_KEM"]
    public = serialization.load_der_public_key(answer["PublicKey"])
    assert isinstance(public, mlkem.MLKEM768PublicKey)

    # The client encapsulates with the public key; kmsweb decapsulates the same secret.
    secret, ciphertext = public.encapsulate()
    got = kms.decapsulate(KeyId=key_id, SharedSecretCiphertextBlob=ciphertext, EncapsulationAlgorithm="ML_KEM")
    assert got["SharedSecret"] == secret and got["KeyId"].endswith(key_id)

    # kmsweb encapsulates; its ciphertext is an ML-KEM-768 ciphertext that decapsulates to its secret.
    made = kms.encapsulate(KeyId=key_id, EncapsulationAlgorithm="ML_KEM")
    assert len(made["SharedSecret"]) == 32 and len(made["SharedSecretCiphertextBlob"]) == 1088
    assert made["EncapsulationAlgorithm"] == "ML_KEM"
    again = kms.decapsulate(
        KeyId=key_id, SharedSecretCiphertextBlob=made["SharedSecretCiphertextBlob"], EncapsulationAlgorithm="ML_KEM"
    )
    assert again["SharedSecret"] == made["SharedSecret"]

    # Implicit rejection: a changed ciphertext of the right length is answered, with another secret.
    changed = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    other = kms.decapsulate(KeyId=key_id, SharedSecretCiphertextBlob=changed, EncapsulationAlgorithm="ML_KEM")
    assert len(other["SharedSecret"]) == 32 and other["SharedSecret"] != secret

    with pytest.raises(ClientError) as exc:
        kms.decapsulate(KeyId=key_id, SharedSecretCiphertextBlob=ciphertext[:-1], EncapsulationAlgorithm="ML_KEM")
    assert error_code(exc) == "InvalidCiphertextException"

    # No shared secret nor ciphertext in the audit trail.
    events = AuditEvent.objects.filter(event_name__in=["Encapsulate", "Decapsulate"])
    assert events.count() == 5
    recorded = json.dumps(
        [[e.request_parameters, e.response_elements, e.additional_event_data] for e in events], default=str
    )
    for value in (secret, made["SharedSecret"], ciphertext[:32]):
        assert value.hex() not in recorded.lower()
    assert "sharedSecret" not in recorded

    kms.disable_key(KeyId=key_id)
    with pytest.raises(ClientError) as exc:
        kms.decapsulate(KeyId=key_id, SharedSecretCiphertextBlob=b"x", EncapsulationAlgorithm="ML_KEM")
    assert error_code(exc) == "DisabledException"


def test_it_signs_with_ed25519_as_clients_verify(kms: Any) -> None:
    key_id = kms.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    answer = kms.get_public_key(KeyId=key_id)
    assert answer["SigningAlgorithms"] == ["ED25519_SHA_512", "ED25519_PH_SHA_512"]
    public = serialization.load_der_public_key(answer["PublicKey"])
    assert isinstance(public, ed25519.Ed25519PublicKey)

    signed = kms.sign(KeyId=key_id, Message=b"pay 100", SigningAlgorithm="ED25519_SHA_512", MessageType="RAW")
    public.verify(signed["Signature"], b"pay 100")
    assert kms.verify(
        KeyId=key_id, Message=b"pay 100", Signature=signed["Signature"], SigningAlgorithm="ED25519_SHA_512"
    )["SignatureValid"]

    digest = hashlib.sha512(b"a long document").digest()
    ph = kms.sign(KeyId=key_id, Message=digest, SigningAlgorithm="ED25519_PH_SHA_512", MessageType="DIGEST")
    assert kms.verify(
        KeyId=key_id,
        Message=digest,
        MessageType="DIGEST",
        Signature=ph["Signature"],
        SigningAlgorithm="ED25519_PH_SHA_512",
    )["SignatureValid"]

    for algorithm, message_type in (("ED25519_SHA_512", "DIGEST"), ("ED25519_PH_SHA_512", "RAW")):
        with pytest.raises(ClientError) as exc:
            kms.sign(KeyId=key_id, Message=digest, SigningAlgorithm=algorithm, MessageType=message_type)
        assert error_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        kms.encapsulate(KeyId=key_id, EncapsulationAlgorithm="ML_KEM")
    assert error_code(exc) == "InvalidKeyUsageException"
    with pytest.raises(ClientError) as exc:
        kms.verify(KeyId=key_id, Message=b"pay 999", Signature=signed["Signature"], SigningAlgorithm="ED25519_SHA_512")
    assert error_code(exc) == "KMSInvalidSignatureException"
