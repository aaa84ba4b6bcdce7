"""Wrapping key material as a client does before ImportKeyMaterial.

Two independent ways, for tests: ``cryptography`` in process, and the
``openssl`` CLI in a subprocess by the commands docs/IMPORT.md documents.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

ALGORITHMS = ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_1", "RSA_AES_KEY_WRAP_SHA_256")


def _oaep(algorithm: str) -> padding.OAEP:
    digest: hashes.HashAlgorithm = hashes.SHA256() if algorithm.endswith("SHA_256") else hashes.SHA1()
    return padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)


def wrap(public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """EncryptedKeyMaterial for ``material`` under the wrapping public key, with ``cryptography``."""
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, _oaep(algorithm))
    aes_key = os.urandom(32)
    return public.encrypt(aes_key, _oaep(algorithm)) + aes_key_wrap_with_padding(aes_key, material)


def openssl_wrap(workdir: Path, public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """EncryptedKeyMaterial made by the ``openssl`` CLI, running the commands of docs/IMPORT.md."""
    md = "sha256" if algorithm.endswith("SHA_256") else "sha1"
    (workdir / "WrappingPublicKey.bin").write_bytes(public_der)
    (workdir / "PlaintextKeyMaterial.bin").write_bytes(material)
    oaep = ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", f"rsa_oaep_md:{md}", "-pkeyopt", f"rsa_mgf1_md:{md}"]
    rsa_encrypt = ["openssl", "pkeyutl", "-encrypt", "-inkey", "WrappingPublicKey.bin", "-keyform", "DER", "-pubin"]

    def run(*args: str) -> None:
        subprocess.run(args, cwd=workdir, check=True, capture_output=True)

    if algorithm.startswith("RSAES_OAEP"):
        run(*rsa_encrypt, "-in", "PlaintextKeyMaterial.bin", "-out", "EncryptedKeyMaterial.bin", *oaep)
        return (workdir / "EncryptedKeyMaterial.bin").read_bytes()
    run("openssl", "rand", "-out", "aes-key.bin", "32")
    aes_hex = (workdir / "aes-key.bin").read_bytes().hex()
    run(
        "openssl", "enc", "-id-aes256-wrap-pad", "-K", aes_hex, "-iv", "A65959A6",
        "-in", "PlaintextKeyMaterial.bin", "-out", "key-material-wrapped.bin",
    )  # fmt: skip
    run(*rsa_encrypt, "-in", "aes-key.bin", "-out", "aes-key-wrapped.bin", *oaep)
    return (workdir / "aes-key-wrapped.bin").read_bytes() + (workdir / "key-material-wrapped.bin").read_bytes()


def require_tools(*names: str) -> None:
    """Skip without the CLI tools, except in CI (KMSWEB_REQUIRE_SERVICES=true), where it fails."""
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    if os.environ.get("KMSWEB_REQUIRE_SERVICES") == "true":
        pytest.fail(f"needs {', '.join(missing)}, and KMSWEB_REQUIRE_SERVICES=true")
    pytest.skip(f"needs {', '.join(missing)}")
