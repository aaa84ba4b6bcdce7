"""boto3 against a live kmsweb: asymmetric, HMAC and key agreement keys.

Every signature kmsweb makes is checked outside kmsweb too: with
``cryptography`` and the key from GetPublicKey, and with ``openssl`` in a
subprocess. Key generation is the slow part (RSA 4096 most), so each test
makes one key of its spec and runs every algorithm and message type on it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, padding, utils

from audit.models import AuditEvent
from keys.models import Key, KeyMaterial
from keys.services.material import material_unwrap

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = b"pay 100 to alice"
RSA_ALGORITHMS = [f"RSASSA_{kind}_SHA_{bits}" for kind in ("PSS", "PKCS1_V1_5") for bits in (256, 384, 512)]
ECC_SPECS = {
    "ECC_NIST_P256": ("ECDSA_SHA_256", "sha256"),
    "ECC_NIST_P384": ("ECDSA_SHA_384", "sha384"),
    "ECC_NIST_P521": ("ECDSA_SHA_512", "sha512"),
    "ECC_SECG_P256K1": ("ECDSA_SHA_256", "sha256"),
}
HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def new_key(kms: Any, spec: str, usage: str) -> str:
    return kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def last_event(name: str) -> AuditEvent:
    event = AuditEvent.objects.filter(event_name=name).order_by("-id").first()
    assert event is not None, f"no {name} event"
    return event


def refused(kms: Any, operation: str, code: str, **params: Any) -> AuditEvent:
    """Call ``operation``, expect AWS error ``code``, and return its one audit event."""
    before = AuditEvent.objects.count()
    with pytest.raises(ClientError) as exc:
        getattr(kms, operation)(**params)
    assert error_code(exc) == code, exc.value.response["Error"]
    events = list(AuditEvent.objects.order_by("id")[before:])
    assert len(events) == 1
    assert events[0].error_code == code
    return events[0]


def openssl_verify(tmp_path: Path, public_der: bytes, digest: str, message: bytes, signature: bytes) -> None:
    """``openssl dgst -<digest> -verify`` (plus PSS options when asked through ``digest``)."""
    pem = tmp_path / "public.pem"
    pem.write_text(
        serialization.load_der_public_key(public_der)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    (tmp_path / "message").write_bytes(message)
    (tmp_path / "signature").write_bytes(signature)
    name, _, pss = digest.partition("+")
    cmd = ["openssl", "dgst", f"-{name}", "-verify", str(pem), "-signature", str(tmp_path / "signature")]
    if pss:
        cmd += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
    out = subprocess.run([*cmd, str(tmp_path / "message")], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "Verified OK" in out.stdout, out.stdout + out.stderr


# --- signatures -------------------------------------------------------------------


@needs_openssl
@pytest.mark.parametrize("spec", ["RSA_2048", "RSA_3072", "RSA_4096"])
def test_it_signs_with_every_rsa_algorithm_verifiably_outside_kmsweb(kms, spec: str, tmp_path: Path) -> None:
    key_id = new_key(kms, spec, "SIGN_VERIFY")
    info = kms.get_public_key(KeyId=key_id)
    assert info["SigningAlgorithms"] == sorted(RSA_ALGORITHMS, key=RSA_ALGORITHMS.index)
    public = serialization.load_der_public_key(info["PublicKey"])
    assert public.key_size == int(spec[4:])
    for algorithm in RSA_ALGORITHMS:
        bits = algorithm[-3:]
        digest = hashlib.new(f"sha{bits}", MESSAGE).digest()
        pss = "PSS" in algorithm
        pad = padding.PSS(mgf=padding.MGF1(HASHES[bits]()), salt_length=int(bits) // 8) if pss else padding.PKCS1v15()
        for message_type, message in (("RAW", MESSAGE), ("DIGEST", digest)):
            signed = kms.sign(KeyId=key_id, Message=message, MessageType=message_type, SigningAlgorithm=algorithm)
            assert signed["SigningAlgorithm"] == algorithm
            signature = signed["Signature"]
            # A RAW signature and a DIGEST signature of the same message are interchangeable.
            public.verify(signature, MESSAGE, pad, HASHES[bits]())
            for other_type, other in (("RAW", MESSAGE), ("DIGEST", digest)):
                assert kms.verify(
                    KeyId=key_id, Message=other, MessageType=other_type, Signature=signature, SigningAlgorithm=algorithm
                )["SignatureValid"]
        openssl_verify(tmp_path, info["PublicKey"], f"sha{bits}" + ("+pss" if pss else ""), MESSAGE, signature)


@needs_openssl
@pytest.mark.parametrize("spec", list(ECC_SPECS))
def test_it_signs_with_ecdsa_on_every_curve_verifiably_outside_kmsweb(kms, spec: str, tmp_path: Path) -> None:
    algorithm, digest_name = ECC_SPECS[spec]
    key_id = new_key(kms, spec, "SIGN_VERIFY")
    info = kms.get_public_key(KeyId=key_id)
    assert info["KeySpec"] == spec and info["KeyUsage"] == "SIGN_VERIFY"
    assert info["SigningAlgorithms"] == [algorithm]
    public = serialization.load_der_public_key(info["PublicKey"])
    digest = hashlib.new(digest_name, MESSAGE).digest()
    chosen = HASHES[algorithm[-3:]]()
    for message_type, message in (("RAW", MESSAGE), ("DIGEST", digest)):
        signature = kms.sign(KeyId=key_id, Message=message, MessageType=message_type, SigningAlgorithm=algorithm)[
            "Signature"
        ]
        public.verify(signature, digest, ec.ECDSA(utils.Prehashed(chosen)))
        assert kms.verify(KeyId=key_id, Message=MESSAGE, Signature=signature, SigningAlgorithm=algorithm)[
            "SignatureValid"
        ]
        openssl_verify(tmp_path, info["PublicKey"], digest_name, MESSAGE, signature)


@pytest.mark.parametrize("level", [44, 65, 87])
def test_it_signs_with_ml_dsa_raw_and_external_mu(kms, level: int) -> None:
    key_id = new_key(kms, f"ML_DSA_{level}", "SIGN_VERIFY")
    info = kms.get_public_key(KeyId=key_id)
    assert info["SigningAlgorithms"] == ["ML_DSA_SHAKE_256"]
    public = serialization.load_der_public_key(info["PublicKey"])
    assert isinstance(public, getattr(mldsa, f"MLDSA{level}PublicKey"))
    raw = kms.sign(KeyId=key_id, Message=MESSAGE, SigningAlgorithm="ML_DSA_SHAKE_256")["Signature"]
    public.verify(raw, MESSAGE)
    hasher = mldsa.MLDSAMuHasher(public)
    hasher.update(MESSAGE)
    mu = hasher.finalize()
    signed_mu = kms.sign(KeyId=key_id, Message=mu, MessageType="EXTERNAL_MU", SigningAlgorithm="ML_DSA_SHAKE_256")
    public.verify(signed_mu["Signature"], MESSAGE)
    assert kms.verify(
        KeyId=key_id, Message=mu, MessageType="EXTERNAL_MU", Signature=raw, SigningAlgorithm="ML_DSA_SHAKE_256"
    )["SignatureValid"]
    refused(
        kms,
        "sign",
        "ValidationException",
        KeyId=key_id,
        Message=mu[:32],
        MessageType="EXTERNAL_MU",
        SigningAlgorithm="ML_DSA_SHAKE_256",
    )
    refused(
        kms,
        "sign",
        "ValidationException",
        KeyId=key_id,
        Message=hashlib.sha256(MESSAGE).digest(),
        MessageType="DIGEST",
        SigningAlgorithm="ML_DSA_SHAKE_256",
    )


def test_it_refuses_bad_signing_requests_with_aws_errors_and_audits_them(kms) -> None:
    key_id = new_key(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    good = kms.sign(KeyId=key_id, Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_256")["Signature"]

    event = refused(
        kms, "sign", "InvalidKeyUsageException", KeyId=key_id, Message=MESSAGE, SigningAlgorithm="RSASSA_PSS_SHA_256"
    )
    assert event.request_parameters["signingAlgorithm"] == "RSASSA_PSS_SHA_256"
    refused(kms, "sign", "InvalidKeyUsageException", KeyId=key_id, Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_384")
    refused(kms, "sign", "ValidationException", KeyId=key_id, Message=b"x" * 4097, SigningAlgorithm="ECDSA_SHA_256")
    event = refused(
        kms,
        "sign",
        "ValidationException",
        KeyId=key_id,
        Message=b"x" * 31,
        MessageType="DIGEST",
        SigningAlgorithm="ECDSA_SHA_256",
    )
    assert event.error_message == "Digest is invalid length for algorithm ECDSA_SHA_256."
    refused(
        kms,
        "sign",
        "ValidationException",
        KeyId=key_id,
        Message=b"x" * 64,
        MessageType="EXTERNAL_MU",
        SigningAlgorithm="ECDSA_SHA_256",
    )

    tampered = bytearray(good)
    tampered[-1] ^= 0x01
    event = refused(
        kms,
        "verify",
        "KMSInvalidSignatureException",
        KeyId=key_id,
        Message=MESSAGE,
        Signature=bytes(tampered),
        SigningAlgorithm="ECDSA_SHA_256",
    )
    assert "signature" not in event.request_parameters
    refused(
        kms,
        "verify",
        "KMSInvalidSignatureException",
        KeyId=key_id,
        Message=b"pay 999 to mallory",
        Signature=good,
        SigningAlgorithm="ECDSA_SHA_256",
    )
    refused(
        kms,
        "verify",
        "KMSInvalidSignatureException",
        KeyId=key_id,
        Message=b"not DER",
        Signature=b"\x00" * 8,
        SigningAlgorithm="ECDSA_SHA_256",
    )

    # Keys of other usages do not sign; signing keys do not encrypt or make data keys.
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    refused(kms, "sign", "InvalidKeyUsageException", KeyId=symmetric, Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_256")
    refused(kms, "encrypt", "InvalidKeyUsageException", KeyId=key_id, Plaintext=b"secret")
    refused(kms, "generate_data_key", "InvalidKeyUsageException", KeyId=key_id, KeySpec="AES_256")
    refused(kms, "get_public_key", "UnsupportedOperationException", KeyId=symmetric)


def test_it_records_the_algorithm_and_message_type_of_a_signature_but_never_the_message(kms) -> None:
    key_id = new_key(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    signature = kms.sign(KeyId=key_id, Message=b"do-not-log-me", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    kms.verify(KeyId=key_id, Message=b"do-not-log-me", Signature=signature, SigningAlgorithm="ECDSA_SHA_256")
    for name in ("Sign", "Verify"):
        event = last_event(name)
        assert event.error_code == "" and event.key_id == key_id
        assert event.request_parameters == {
            "keyId": key_id,
            "signingAlgorithm": "ECDSA_SHA_256",
            "messageType": "RAW",
        }
        stored = json.dumps([event.request_parameters, event.response_elements, event.additional_event_data])
        assert "do-not-log-me" not in stored and "ZG8tbm90LWxvZy1tZQ" not in stored


# --- asymmetric encryption ---------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "limits"), [("RSA_2048", (214, 190)), ("RSA_3072", (342, 318)), ("RSA_4096", (470, 446))]
)
def test_it_encrypts_with_rsa_oaep_up_to_the_spec_limit(kms, spec: str, limits: tuple[int, int]) -> None:
    key_id = new_key(kms, spec, "ENCRYPT_DECRYPT")
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    assert "CurrentKeyMaterialId" not in meta
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    for algorithm, limit, digest in zip(
        ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"), limits, (hashes.SHA1, hashes.SHA256), strict=True
    ):
        plaintext = bytes(range(256)) * 2
        plaintext = plaintext[:limit]
        blob = kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionAlgorithm=algorithm)["CiphertextBlob"]
        assert len(blob) == public.key_size // 8
        out = kms.decrypt(KeyId=key_id, CiphertextBlob=blob, EncryptionAlgorithm=algorithm)
        assert out["Plaintext"] == plaintext and out["EncryptionAlgorithm"] == algorithm
        # A ciphertext made locally with the public key decrypts in kmsweb.
        oaep = padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None)
        local = public.encrypt(b"made outside", oaep)
        assert kms.decrypt(KeyId=key_id, CiphertextBlob=local, EncryptionAlgorithm=algorithm)["Plaintext"] == (
            b"made outside"
        )
        refused(
            kms,
            "encrypt",
            "ValidationException",
            KeyId=key_id,
            Plaintext=b"x" * (limit + 1),
            EncryptionAlgorithm=algorithm,
        )


def test_it_refuses_asymmetric_decryption_without_the_key_or_the_algorithm(kms) -> None:
    key_id = new_key(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"secret", EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"]
    refused(kms, "decrypt", "InvalidCiphertextException", CiphertextBlob=blob)
    refused(kms, "decrypt", "InvalidCiphertextException", CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    refused(kms, "decrypt", "InvalidKeyUsageException", KeyId=key_id, CiphertextBlob=blob)
    refused(
        kms,
        "decrypt",
        "InvalidCiphertextException",
        KeyId=key_id,
        CiphertextBlob=blob,
        EncryptionAlgorithm="RSAES_OAEP_SHA_1",
    )
    refused(kms, "encrypt", "InvalidKeyUsageException", KeyId=key_id, Plaintext=b"secret")
    refused(
        kms,
        "encrypt",
        "ValidationException",
        KeyId=key_id,
        Plaintext=b"secret",
        EncryptionAlgorithm="RSAES_OAEP_SHA_256",
        EncryptionContext={"a": "b"},
    )
    refused(kms, "generate_data_key", "InvalidKeyUsageException", KeyId=key_id, KeySpec="AES_256")


# --- MACs ----------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [224, 256, 384, 512])
def test_it_generates_and_verifies_macs(kms, bits: int) -> None:
    key_id = new_key(kms, f"HMAC_{bits}", "GENERATE_VERIFY_MAC")
    algorithm = f"HMAC_SHA_{bits}"
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["MacAlgorithms"] == [algorithm] and "EncryptionAlgorithms" not in meta
    mac = kms.generate_mac(KeyId=key_id, Message=MESSAGE, MacAlgorithm=algorithm)["Mac"]
    assert len(mac) == bits // 8
    # The MAC is HMAC over the stored material, as Python's hmac computes it.
    material = material_unwrap(Key.objects.get(pk=key_id).current_material)
    assert len(material) == bits // 8
    assert mac == hmac.new(material, MESSAGE, f"sha{bits}").digest()
    assert kms.verify_mac(KeyId=key_id, Message=MESSAGE, Mac=mac, MacAlgorithm=algorithm)["MacValid"]
    refused(
        kms, "verify_mac", "KMSInvalidMacException", KeyId=key_id, Message=b"other", Mac=mac, MacAlgorithm=algorithm
    )
    other = "HMAC_SHA_256" if bits != 256 else "HMAC_SHA_512"
    refused(kms, "generate_mac", "InvalidKeyUsageException", KeyId=key_id, Message=MESSAGE, MacAlgorithm=other)


def test_it_refuses_macs_on_keys_of_other_usages(kms) -> None:
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    event = refused(
        kms, "generate_mac", "InvalidKeyUsageException", KeyId=symmetric, Message=MESSAGE, MacAlgorithm="HMAC_SHA_256"
    )
    assert "ENCRYPT_DECRYPT" in event.error_message and "message" not in event.request_parameters
    hmac_key = new_key(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    refused(kms, "encrypt", "InvalidKeyUsageException", KeyId=hmac_key, Plaintext=b"secret")
    refused(kms, "sign", "InvalidKeyUsageException", KeyId=hmac_key, Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_256")


# --- key agreement -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "curve"),
    [("ECC_NIST_P256", ec.SECP256R1), ("ECC_NIST_P384", ec.SECP384R1), ("ECC_NIST_P521", ec.SECP521R1)],
)
def test_it_derives_the_ecdh_shared_secret_the_peer_computes(kms, spec: str, curve: Any) -> None:
    key_id = new_key(kms, spec, "KEY_AGREEMENT")
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyAgreementAlgorithms"] == ["ECDH"] and "SigningAlgorithms" not in meta
    peer = ec.generate_private_key(curve())
    peer_der = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    out = kms.derive_shared_secret(KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=peer_der)
    kms_public = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    assert out["SharedSecret"] == peer.exchange(ec.ECDH(), kms_public)
    assert out["KeyAgreementAlgorithm"] == "ECDH" and out["KeyOrigin"] == "AWS_KMS"
    event = last_event("DeriveSharedSecret")
    assert event.request_parameters == {"keyId": key_id, "keyAgreementAlgorithm": "ECDH"}
    other_curve = ec.SECP384R1() if spec != "ECC_NIST_P384" else ec.SECP256R1()
    stranger = (
        ec.generate_private_key(other_curve)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    refused(
        kms,
        "derive_shared_secret",
        "ValidationException",
        KeyId=key_id,
        KeyAgreementAlgorithm="ECDH",
        PublicKey=stranger,
    )
    refused(
        kms,
        "derive_shared_secret",
        "ValidationException",
        KeyId=key_id,
        KeyAgreementAlgorithm="ECDH",
        PublicKey=b"not a key",
    )
    refused(kms, "sign", "InvalidKeyUsageException", KeyId=key_id, Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_256")


# --- data key pairs ------------------------------------------------------------------


@pytest.mark.parametrize(
    "pair_spec",
    ["RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1"],
)
def test_it_generates_data_key_pairs_whose_private_key_decrypts_and_matches(kms, pair_spec: str) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    context = {"purpose": "pairs"}
    out = kms.generate_data_key_pair(KeyId=key_id, KeyPairSpec=pair_spec, EncryptionContext=context)
    assert out["KeyPairSpec"] == pair_spec and out["KeyId"].endswith(key_id)
    private = serialization.load_der_private_key(out["PrivateKeyPlaintext"], password=None)
    assert (
        private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        == out["PublicKey"]
    )
    opened = kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"], EncryptionContext=context)
    assert opened["Plaintext"] == out["PrivateKeyPlaintext"]
    refused(kms, "decrypt", "InvalidCiphertextException", CiphertextBlob=out["PrivateKeyCiphertextBlob"])
    event = last_event("GenerateDataKeyPair")
    assert event.request_parameters["keyPairSpec"] == pair_spec
    assert "privateKeyPlaintext" not in json.dumps(event.response_elements or {})


def test_it_generates_a_data_key_pair_without_plaintext_only_under_a_symmetric_key(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    out = kms.generate_data_key_pair_without_plaintext(KeyId=key_id, KeyPairSpec="ECC_NIST_P256")
    assert "PrivateKeyPlaintext" not in out
    private = serialization.load_der_private_key(
        kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"])["Plaintext"], password=None
    )
    assert (
        private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        == out["PublicKey"]
    )
    signing = new_key(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    refused(kms, "generate_data_key_pair", "InvalidKeyUsageException", KeyId=signing, KeyPairSpec="ECC_NIST_P256")
    refused(kms, "generate_data_key_pair", "UnsupportedOperationException", KeyId=key_id, KeyPairSpec="SM2")


# --- key creation, metadata and rotation ---------------------------------------------


def test_it_describes_every_kind_of_key_with_the_fields_aws_returns(kms) -> None:
    cases = {
        ("RSA_2048", "SIGN_VERIFY"): ("SigningAlgorithms", RSA_ALGORITHMS),
        ("ECC_NIST_P384", "SIGN_VERIFY"): ("SigningAlgorithms", ["ECDSA_SHA_384"]),
        ("ECC_NIST_P521", "KEY_AGREEMENT"): ("KeyAgreementAlgorithms", ["ECDH"]),
        ("HMAC_384", "GENERATE_VERIFY_MAC"): ("MacAlgorithms", ["HMAC_SHA_384"]),
        ("ML_DSA_65", "SIGN_VERIFY"): ("SigningAlgorithms", ["ML_DSA_SHAKE_256"]),
    }
    lists = {"EncryptionAlgorithms", "SigningAlgorithms", "MacAlgorithms", "KeyAgreementAlgorithms"}
    for (spec, usage), (field, values) in cases.items():
        created = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
        described = kms.describe_key(KeyId=created["KeyId"])["KeyMetadata"]
        for meta in (created, described):
            assert meta["KeySpec"] == meta["CustomerMasterKeySpec"] == spec
            assert meta["KeyUsage"] == usage and meta["Origin"] == "AWS_KMS" and meta["KeyManager"] == "CUSTOMER"
            assert sorted(meta[field]) == sorted(values)
            assert not (lists - {field}) & set(meta), meta
            assert "CurrentKeyMaterialId" not in meta and "ExpirationModel" not in meta
        material = KeyMaterial.objects.get(key_id=created["KeyId"])
        if spec.startswith("HMAC"):
            assert material.public_key is None
        else:
            assert bytes(material.public_key) == kms.get_public_key(KeyId=created["KeyId"])["PublicKey"]
            # The private key is stored wrapped, never as DER in the clear.
            assert b"\x30\x82" not in bytes(material.wrapped)[:2]


@pytest.mark.parametrize(
    ("spec", "usage", "message"),
    [
        ("RSA_2048", "GENERATE_VERIFY_MAC", "KeyUsage GENERATE_VERIFY_MAC is not compatible with KeySpec RSA_2048"),
        ("ECC_NIST_P256", "ENCRYPT_DECRYPT", "KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec ECC_NIST_P256"),
        ("ECC_SECG_P256K1", "KEY_AGREEMENT", "KeyUsage KEY_AGREEMENT is not compatible with KeySpec ECC_SECG_P256K1"),
        ("HMAC_256", "SIGN_VERIFY", "KeyUsage SIGN_VERIFY is not compatible with KeySpec HMAC_256"),
        ("ML_DSA_44", "ENCRYPT_DECRYPT", "KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec ML_DSA_44"),
        ("SYMMETRIC_DEFAULT", "SIGN_VERIFY", "KeyUsage SIGN_VERIFY is not compatible with KeySpec SYMMETRIC_DEFAULT"),
        ("RSA_2048", None, "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."),
    ],
)
def test_it_refuses_a_key_spec_with_a_usage_it_does_not_support(
    kms, spec: str, usage: str | None, message: str
) -> None:
    params = {"KeySpec": spec, **({"KeyUsage": usage} if usage else {})}
    before = Key.objects.count()
    event = refused(kms, "create_key", "ValidationException", **params)
    assert event.error_message == message
    assert Key.objects.count() == before


def test_it_refuses_rotation_of_asymmetric_and_hmac_keys(kms) -> None:
    for spec, usage in (("RSA_2048", "ENCRYPT_DECRYPT"), ("HMAC_256", "GENERATE_VERIFY_MAC")):
        key_id = new_key(kms, spec, usage)
        refused(kms, "enable_key_rotation", "UnsupportedOperationException", KeyId=key_id)
        refused(kms, "rotate_key_on_demand", "UnsupportedOperationException", KeyId=key_id)
        refused(kms, "disable_key_rotation", "UnsupportedOperationException", KeyId=key_id)
        key = Key.objects.get(pk=key_id)
        assert not key.rotation_enabled and key.next_rotation_at is None
        assert key.materials.count() == 1
        assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False


# --- authorization -------------------------------------------------------------------


def test_it_authorizes_signing_by_algorithm_and_message_type(kms_client, make_persona, kms, key_admin) -> None:
    key_id = new_key(kms, "RSA_2048", "SIGN_VERIFY")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["kms:Sign"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:SigningAlgorithm": "RSASSA_PSS_SHA_256", "kms:MessageType": "DIGEST"}
                },
            }
        ],
    }
    signer = kms_client(make_persona("signer", policy=json.dumps(policy)))
    digest = hashlib.sha256(MESSAGE).digest()
    assert signer.sign(KeyId=key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm="RSASSA_PSS_SHA_256")[
        "Signature"
    ]
    refused(
        signer, "sign", "AccessDeniedException", KeyId=key_id, Message=MESSAGE, SigningAlgorithm="RSASSA_PSS_SHA_256"
    )
    refused(
        signer,
        "sign",
        "AccessDeniedException",
        KeyId=key_id,
        Message=digest,
        MessageType="DIGEST",
        SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256",
    )
    refused(signer, "get_public_key", "AccessDeniedException", KeyId=key_id)


def test_it_keeps_other_accounts_and_unprivileged_principals_out(kms_client, make_persona, outsider, kms) -> None:
    mac_key = new_key(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    agreement = new_key(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    nobody = kms_client(make_persona("nobody", policy=None))
    peer = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for client in (nobody, kms_client(outsider)):
        arn = kms.describe_key(KeyId=mac_key)["KeyMetadata"]["Arn"]
        with pytest.raises(ClientError) as exc:
            client.generate_mac(KeyId=arn, Message=MESSAGE, MacAlgorithm="HMAC_SHA_256")
        assert error_code(exc) in ("AccessDeniedException", "NotFoundException")
        with pytest.raises(ClientError) as exc:
            client.derive_shared_secret(
                KeyId=kms.describe_key(KeyId=agreement)["KeyMetadata"]["Arn"],
                KeyAgreementAlgorithm="ECDH",
                PublicKey=peer,
            )
        assert error_code(exc) in ("AccessDeniedException", "NotFoundException")
    refused(
        nobody, "generate_mac", "AccessDeniedException", KeyId=mac_key, Message=MESSAGE, MacAlgorithm="HMAC_SHA_256"
    )


def test_it_lets_a_grant_give_signing_and_only_the_operations_the_key_has(kms_client, make_persona, kms) -> None:
    key_id = new_key(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    grantee = make_persona("ci-signer", policy=None)
    signer = kms_client(grantee)
    refused(signer, "sign", "AccessDeniedException", KeyId=key_id, Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_256")
    refused(
        kms,
        "create_grant",
        "ValidationException",
        KeyId=key_id,
        GranteePrincipal=grantee.principal.arn,
        Operations=["Sign", "Encrypt"],
    )
    kms.create_grant(KeyId=key_id, GranteePrincipal=grantee.principal.arn, Operations=["Sign", "GetPublicKey"])
    signature = signer.sign(KeyId=key_id, Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    public = serialization.load_der_public_key(signer.get_public_key(KeyId=key_id)["PublicKey"])
    public.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))
    refused(
        signer,
        "verify",
        "AccessDeniedException",
        KeyId=key_id,
        Message=MESSAGE,
        Signature=signature,
        SigningAlgorithm="ECDSA_SHA_256",
    )


def test_it_lets_an_identity_policy_limit_which_key_specs_a_principal_creates(kms_client, make_persona) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "kms:CreateKey",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:KeySpec": "ECC_NIST_P256", "kms:KeyUsage": "SIGN_VERIFY"}},
            }
        ],
    }
    creator = kms_client(make_persona("ecc-only", policy=json.dumps(policy)))
    made = creator.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", BypassPolicyLockoutSafetyCheck=True)
    assert made["KeyMetadata"]["KeySpec"] == "ECC_NIST_P256"
    before = Key.objects.count()
    refused(creator, "create_key", "AccessDeniedException", KeySpec="RSA_4096", KeyUsage="SIGN_VERIFY")
    refused(creator, "create_key", "AccessDeniedException", KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")
    refused(creator, "create_key", "AccessDeniedException")
    assert Key.objects.count() == before


def test_it_answers_dry_runs_and_refuses_disabled_keys(kms) -> None:
    signing = new_key(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    mac_key = new_key(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    sign_params = {"KeyId": signing, "Message": MESSAGE, "SigningAlgorithm": "ECDSA_SHA_256"}
    mac_params = {"KeyId": mac_key, "Message": MESSAGE, "MacAlgorithm": "HMAC_SHA_256"}
    event = refused(kms, "sign", "DryRunOperationException", DryRun=True, **sign_params)
    assert event.request_parameters["signingAlgorithm"] == "ECDSA_SHA_256"
    refused(kms, "generate_mac", "DryRunOperationException", DryRun=True, **mac_params)
    for key_id in (signing, mac_key):
        kms.disable_key(KeyId=key_id)
    refused(kms, "sign", "DisabledException", **sign_params)
    refused(kms, "generate_mac", "DisabledException", **mac_params)
    refused(kms, "get_public_key", "DisabledException", KeyId=signing)
    kms.enable_key(KeyId=signing)
    assert kms.sign(**sign_params)["Signature"]


def test_it_re_encrypts_between_rsa_and_symmetric_keys(kms) -> None:
    rsa_key = new_key(kms, "RSA_3072", "ENCRYPT_DECRYPT")
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    rsa_blob = kms.encrypt(KeyId=rsa_key, Plaintext=b"move me", EncryptionAlgorithm="RSAES_OAEP_SHA_1")[
        "CiphertextBlob"
    ]
    moved = kms.re_encrypt(
        CiphertextBlob=rsa_blob,
        SourceKeyId=rsa_key,
        SourceEncryptionAlgorithm="RSAES_OAEP_SHA_1",
        DestinationKeyId=symmetric,
        DestinationEncryptionContext={"to": "symmetric"},
    )
    assert moved["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_1"
    assert moved["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert (
        kms.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={"to": "symmetric"})["Plaintext"]
        == b"move me"
    )
    back = kms.re_encrypt(
        CiphertextBlob=moved["CiphertextBlob"],
        SourceEncryptionContext={"to": "symmetric"},
        DestinationKeyId=rsa_key,
        DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256",
    )
    assert back["DestinationEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert (
        kms.decrypt(KeyId=rsa_key, CiphertextBlob=back["CiphertextBlob"], EncryptionAlgorithm="RSAES_OAEP_SHA_256")[
            "Plaintext"
        ]
        == b"move me"
    )
    event = last_event("ReEncrypt")
    assert event.error_code == "" and "move me" not in json.dumps(event.request_parameters)
    refused(kms, "re_encrypt", "InvalidCiphertextException", CiphertextBlob=rsa_blob, DestinationKeyId=symmetric)
    refused(
        kms,
        "re_encrypt",
        "InvalidKeyUsageException",
        CiphertextBlob=rsa_blob,
        SourceKeyId=rsa_key,
        DestinationKeyId=symmetric,
    )


def test_it_passes_the_algorithm_and_pair_spec_condition_keys(kms_client, make_persona, kms) -> None:
    rsa_key = new_key(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    mac_key = new_key(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "kms:Encrypt",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}},
            },
            {
                "Effect": "Allow",
                "Action": "kms:GenerateMac",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:MacAlgorithm": "HMAC_SHA_256"}},
            },
            {
                "Effect": "Allow",
                "Action": "kms:GenerateDataKeyPair",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:DataKeyPairSpec": "ECC_NIST_P256"}},
            },
        ],
    }
    client = kms_client(make_persona("conditional", policy=json.dumps(policy)))
    assert client.encrypt(KeyId=rsa_key, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"]
    refused(
        client,
        "encrypt",
        "AccessDeniedException",
        KeyId=rsa_key,
        Plaintext=b"x",
        EncryptionAlgorithm="RSAES_OAEP_SHA_1",
    )
    assert client.generate_mac(KeyId=mac_key, Message=MESSAGE, MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert client.generate_data_key_pair(KeyId=symmetric, KeyPairSpec="ECC_NIST_P256")["PublicKey"]
    refused(client, "generate_data_key_pair", "AccessDeniedException", KeyId=symmetric, KeyPairSpec="RSA_2048")
