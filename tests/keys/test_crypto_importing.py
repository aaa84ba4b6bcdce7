"""keys.crypto.importing: pure unwrapping and the per-spec material checks (no database)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keys.crypto import importing as imp
from keys.crypto.errors import DecryptionError
from tests.importing import ALGORITHMS, wrap


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes]:
    return imp.generate_wrapping_key("RSA_2048")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", [28, 32, 64, 128])
def test_it_unwraps_what_a_client_wrapped(pair: tuple[bytes, bytes], algorithm: str, size: int) -> None:
    private, public = pair
    material = os.urandom(size)
    assert imp.unwrap_material(private, algorithm, wrap(public, algorithm, material)) == material


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_it_refuses_material_wrapped_for_another_algorithm(pair: tuple[bytes, bytes], algorithm: str) -> None:
    private, public = pair
    others = [a for a in ALGORITHMS if a != algorithm]
    for other in others:
        with pytest.raises(DecryptionError):
            imp.unwrap_material(private, algorithm, wrap(public, other, os.urandom(32)))


def test_it_refuses_short_or_empty_input_and_unknown_algorithms(pair: tuple[bytes, bytes]) -> None:
    private, public = pair
    rsa_part = wrap(public, "RSAES_OAEP_SHA_256", os.urandom(32))
    for wrapped in (b"", b"\x00" * 10, rsa_part):  # RSA_AES needs more than the RSA part
        with pytest.raises(DecryptionError):
            imp.unwrap_material(private, "RSA_AES_KEY_WRAP_SHA_256", wrapped)
    with pytest.raises(DecryptionError):
        imp.unwrap_material(private, "RSAES_PKCS1_V1_5", rsa_part)


@pytest.mark.parametrize(
    ("spec", "good", "bad"),
    [
        ("SYMMETRIC_DEFAULT", [32], [0, 16, 24, 31, 33, 64]),
        ("HMAC_224", [28, 64], [27, 65]),
        ("HMAC_256", [32, 64], [31, 65]),
        ("HMAC_384", [48, 128], [47, 129]),
        ("HMAC_512", [64, 128], [63, 129]),
    ],
)
def test_it_checks_material_length_per_spec(spec: str, good: list[int], bad: list[int]) -> None:
    for size in good:
        imp.check_material(spec, os.urandom(size))
    for size in bad:
        with pytest.raises(imp.MaterialError):
            imp.check_material(spec, os.urandom(size))


def _der(private: object) -> bytes:
    return private.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_it_checks_asymmetric_material_is_a_private_key_of_the_spec() -> None:
    rsa_2048 = _der(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    p256 = _der(ec.generate_private_key(ec.SECP256R1()))
    imp.check_material("RSA_2048", rsa_2048)
    imp.check_material("ECC_NIST_P256", p256)
    for spec, material in (
        ("RSA_3072", rsa_2048),
        ("RSA_2048", p256),
        ("ECC_NIST_P384", p256),
        ("ECC_NIST_P256", os.urandom(32)),
    ):
        with pytest.raises(imp.MaterialError):
            imp.check_material(spec, material)
    with pytest.raises(imp.MaterialError):
        imp.check_material("SM2", os.urandom(32))


def test_it_fingerprints_by_key_and_material_under_a_mac_key() -> None:
    mac_key, material = os.urandom(32), os.urandom(32)
    one = imp.material_fingerprint(mac_key, "key-1", material)
    assert one == imp.material_fingerprint(mac_key, "key-1", material)
    assert one != imp.material_fingerprint(mac_key, "key-2", material)
    assert one != imp.material_fingerprint(os.urandom(32), "key-1", material)
    assert one != imp.material_fingerprint(mac_key, "key-1", os.urandom(32))
    assert imp.fingerprints_equal(one, one) and not imp.fingerprints_equal(one, "0" * 64)


def test_it_derives_the_public_key_of_imported_asymmetric_material() -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert imp.derived_public_key("ECC_NIST_P384", _der(private)) == der
    assert imp.derived_public_key("SYMMETRIC_DEFAULT", os.urandom(32)) is None
    assert imp.derived_public_key("HMAC_256", os.urandom(32)) is None
