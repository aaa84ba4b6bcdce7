"""keys.crypto's asymmetric and HMAC parts, pure (no database): tables and round trips."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import serialization

from keys.crypto import asymmetric
from keys.crypto import hmac as kms_hmac
from keys.crypto.errors import CryptoError
from keys.crypto.specs import DIGEST_LENGTHS, SPECS, oaep_max_plaintext


@pytest.mark.parametrize(
    ("spec", "sha1", "sha256"), [("RSA_2048", 214, 190), ("RSA_3072", 342, 318), ("RSA_4096", 470, 446)]
)
def test_it_knows_aws_plaintext_limits_for_rsaes_oaep(spec: str, sha1: int, sha256: int) -> None:
    assert oaep_max_plaintext(SPECS[spec], "RSAES_OAEP_SHA_1") == sha1
    assert oaep_max_plaintext(SPECS[spec], "RSAES_OAEP_SHA_256") == sha256


def test_it_gives_each_spec_the_usages_and_algorithms_aws_lists() -> None:
    assert SPECS["ECC_SECG_P256K1"].usages == ("SIGN_VERIFY",)
    assert SPECS["ECC_NIST_P521"].usages == ("SIGN_VERIFY", "KEY_AGREEMENT")
    assert SPECS["ECC_NIST_P521"].signing == ("ECDSA_SHA_512",)
    assert SPECS["HMAC_224"].algorithms_for("GENERATE_VERIFY_MAC") == {"MacAlgorithms": ["HMAC_SHA_224"]}
    assert SPECS["SYMMETRIC_DEFAULT"].algorithms_for("ENCRYPT_DECRYPT") == {
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"]
    }
    assert DIGEST_LENGTHS["RSASSA_PSS_SHA_384"] == 48 and DIGEST_LENGTHS["ECDSA_SHA_512"] == 64


@pytest.mark.parametrize("spec", ["ECC_NIST_P256", "ECC_SECG_P256K1", "ML_DSA_44"])
def test_it_signs_and_refuses_a_changed_message(spec: str) -> None:
    pair = asymmetric.generate_key_pair(spec)
    info = SPECS[spec]
    algorithm = info.signing[0]
    signature = asymmetric.sign(info, pair.private_der, algorithm=algorithm, message=b"m", message_type="RAW")
    asymmetric.verify(info, pair.public_der, algorithm=algorithm, message=b"m", message_type="RAW", signature=signature)
    with pytest.raises(asymmetric.SignatureInvalid):
        asymmetric.verify(
            info, pair.public_der, algorithm=algorithm, message=b"n", message_type="RAW", signature=signature
        )
    assert serialization.load_der_private_key(pair.private_der, password=None) is not None


def test_it_decrypts_rsa_oaep_and_refuses_the_wrong_hash() -> None:
    pair = asymmetric.generate_key_pair("RSA_2048")
    blob = asymmetric.rsa_encrypt(pair.public_der, algorithm="RSAES_OAEP_SHA_256", plaintext=b"secret")
    assert asymmetric.rsa_decrypt(pair.private_der, algorithm="RSAES_OAEP_SHA_256", ciphertext=blob) == b"secret"
    with pytest.raises(CryptoError):
        asymmetric.rsa_decrypt(pair.private_der, algorithm="RSAES_OAEP_SHA_1", ciphertext=blob)


def test_it_refuses_a_peer_key_on_another_curve_for_ecdh() -> None:
    mine = asymmetric.generate_key_pair("ECC_NIST_P256")
    theirs = asymmetric.generate_key_pair("ECC_NIST_P384")
    with pytest.raises(asymmetric.PeerKeyError):
        asymmetric.derive_shared_secret(SPECS["ECC_NIST_P256"], mine.private_der, theirs.public_der)
    rsa = asymmetric.generate_key_pair("RSA_2048")
    with pytest.raises(asymmetric.PeerKeyError):
        asymmetric.derive_shared_secret(SPECS["ECC_NIST_P256"], mine.private_der, rsa.public_der)


def test_it_computes_hmac_as_the_standard_library_does() -> None:
    material = kms_hmac.generate_hmac_material(SPECS["HMAC_384"])
    assert len(material) == 48
    tag = kms_hmac.mac(material, algorithm="HMAC_SHA_384", message=b"m")
    assert tag == hmac.new(material, b"m", hashlib.sha384).digest()
    assert kms_hmac.mac_matches(material, algorithm="HMAC_SHA_384", message=b"m", tag=tag)
    assert not kms_hmac.mac_matches(material, algorithm="HMAC_SHA_384", message=b"m", tag=tag[:-1] + b"\0")
