"""keys.crypto's ML-KEM and Ed25519 parts, pure (no database), checked against
independent implementations and RFC 8032's test vectors."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem
from kyber_py.ml_kem import ML_KEM_512

from keys.crypto import asymmetric, kem
from keys.crypto.errors import CryptoError
from keys.crypto.specs import SPECS

LEVELS = [512, 768, 1024]

# RFC 8032, 7.3 (Ed25519ph, message "abc").
RFC8032_PH_SECRET = bytes.fromhex("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42")
RFC8032_PH_SIGNATURE = bytes.fromhex(
    "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae41"
    "31f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406"
)


def _raw_public(level: int, public_der: bytes) -> bytes:
    # The SPKI's BIT STRING ends the DER: the encapsulation key is its last bytes.
    return public_der[-kem.PUBLIC_KEY_LENGTHS[level] :]


def test_it_lists_what_aws_lists_for_the_new_specs() -> None:
    for level in LEVELS:
        spec = SPECS[f"ML_KEM_{level}"]
        assert spec.usages == ("ENCAPSULATE_DECAPSULATE",)
        assert spec.algorithms_for("ENCAPSULATE_DECAPSULATE") == {"EncapsulationAlgorithms": ["ML_KEM"]}
    ed = SPECS["ECC_NIST_EDWARDS25519"]
    assert ed.usages == ("SIGN_VERIFY",)
    assert ed.algorithms_for("SIGN_VERIFY") == {"SigningAlgorithms": ["ED25519_SHA_512", "ED25519_PH_SHA_512"]}


@pytest.mark.parametrize("level", LEVELS)
def test_it_encapsulates_and_decapsulates_the_same_secret(level: int) -> None:
    pair = asymmetric.generate_key_pair(f"ML_KEM_{level}")
    secret, ciphertext = kem.encapsulate(level, pair.public_der)
    assert len(secret) == 32 and len(ciphertext) == kem.CIPHERTEXT_LENGTHS[level]
    assert kem.decapsulate(level, pair.private_der, ciphertext) == secret
    # Implicit rejection: an altered ciphertext gives another 32-byte secret, no error.
    altered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    other = kem.decapsulate(level, pair.private_der, altered)
    assert len(other) == 32 and other != secret
    with pytest.raises(CryptoError):
        kem.decapsulate(level, pair.private_der, ciphertext[:-1])
    assert asymmetric.public_pem(pair.public_der).startswith("-----BEGIN PUBLIC KEY-----\n")


@pytest.mark.parametrize("level", [768, 1024])
def test_it_interoperates_with_cryptography(level: int) -> None:
    pair = asymmetric.generate_key_pair(f"ML_KEM_{level}")
    public = serialization.load_der_public_key(pair.public_der)
    secret, ciphertext = public.encapsulate()  # type: ignore[union-attr]
    assert kem.decapsulate(level, pair.private_der, ciphertext) == secret
    # And the other way: kmsweb's encapsulation against a key cryptography made.
    theirs = (mlkem.MLKEM768PrivateKey if level == 768 else mlkem.MLKEM1024PrivateKey).generate()
    spki = theirs.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ours, our_ciphertext = kem.encapsulate(level, spki)
    assert theirs.decapsulate(our_ciphertext) == ours


def test_it_interoperates_with_another_ml_kem_512() -> None:
    pair = asymmetric.generate_key_pair("ML_KEM_512")
    assert len(pair.public_der) == 22 + 800
    secret, ciphertext = ML_KEM_512.encaps(_raw_public(512, pair.public_der))
    assert kem.decapsulate(512, pair.private_der, ciphertext) == secret
    # And the other way: kmsweb's encapsulation against a key the other library made.
    ek, dk = ML_KEM_512.keygen()
    spki = pair.public_der[:-800] + ek
    ours, our_ciphertext = kem.encapsulate(512, spki)
    assert ML_KEM_512.decaps(dk, our_ciphertext) == ours


def test_it_signs_pure_ed25519_that_cryptography_verifies() -> None:
    pair = asymmetric.generate_key_pair("ECC_NIST_EDWARDS25519")
    spec = SPECS["ECC_NIST_EDWARDS25519"]
    signature = asymmetric.sign(
        spec, pair.private_der, algorithm="ED25519_SHA_512", message=b"hello", message_type="RAW"
    )
    public = serialization.load_der_public_key(pair.public_der)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(signature, b"hello")
    own = ed25519.Ed25519PrivateKey.generate()
    theirs = own.sign(b"from outside")
    der = own.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    asymmetric.verify(
        spec, der, algorithm="ED25519_SHA_512", message=b"from outside", message_type="RAW", signature=theirs
    )
    with pytest.raises(asymmetric.SignatureInvalid):
        asymmetric.verify(
            spec, der, algorithm="ED25519_SHA_512", message=b"from inside", message_type="RAW", signature=theirs
        )


def test_it_signs_ed25519ph_as_rfc_8032_does() -> None:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(RFC8032_PH_SECRET)
    private_der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    spec = SPECS["ECC_NIST_EDWARDS25519"]
    signature = asymmetric.sign(
        spec, private_der, algorithm="ED25519_PH_SHA_512", message=b"abc", message_type="DIGEST"
    )
    assert signature == RFC8032_PH_SIGNATURE
    asymmetric.verify(
        spec, public_der, algorithm="ED25519_PH_SHA_512", message=b"abc", message_type="DIGEST", signature=signature
    )
    # A pure Ed25519 signature of the same message is another signature.
    with pytest.raises(asymmetric.SignatureInvalid):
        asymmetric.verify(
            spec,
            public_der,
            algorithm="ED25519_PH_SHA_512",
            message=b"abc",
            message_type="DIGEST",
            signature=private.sign(b"abc"),
        )
