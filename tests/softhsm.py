"""SoftHSM2 tokens for the custom key store tests: each test makes its own.

A token lives in a temporary directory named by a temporary SOFTHSM2_CONF;
the library (Debian's softhsm2 package) is told to re-read its configuration,
so a process that already loaded it sees the new token.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.test import override_settings

from keys.crypto import pkcs11

LIBRARY = os.environ.get("KMSWEB_TEST_PKCS11_LIBRARY", "/usr/lib/softhsm/libsofthsm2.so")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass(frozen=True)
class Token:
    """One initialised SoftHSM2 token: its label is a valid CloudHsmClusterId."""

    label: str
    pin: str
    so_pin: str
    library: str = LIBRARY

    def session_token(self) -> pkcs11.Pkcs11Token:
        return pkcs11.Pkcs11Token(library=self.library, label=self.label, pin=self.pin)


def new_cluster_id() -> str:
    return "cluster-" + "".join(secrets.choice(_ALPHABET) for _ in range(11))


def softhsm_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point SOFTHSM2_CONF at a new token directory under ``tmp_path``."""
    if shutil.which("softhsm2-util") is None or not Path(LIBRARY).exists():
        pytest.fail("SoftHSM2 is not installed (apt-get install softhsm2)")
    tokens = tmp_path / "softhsm-tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    return tokens


def module_token() -> Callable[..., Iterator[Token]]:
    """A module-scoped ``token`` fixture: one SoftHSM2 token for all the module's tests.

    Each test's database is rolled back, so each test makes its own store on it.
    """

    @pytest.fixture(scope="module")
    def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
        with pytest.MonkeyPatch.context() as monkeypatch, override_settings(KMSWEB_PKCS11_LIBRARY=LIBRARY):
            softhsm_dir(tmp_path_factory.mktemp("softhsm"), monkeypatch)
            yield init_token()
        pkcs11.forget_all()

    return token


def init_token(*, label: str | None = None, pin: str | None = None) -> Token:
    """Initialise a token in the directory SOFTHSM2_CONF names; the library re-reads its slots."""
    token = Token(label=label or new_cluster_id(), pin=pin or secrets.token_hex(8), so_pin=secrets.token_hex(8))
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            token.label,
            "--pin",
            token.pin,
            "--so-pin",
            token.so_pin,
        ],
        check=True,
        capture_output=True,
    )
    pkcs11.forget_all()
    return token


@cache
def trust_anchor_pem() -> str:
    """A self-signed certificate, as a CloudHSM cluster's trust anchor would be."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmsweb test HSM issuer")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def cloudhsm_params(token: Token, name: str = "hsm-store", **overrides: Any) -> dict[str, Any]:
    """CreateCustomKeyStore's parameters for ``token``."""
    params: dict[str, Any] = {
        "CustomKeyStoreName": name,
        "CloudHsmClusterId": token.label,
        "TrustAnchorCertificate": trust_anchor_pem(),
        "KeyStorePassword": token.pin,
    }
    params.update(overrides)
    return params
