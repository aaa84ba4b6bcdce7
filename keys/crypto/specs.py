"""What each KeySpec is and what AWS lets it do: usages and algorithms.

The tables follow AWS KMS's key spec reference. ``ECC_SECG_P256K1`` and
``ECC_NIST_EDWARDS25519`` are for signing only: AWS offers key agreement on
the NIST curves alone. ML-KEM keys only encapsulate and decapsulate.
"""

from __future__ import annotations

from dataclasses import dataclass

SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
SIGN_VERIFY = "SIGN_VERIFY"
GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"
KEY_AGREEMENT = "KEY_AGREEMENT"
ENCAPSULATE_DECAPSULATE = "ENCAPSULATE_DECAPSULATE"

RSA_SIGNING = (
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
)
RSA_ENCRYPTION = ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256")
ML_DSA_SIGNING = ("ML_DSA_SHAKE_256",)
# ED25519_SHA_512 takes the RAW message only, ED25519_PH_SHA_512 a DIGEST only.
ED25519_SIGNING = ("ED25519_SHA_512", "ED25519_PH_SHA_512")
ED25519_MESSAGE_TYPES = {"ED25519_SHA_512": "RAW", "ED25519_PH_SHA_512": "DIGEST"}


@dataclass(frozen=True)
class Spec:
    """One KeySpec: its family, size and what each usage offers."""

    name: str
    family: str  # symmetric | rsa | ecc | eddsa | hmac | mldsa | mlkem
    usages: tuple[str, ...]
    signing: tuple[str, ...] = ()
    encryption: tuple[str, ...] = ()
    mac: tuple[str, ...] = ()
    key_agreement: tuple[str, ...] = ()
    encapsulation: tuple[str, ...] = ()
    bits: int = 0
    curve: str = ""

    @property
    def is_asymmetric(self) -> bool:
        return self.family in ("rsa", "ecc", "eddsa", "mldsa", "mlkem")

    def algorithms_for(self, usage: str) -> dict[str, list[str]]:
        """The metadata lists a key of this spec and ``usage`` shows."""
        if usage == ENCRYPT_DECRYPT:
            return {"EncryptionAlgorithms": list(self.encryption)}
        if usage == SIGN_VERIFY:
            return {"SigningAlgorithms": list(self.signing)}
        if usage == GENERATE_VERIFY_MAC:
            return {"MacAlgorithms": list(self.mac)}
        if usage == KEY_AGREEMENT:
            return {"KeyAgreementAlgorithms": list(self.key_agreement)}
        if usage == ENCAPSULATE_DECAPSULATE:
            return {"EncapsulationAlgorithms": list(self.encapsulation)}
        return {}


def _rsa(bits: int) -> Spec:
    return Spec(
        f"RSA_{bits}", "rsa", (ENCRYPT_DECRYPT, SIGN_VERIFY), signing=RSA_SIGNING, encryption=RSA_ENCRYPTION, bits=bits
    )


def _ecc(name: str, curve: str, algorithm: str, *, agreement: bool) -> Spec:
    usages = (SIGN_VERIFY, KEY_AGREEMENT) if agreement else (SIGN_VERIFY,)
    return Spec(name, "ecc", usages, signing=(algorithm,), key_agreement=("ECDH",) if agreement else (), curve=curve)


def _hmac(bits: int) -> Spec:
    return Spec(f"HMAC_{bits}", "hmac", (GENERATE_VERIFY_MAC,), mac=(f"HMAC_SHA_{bits}",), bits=bits)


def _mldsa(level: int) -> Spec:
    return Spec(f"ML_DSA_{level}", "mldsa", (SIGN_VERIFY,), signing=ML_DSA_SIGNING, bits=level)


def _mlkem(level: int) -> Spec:
    return Spec(f"ML_KEM_{level}", "mlkem", (ENCAPSULATE_DECAPSULATE,), encapsulation=("ML_KEM",), bits=level)


SPECS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec(SYMMETRIC_DEFAULT, "symmetric", (ENCRYPT_DECRYPT,), encryption=(SYMMETRIC_DEFAULT,), bits=256),
        _rsa(2048),
        _rsa(3072),
        _rsa(4096),
        _ecc("ECC_NIST_P256", "secp256r1", "ECDSA_SHA_256", agreement=True),
        _ecc("ECC_NIST_P384", "secp384r1", "ECDSA_SHA_384", agreement=True),
        _ecc("ECC_NIST_P521", "secp521r1", "ECDSA_SHA_512", agreement=True),
        _ecc("ECC_SECG_P256K1", "secp256k1", "ECDSA_SHA_256", agreement=False),
        Spec("ECC_NIST_EDWARDS25519", "eddsa", (SIGN_VERIFY,), signing=ED25519_SIGNING, curve="ed25519"),
        _hmac(224),
        _hmac(256),
        _hmac(384),
        _hmac(512),
        _mldsa(44),
        _mldsa(65),
        _mldsa(87),
        _mlkem(512),
        _mlkem(768),
        _mlkem(1024),
    )
}

# GenerateDataKeyPair's KeyPairSpec values kmsweb makes (AWS's, but SM2). The
# private key is PKCS#8 DER; an ML-KEM one holds the 64-byte seed (RFC 9935).
DATA_KEY_PAIR_SPECS = (
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
)

# Bytes of the digest each hash-based signing algorithm expects with MessageType DIGEST.
DIGEST_LENGTHS = {
    **{alg: int(alg.rsplit("_", 1)[1]) // 8 for alg in RSA_SIGNING},
    "ECDSA_SHA_256": 32,
    "ECDSA_SHA_384": 48,
    "ECDSA_SHA_512": 64,
    "ED25519_PH_SHA_512": 64,
}
# ML-DSA's external message representative (FIPS 204, 6.2) is 64 bytes.
EXTERNAL_MU_LENGTH = 64

# The most plaintext RSAES_OAEP takes: modulus bytes - 2 * hash bytes - 2.
_OAEP_HASH_BYTES = {"RSAES_OAEP_SHA_1": 20, "RSAES_OAEP_SHA_256": 32}


def oaep_max_plaintext(spec: Spec, algorithm: str) -> int:
    """214/190 bytes for RSA_2048, 342/318 for RSA_3072, 470/446 for RSA_4096."""
    return spec.bits // 8 - 2 * _OAEP_HASH_BYTES[algorithm] - 2
