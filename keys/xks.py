"""A client of AWS's external key store (XKS) proxy API, version 1.

Every call is a SigV4-signed (service ``kms-xks``) HTTPS POST of a JSON body
to ``<UriEndpoint><UriPath>/health`` or ``.../keys/<XksKeyId>/metadata``,
``/encrypt`` or ``/decrypt``, carrying ``requestMetadata`` (the principal,
the KMS operation, the request id and, for key calls, the key ARN). Blobs
travel in base64. Failures raise ``XksError`` whose ``kind`` the services
map to AWS's errors and connection error codes.

No Django settings here: the services pass the endpoint and its secret in.
As for alarm webhooks, the proxy's host must resolve to public addresses
only (unless the endpoint allows private ones), and the connection goes to
an address checked before it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from audit.alarm_rules import address_blocked
from kmsweb.lib.sigv4 import ALGORITHM, ParsedAuth, SignedRequest, signing_key, string_to_sign

SERVICE = "kms-xks"
AES_GCM = "AES_GCM"


class XksError(Exception):
    """An XKS proxy call failed.

    ``kind``: ``unreachable``, ``blocked`` (not a public address), ``timeout``, ``tls``, ``authentication``
    (the proxy refused the signature), ``access-denied``, ``invalid-response``
    (not the API's JSON), ``key-not-found``, ``invalid-state``,
    ``invalid-ciphertext``, ``invalid-key-usage``, ``rejected`` (any other
    error the proxy named). ``error_name`` is the proxy's ``errorName``.
    """

    def __init__(self, kind: str, message: str, error_name: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.error_name = error_name


_ERROR_KINDS = {
    "AuthenticationFailedException": "authentication",
    "AccessDeniedException": "access-denied",
    "KeyNotFoundException": "key-not-found",
    "InvalidStateException": "invalid-state",
    "InvalidCiphertextException": "invalid-ciphertext",
    "InvalidKeyUsageException": "invalid-key-usage",
}


@dataclass(frozen=True)
class XksEndpoint:
    """Where a proxy is and how to sign for it."""

    uri_endpoint: str  # https://host
    uri_path: str  # /prefix/kms/xks/v1
    access_key_id: str
    secret_access_key: str
    region: str
    port: int = 443
    ca_bundle: str = ""
    timeout: float = 5.0
    allow_private: bool = False

    @property
    def host(self) -> str:
        return self.uri_endpoint.removeprefix("https://")

    @property
    def host_header(self) -> str:
        return self.host if self.port == 443 else f"{self.host}:{self.port}"


def sign(endpoint: XksEndpoint, path: str, body: bytes, now: datetime | None = None) -> dict[str, str]:
    """The headers of a SigV4-signed POST of ``body`` to ``path``."""
    now = now or datetime.now(UTC)
    timestamp = now.strftime("%Y%m%dT%H%M%SZ")
    date = timestamp[:8]
    headers = {
        "host": endpoint.host_header,
        "content-type": "application/json",
        "x-amz-date": timestamp,
        "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    signed = tuple(sorted(headers))
    auth = ParsedAuth(
        access_key_id=endpoint.access_key_id,
        date=date,
        region=endpoint.region,
        service=SERVICE,
        signed_headers=signed,
        signature="",
        amz_date=now,
        timestamp=timestamp,
    )
    request = SignedRequest(method="POST", path=path, query_string="", headers=headers, body=body)
    key = signing_key(endpoint.secret_access_key, date, endpoint.region, SERVICE)
    signature = hmac.new(key, string_to_sign(request, auth).encode("utf-8"), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"{ALGORITHM} Credential={endpoint.access_key_id}/{auth.scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return headers


def _context(endpoint: XksEndpoint) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=endpoint.ca_bundle or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to one checked address, with SNI and certificate checks for the host name."""

    def __init__(self, host: str, address: str, port: int, *, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def resolve(endpoint: XksEndpoint) -> list[str]:
    """The proxy host's addresses; refused (``blocked``) when one is not public, unless allowed.

    The connection then goes to an address checked here (no second lookup, so
    no DNS rebinding), as for alarm webhooks.
    """
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise XksError("unreachable", f"the host {endpoint.host} does not resolve") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise XksError("unreachable", f"the host {endpoint.host} does not resolve")
    if not endpoint.allow_private:
        for text in addresses:
            if address_blocked(ipaddress.ip_address(text.split("%", 1)[0])):
                raise XksError(
                    "blocked",
                    f"{endpoint.host} resolves to {text}, a loopback, private or link-local address: kmsweb "
                    "calls only public XKS proxy endpoints (see KMSWEB_XKS_ALLOW_PRIVATE)",
                )
    return addresses


def call(endpoint: XksEndpoint, suffix: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to ``<UriPath><suffix>``; the proxy's JSON answer, or ``XksError``."""
    path = endpoint.uri_path + suffix
    raw = json.dumps(body, separators=(",", ":")).encode()
    headers = sign(endpoint, path, raw)
    address = resolve(endpoint)[0]
    connection = _PinnedHTTPSConnection(
        endpoint.host, address, endpoint.port, timeout=endpoint.timeout, context=_context(endpoint)
    )
    try:
        connection.request("POST", path, body=raw, headers=headers)
        response = connection.getresponse()
        status = response.status
        payload = response.read(1 << 20)
    except ssl.SSLError as exc:
        raise XksError("tls", f"TLS with the proxy failed: {exc.reason}") from None
    except TimeoutError:
        raise XksError("timeout", "the proxy did not answer in time") from None
    except (OSError, http.client.HTTPException) as exc:
        raise XksError("unreachable", f"the proxy cannot be reached: {exc}") from None
    finally:
        connection.close()
    if status != 200:
        try:
            error = json.loads(payload)
            name = str(error.get("errorName", ""))
            message = str(error.get("errorMessage", ""))[:512]
        except (ValueError, AttributeError):
            raise XksError("invalid-response", f"the proxy answered HTTP {status} without a JSON error") from None
        kind = _ERROR_KINDS.get(name, "rejected")
        raise XksError(kind, f"the proxy answered {name or status}: {message}", name)
    try:
        answer = json.loads(payload)
    except ValueError:
        raise XksError("invalid-response", "the proxy's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise XksError("invalid-response", "the proxy's answer is not a JSON object")
    return answer


def _b64(answer: dict[str, Any], member: str) -> bytes:
    value = answer.get(member)
    if not isinstance(value, str):
        raise XksError("invalid-response", f"the proxy's answer has no {member}")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise XksError("invalid-response", f"the proxy's {member} is not base64") from None


def health(endpoint: XksEndpoint, metadata: dict[str, Any]) -> dict[str, Any]:
    """GetHealthStatus: the proxy's answer, checked to name at least one usable EKM."""
    answer = call(endpoint, "/health", {"requestMetadata": metadata})
    fleet = answer.get("ekmFleetDetails")
    if not isinstance(fleet, list) or not fleet:
        raise XksError("invalid-response", "the proxy's health answer lists no external key manager")
    if not any(isinstance(e, dict) and e.get("healthStatus") in ("ACTIVE", "DEGRADED") for e in fleet):
        raise XksError("rejected", "no external key manager behind the proxy is active")
    return answer


def key_metadata(endpoint: XksEndpoint, key_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """GetKeyMetadata of one external key: keySpec, keyUsage, keyStatus."""
    return call(endpoint, f"/keys/{key_id}/metadata", {"requestMetadata": metadata})


def encrypt(
    endpoint: XksEndpoint, key_id: str, plaintext: bytes, aad: bytes, metadata: dict[str, Any]
) -> tuple[bytes, bytes, bytes]:
    """AES-GCM under the external key: (iv, ciphertext, tag)."""
    answer = call(
        endpoint,
        f"/keys/{key_id}/encrypt",
        {
            "requestMetadata": metadata,
            "plaintext": base64.b64encode(plaintext).decode(),
            "encryptionAlgorithm": AES_GCM,
            "additionalAuthenticatedData": base64.b64encode(aad).decode(),
        },
    )
    iv, ciphertext, tag = (
        _b64(answer, "initializationVector"),
        _b64(answer, "ciphertext"),
        _b64(answer, "authenticationTag"),
    )
    if len(iv) != 12 or len(tag) != 16 or len(ciphertext) != len(plaintext):
        raise XksError("invalid-response", "the proxy's ciphertext, IV or tag has the wrong length")
    return iv, ciphertext, tag


def decrypt(
    endpoint: XksEndpoint,
    key_id: str,
    iv: bytes,
    ciphertext: bytes,
    tag: bytes,
    aad: bytes,
    metadata: dict[str, Any],
) -> bytes:
    """The inverse of :func:`encrypt`."""
    answer = call(
        endpoint,
        f"/keys/{key_id}/decrypt",
        {
            "requestMetadata": metadata,
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "encryptionAlgorithm": AES_GCM,
            "initializationVector": base64.b64encode(iv).decode(),
            "authenticationTag": base64.b64encode(tag).decode(),
            "additionalAuthenticatedData": base64.b64encode(aad).decode(),
        },
    )
    return _b64(answer, "plaintext")
