"""What custom key stores stand on: the PKCS#11 token or XKS proxy behind a
store, its stored secret, and the mapping of their failures onto AWS's errors
and connection error codes. Used by the store operations
(keys.services.key_stores) and by the keys in stores (keys.services.store_keys).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from keys import xks
from keys.crypto import pkcs11
from keys.models import CustomKeyStore, Key
from keys.services.platform import platform_decrypt, platform_encrypt
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    CloudHsmClusterNotFound,
    CustomKeyStoreNotFound,
    KmsError,
    XksProxyIncorrectAuthenticationCredential,
    XksProxyInvalidConfiguration,
    XksProxyInvalidResponse,
    XksProxyUriUnreachable,
)

SECRET_PURPOSE = "custom-key-store-secrets"  # noqa: S105 - a platform key purpose

# A token's answer -> AWS's ConnectionErrorCode.
TOKEN_ERROR_CODES = {
    "library": "INTERNAL_ERROR",
    "not-found": "CLUSTER_NOT_FOUND",
    "not-initialized": "USER_NOT_FOUND",
    "pin-incorrect": "INVALID_CREDENTIALS",
    "pin-locked": "USER_LOCKED_OUT",
    "failed": "NETWORK_ERRORS",
}
# A proxy's failure -> AWS's ConnectionErrorCode.
XKS_ERROR_CODES = {
    "unreachable": "XKS_PROXY_NOT_REACHABLE",
    "timeout": "XKS_PROXY_TIMED_OUT",
    "tls": "XKS_PROXY_INVALID_TLS_CONFIGURATION",
    "authentication": "INVALID_CREDENTIALS",
    "access-denied": "XKS_PROXY_ACCESS_DENIED",
    "invalid-response": "XKS_PROXY_INVALID_RESPONSE",
    "blocked": "XKS_PROXY_INVALID_CONFIGURATION",
}


# -- reading --------------------------------------------------------------------


def custom_key_store_get_for(*, caller: Caller, store_id: str) -> CustomKeyStore:
    """The caller's account and region's store ``store_id``, or CustomKeyStoreNotFoundException."""
    store = CustomKeyStore.objects.filter(id=store_id, account_id=caller.account_id, region=caller.region).first()
    if store is None:
        raise CustomKeyStoreNotFound(f"Custom key store {store_id} does not exist in this account and region.")
    return store


# -- secrets --------------------------------------------------------------------


def _secret_context(store_id: str) -> dict[str, str]:
    return {"customKeyStoreId": store_id}


def seal_secret(store_id: str, secret: str) -> bytes:
    return platform_encrypt(purpose=SECRET_PURPOSE, plaintext=secret.encode(), context=_secret_context(store_id))


def open_secret(store: CustomKeyStore) -> str:
    blob = bytes(store.secret_ciphertext)
    return platform_decrypt(purpose=SECRET_PURPOSE, blob=blob, context=_secret_context(store.id)).decode()


# -- backends -------------------------------------------------------------------


def pkcs11_library() -> str:
    library = settings.KMSWEB_PKCS11_LIBRARY
    if not library:
        raise CloudHsmClusterNotFound(
            "kmsweb has no PKCS#11 library configured (KMSWEB_PKCS11_LIBRARY), so no CloudHSM key store can be used."
        )
    return str(library)


def store_token(store: CustomKeyStore) -> pkcs11.Pkcs11Token:
    """The PKCS#11 token behind an AWS_CLOUDHSM store, logged in with its PIN on first use."""
    return pkcs11.Pkcs11Token(library=pkcs11_library(), label=store.cloud_hsm_cluster_id, pin=open_secret(store))


def store_endpoint(store: CustomKeyStore, *, secret: str | None = None) -> xks.XksEndpoint:
    """The XKS proxy behind an EXTERNAL_KEY_STORE store."""
    return xks.XksEndpoint(
        uri_endpoint=store.xks_proxy_uri_endpoint,
        uri_path=store.xks_proxy_uri_path,
        access_key_id=store.xks_proxy_access_key_id,
        secret_access_key=secret if secret is not None else open_secret(store),
        region=store.region,
        port=int(settings.KMSWEB_XKS_PROXY_PORT),
        ca_bundle=str(settings.KMSWEB_XKS_CA_BUNDLE or ""),
        timeout=float(settings.KMSWEB_XKS_TIMEOUT_SECONDS),
        allow_private=bool(settings.KMSWEB_XKS_ALLOW_PRIVATE),
    )


def xks_metadata(caller: Caller, operation: str, key: Key | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "awsPrincipalArn": caller.principal_arn,
        "kmsOperation": operation,
        "kmsRequestId": caller.request_id,
    }
    if key is not None:
        metadata["kmsKeyArn"] = key.arn
    if caller.via_service:
        metadata["kmsViaService"] = caller.via_service
    return metadata


def token_key_label(key: Key) -> str:
    """The label of a key's AES key in its store's token."""
    return f"kmsweb-{key.id}"


def xks_failure(exc: xks.XksError) -> KmsError:
    """A proxy failure met while creating or updating a store, as AWS's exception."""
    if exc.kind == "authentication":
        return XksProxyIncorrectAuthenticationCredential(f"The XKS proxy refused kmsweb's credential: {exc.message}")
    if exc.kind in ("unreachable", "timeout", "tls"):
        return XksProxyUriUnreachable(f"The XKS proxy cannot be reached: {exc.message}")
    if exc.kind == "blocked":
        return XksProxyInvalidConfiguration(f"The XKS proxy endpoint is refused: {exc.message}.")
    if exc.kind == "invalid-response":
        return XksProxyInvalidResponse(f"The XKS proxy's answer is not valid: {exc.message}")
    return XksProxyInvalidConfiguration(f"The XKS proxy refused the request: {exc.message}")
