"""A small external key store (XKS) proxy for the tests, over a SoftHSM2 token.

It serves AWS's XKS proxy API v1 (``/health`` and ``/keys/<id>/metadata``,
``/encrypt``, ``/decrypt`` under its URI path) over HTTPS on 127.0.0.1,
checks every request's SigV4 signature (service ``kms-xks``) with
``kmsweb.lib.sigv4``, and runs AES-GCM with keys generated in its token.
It records the ``requestMetadata`` of every call it served. Under
``INVALID_URI_PATH`` it answers ``/health`` with a body that is no XKS
health answer (it names no external key manager), as a faulty proxy would;
a key whose id starts with ``disabled-`` is reported DISABLED.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keys.crypto import pkcs11
from keys.crypto.errors import DecryptionError
from kmsweb.lib.sigv4 import SignedRequest, SigV4Error, parse_authorization, verify_signature

ACCESS_KEY_ID = "XKSPROXYTESTACCESSKEY2"  # 20-30 of [A-Z2-7]
SECRET = "kmsweb+xks/proxy+test+secret+access+key+000000"  # 43-64 of [a-zA-Z0-9/+=]
URI_PATH = "/kms/xks/v1"
INVALID_URI_PATH = "/invalid" + URI_PATH


@dataclass
class XksProxy:
    """The proxy's state: credentials it accepts, its token, the calls it served."""

    token: pkcs11.Pkcs11Token
    region: str
    access_key_id: str = ACCESS_KEY_ID
    secret: str = SECRET
    uri_path: str = URI_PATH
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def create_key(self, key_id: str) -> None:
        """An AES-256 key in the token, named ``key_id`` on the XKS API."""
        self.token.generate_aes_key(_label(key_id))

    def start(self, directory: Path) -> Path:
        """Serve on 127.0.0.1 (any free port); returns the CA certificate kmsweb must trust."""
        ca_path, cert_path, key_path = _certificates(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        proxy = self

        class Handler(_Handler):
            state = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return ca_path

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _label(key_id: str) -> str:
    return f"xks-{key_id}"


class _Handler(BaseHTTPRequestHandler):
    state: XksProxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: int, name: str, message: str) -> None:
        self._answer(status, {"errorName": name, "errorMessage": message})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        state = self.state
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = SignedRequest(method="POST", path=self.path, query_string="", headers=headers, body=body)
        try:
            auth = parse_authorization(request, now=datetime.now(UTC), service="kms-xks", regions=[state.region])
            if auth.access_key_id != state.access_key_id:
                raise SigV4Error("InvalidSignatureException", "unknown access key")
            verify_signature(request, auth, state.secret)
        except SigV4Error as exc:
            self._error(401, "AuthenticationFailedException", exc.message)
            return
        if self.path == INVALID_URI_PATH + "/health":
            self._answer(200, {"xksProxyVendor": "kmsweb tests"})
            return
        if not self.path.startswith(state.uri_path + "/"):
            self._error(404, "InvalidUriPathException", "not this proxy's URI path")
            return
        try:
            payload = json.loads(body)
        except ValueError:
            self._error(400, "ValidationException", "the body is not JSON")
            return
        route = self.path[len(state.uri_path) :]
        state.calls.append((route, payload.get("requestMetadata") or {}))
        if route == "/health":
            self._answer(
                200,
                {
                    "xksProxyFipsCompliant": False,
                    "xksProxyVendor": "kmsweb tests",
                    "xksProxyModel": "tests/xks_proxy.py",
                    "ekmVendor": "SoftHSM2",
                    "ekmFleetDetails": [{"id": "softhsm2", "model": "SoftHSM2", "healthStatus": "ACTIVE"}],
                },
            )
            return
        parts = route.split("/")
        if len(parts) != 4 or parts[1] != "keys":
            self._error(404, "InvalidUriPathException", "no such operation")
            return
        key_id, operation = parts[2], parts[3]
        if not state.token.has_key(_label(key_id)):
            self._error(404, "KeyNotFoundException", f"no key {key_id}")
            return
        if operation == "metadata":
            status = "DISABLED" if key_id.startswith("disabled-") else "ENABLED"
            self._answer(200, {"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": status})
            return
        aad = base64.b64decode(payload.get("additionalAuthenticatedData") or "")
        if operation == "encrypt":
            iv, sealed = state.token.encrypt(_label(key_id), base64.b64decode(payload["plaintext"]), aad)
            self._answer(
                200,
                {
                    "ciphertext": base64.b64encode(sealed[:-16]).decode(),
                    "initializationVector": base64.b64encode(iv).decode(),
                    "authenticationTag": base64.b64encode(sealed[-16:]).decode(),
                },
            )
            return
        if operation == "decrypt":
            sealed = base64.b64decode(payload["ciphertext"]) + base64.b64decode(payload["authenticationTag"])
            try:
                plaintext = state.token.decrypt(
                    _label(key_id), base64.b64decode(payload["initializationVector"]), sealed, aad
                )
            except DecryptionError:
                self._error(400, "InvalidCiphertextException", "the ciphertext does not authenticate")
                return
            self._answer(200, {"plaintext": base64.b64encode(plaintext).decode()})
            return
        self._error(404, "InvalidUriPathException", "no such operation")


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it, as PEM files."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmsweb test XKS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "xks-ca.pem", directory / "xks.pem", directory / "xks-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path
