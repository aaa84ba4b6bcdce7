"""Custom key stores: CreateCustomKeyStore … DisconnectCustomKeyStore, and
the cryptography of the keys that live in them.

Two types, as in AWS:

* ``AWS_CLOUDHSM`` — a PKCS#11 token of ``KMSWEB_PKCS11_LIBRARY`` whose
  label is the store's ``CloudHsmClusterId``; the ``KeyStorePassword`` is
  the token's user PIN. Each key is an AES-256 key generated inside the
  token (sensitive, not extractable); Encrypt and Decrypt run AES-GCM in
  the token (keys.crypto.pkcs11).
* ``EXTERNAL_KEY_STORE`` — an XKS proxy (keys.xks) at a public HTTPS
  endpoint (``PUBLIC_ENDPOINT`` connectivity only); each key names an
  external key by its ``XksKeyId``, and the proxy runs AES-GCM with it.

Either way the ciphertext is kmsweb's blob (key id and version in the
header, the same AAD), so Decrypt finds the key as for any other key. The
PIN and the proxy's secret access key are stored only encrypted under a
platform owned key (``custom-key-store-secrets``) and are never audited.

Connection states: a store is ``DISCONNECTED`` when made; Connect checks
the token login (or the proxy's health) and leaves it ``CONNECTED`` or
``FAILED`` with a ``ConnectionErrorCode``, synchronously (AWS answers at
once and connects in the background; kmsweb's connection is done by the
time the call returns). While a store is not connected its keys are
``Unavailable``; connecting gives them back the state they had.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from audit.services import audited
from keys import selectors, xks
from keys.crypto import pkcs11
from keys.models import (
    ConnectionState,
    CustomKeyStore,
    CustomKeyStoreType,
    Key,
    KeyState,
)
from keys.services.store_backends import (
    TOKEN_ERROR_CODES,
    XKS_ERROR_CODES,
    custom_key_store_get_for,
    pkcs11_library,
    seal_secret,
    store_endpoint,
    store_token,
    xks_failure,
    xks_metadata,
)
from kmsweb.generations import KEYS, generation_bump
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    CloudHsmClusterInUse,
    CloudHsmClusterInvalidConfiguration,
    CloudHsmClusterNotActive,
    CloudHsmClusterNotFound,
    CloudHsmClusterNotRelated,
    CustomKeyStoreHasCMKs,
    CustomKeyStoreInvalidState,
    CustomKeyStoreNameInUse,
    CustomKeyStoreNotFound,
    IncorrectTrustAnchor,
    KmsError,
    LimitExceeded,
    ValidationError,
    XksProxyInvalidConfiguration,
    XksProxyUriInUse,
)
from policies.authorization import authorize

MAX_STORES_PER_ACCOUNT = 10
PUBLIC_ENDPOINT = "PUBLIC_ENDPOINT"

# -- reading


def store_description(store: CustomKeyStore) -> dict[str, Any]:
    """One CustomKeyStoresListEntry (no secret: the access key id of a proxy credential only)."""
    entry: dict[str, Any] = {
        "CustomKeyStoreId": store.id,
        "CustomKeyStoreName": store.name,
        "CustomKeyStoreType": store.store_type,
        "ConnectionState": store.connection_state,
        "CreationDate": store.created_at,
    }
    if store.connection_state == ConnectionState.FAILED and store.connection_error_code:
        entry["ConnectionErrorCode"] = store.connection_error_code
    if store.store_type == CustomKeyStoreType.AWS_CLOUDHSM:
        entry["CloudHsmClusterId"] = store.cloud_hsm_cluster_id
        entry["TrustAnchorCertificate"] = store.trust_anchor_certificate
    else:
        entry["XksProxyConfiguration"] = {
            "Connectivity": store.xks_proxy_connectivity,
            "AccessKeyId": store.xks_proxy_access_key_id,
            "UriEndpoint": store.xks_proxy_uri_endpoint,
            "UriPath": store.xks_proxy_uri_path,
        }
    return entry


def custom_key_store_describe(
    *,
    caller: Caller,
    store_id: str | None = None,
    name: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> dict[str, Any]:
    """DescribeCustomKeyStores: the caller's stores, or the one named by id or name."""
    limit = limit or 100
    params: dict[str, Any] = {"Limit": limit}
    if store_id:
        params["CustomKeyStoreId"] = store_id
    if name:
        params["CustomKeyStoreName"] = name
    with audited(caller, "DescribeCustomKeyStores", request_parameters=params):
        authorize(caller=caller, action="kms:DescribeCustomKeyStores")
        if store_id and name:
            raise ValidationError("Specify either CustomKeyStoreId or CustomKeyStoreName, not both.")
        qs = CustomKeyStore.objects.filter(account_id=caller.account_id, region=caller.region)
        if store_id:
            qs = qs.filter(id=store_id)
        if name:
            qs = qs.filter(name=name)
        if (store_id or name) and not qs.exists():
            raise CustomKeyStoreNotFound(f"Custom key store {store_id or name} does not exist.")
        qs = qs.order_by("id")
        if marker:
            (last_id,) = selectors.decode_marker(marker, 1)
            qs = qs.filter(id__gt=str(last_id))
        page = list(qs[: limit + 1])
        truncated = len(page) > limit
        page = page[:limit]
        result: dict[str, Any] = {"CustomKeyStores": [store_description(s) for s in page], "Truncated": truncated}
        if truncated:
            result["NextMarker"] = selectors.encode_marker([page[-1].id])
        return result


# -- validation ------------------------------------------------------------------


@dataclass
class _Xks:
    endpoint: str | None
    path: str | None
    connectivity: str | None
    access_key_id: str | None
    secret: str | None


def _xks_args(params: Mapping[str, Any]) -> _Xks:
    credential = params.get("XksProxyAuthenticationCredential") or {}
    return _Xks(
        endpoint=params.get("XksProxyUriEndpoint"),
        path=params.get("XksProxyUriPath"),
        connectivity=params.get("XksProxyConnectivity"),
        access_key_id=credential.get("AccessKeyId"),
        secret=credential.get("RawSecretAccessKey"),
    )


def _check_trust_anchor(pem: str) -> None:
    try:
        x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise IncorrectTrustAnchor("The TrustAnchorCertificate is not a PEM-encoded X.509 certificate.") from exc


def _check_token(label: str, *, exclude: str | None = None) -> None:
    """The token exists, has a user PIN, and backs no other store."""
    library = pkcs11_library()
    try:
        pkcs11.token_probe(library=library, label=label)
    except pkcs11.TokenError as exc:
        if exc.reason == "not-initialized":
            raise CloudHsmClusterNotActive(f"The token {label} has no user PIN set.") from exc
        if exc.reason == "library":
            raise CloudHsmClusterInvalidConfiguration(f"The PKCS#11 library cannot be used: {exc}") from exc
        raise CloudHsmClusterNotFound(f"No PKCS#11 token is labelled {label}.") from exc
    if label == settings.KMSWEB_ROOT_KEY_PKCS11_TOKEN_LABEL and library == settings.KMSWEB_ROOT_KEY_PKCS11_LIBRARY:
        raise CloudHsmClusterInUse(f"The token {label} holds kmsweb's root key and backs no custom key store.")
    in_use = CustomKeyStore.objects.filter(store_type=CustomKeyStoreType.AWS_CLOUDHSM, cloud_hsm_cluster_id=label)
    if exclude:
        in_use = in_use.exclude(id=exclude)
    if in_use.exists():
        raise CloudHsmClusterInUse(f"The token {label} is already associated with a custom key store.")


def _check_name(caller: Caller, name: str, *, exclude: str | None = None) -> None:
    taken = CustomKeyStore.objects.filter(account_id=caller.account_id, region=caller.region, name=name)
    if exclude:
        taken = taken.exclude(id=exclude)
    if taken.exists():
        raise CustomKeyStoreNameInUse(f"A custom key store named {name} already exists in this account and region.")


def _check_xks_uri(caller: Caller, endpoint: str, path: str, *, exclude: str | None = None) -> None:
    taken = CustomKeyStore.objects.filter(
        account_id=caller.account_id,
        region=caller.region,
        store_type=CustomKeyStoreType.EXTERNAL_KEY_STORE,
        xks_proxy_uri_endpoint=endpoint,
        xks_proxy_uri_path=path,
    )
    if exclude:
        taken = taken.exclude(id=exclude)
    if taken.exists():
        raise XksProxyUriInUse(f"Another external key store uses {endpoint}{path}.")


def _new_store_id() -> str:
    # AWS's shape: "cks-" and 17 hexadecimal digits.
    return "cks-" + secrets.token_hex(9)[:17]


# -- the operations ---------------------------------------------------------------


def custom_key_store_create(*, caller: Caller, params: Mapping[str, Any]) -> CustomKeyStore:
    """CreateCustomKeyStore: a DISCONNECTED store; the PIN or proxy secret is stored encrypted.

    AWS_CLOUDHSM needs CloudHsmClusterId (a token label), TrustAnchorCertificate
    and KeyStorePassword; EXTERNAL_KEY_STORE needs the proxy's URI endpoint and
    path and its authentication credential, and kmsweb checks the proxy's
    health with them (as AWS does).
    """
    store_type = params.get("CustomKeyStoreType") or CustomKeyStoreType.AWS_CLOUDHSM
    name = params.get("CustomKeyStoreName", "")
    with audited(caller, "CreateCustomKeyStore", request_parameters=_loggable(params)) as op:
        authorize(caller=caller, action="kms:CreateCustomKeyStore")
        if "\x00" in name:
            raise ValidationError("CustomKeyStoreName must not contain the NUL character (U+0000).")
        _check_name(caller, name)
        if CustomKeyStore.objects.filter(account_id=caller.account_id, region=caller.region).count() >= (
            MAX_STORES_PER_ACCOUNT
        ):
            raise _limit()
        store = CustomKeyStore(
            id=_new_store_id(),
            account_id=caller.account_id,
            region=caller.region,
            name=name,
            store_type=store_type,
            connection_state=ConnectionState.DISCONNECTED,
            created_at=timezone.now(),
        )
        if store_type == CustomKeyStoreType.AWS_CLOUDHSM:
            _refuse_xks_params(params)
            cluster = params.get("CloudHsmClusterId")
            anchor = params.get("TrustAnchorCertificate")
            password = params.get("KeyStorePassword")
            if not (cluster and anchor and password):
                raise ValidationError(
                    "An AWS_CLOUDHSM key store needs CloudHsmClusterId, TrustAnchorCertificate and KeyStorePassword."
                )
            _check_trust_anchor(anchor)
            _check_token(cluster)
            store.cloud_hsm_cluster_id = cluster
            store.trust_anchor_certificate = anchor
            secret = password
        else:
            _refuse_cloudhsm_params(params)
            args = _xks_args(params)
            if not (args.endpoint and args.path and args.access_key_id and args.secret):
                raise ValidationError(
                    "An EXTERNAL_KEY_STORE key store needs XksProxyUriEndpoint, XksProxyUriPath and "
                    "XksProxyAuthenticationCredential."
                )
            _check_connectivity(args.connectivity)
            _check_xks_uri(caller, args.endpoint, args.path)
            store.xks_proxy_uri_endpoint = args.endpoint
            store.xks_proxy_uri_path = args.path
            store.xks_proxy_connectivity = PUBLIC_ENDPOINT
            store.xks_proxy_access_key_id = args.access_key_id
            secret = args.secret
            try:
                xks.health(store_endpoint(store, secret=secret), xks_metadata(caller, "CreateCustomKeyStore"))
            except xks.XksError as exc:
                raise xks_failure(exc) from exc
        store.secret_ciphertext = seal_secret(store.id, secret)
        store.save(force_insert=True)
        op.response_elements = {"CustomKeyStoreId": store.id}
        return store


def _limit() -> KmsError:
    return LimitExceeded(f"An account can have at most {MAX_STORES_PER_ACCOUNT} custom key stores in a region.")


def _loggable(params: Mapping[str, Any]) -> dict[str, Any]:
    """The request parameters fit for the audit trail: no password, no proxy credential secret."""
    out = {k: v for k, v in params.items() if k not in ("KeyStorePassword", "XksProxyAuthenticationCredential")}
    credential = params.get("XksProxyAuthenticationCredential")
    if isinstance(credential, Mapping) and credential.get("AccessKeyId"):
        out["XksProxyAuthenticationCredential"] = {"AccessKeyId": credential["AccessKeyId"]}
    return out


_XKS_MEMBERS = (
    "XksProxyUriEndpoint",
    "XksProxyUriPath",
    "XksProxyVpcEndpointServiceName",
    "XksProxyVpcEndpointServiceOwner",
    "XksProxyAuthenticationCredential",
    "XksProxyConnectivity",
)
_CLOUDHSM_MEMBERS = ("CloudHsmClusterId", "TrustAnchorCertificate", "KeyStorePassword")


def _refuse_xks_params(params: Mapping[str, Any]) -> None:
    given = [m for m in _XKS_MEMBERS if params.get(m)]
    if given:
        raise ValidationError(f"{', '.join(given)} apply only to EXTERNAL_KEY_STORE key stores.")


def _refuse_cloudhsm_params(params: Mapping[str, Any]) -> None:
    given = [m for m in _CLOUDHSM_MEMBERS if params.get(m)]
    if given:
        raise ValidationError(f"{', '.join(given)} apply only to AWS_CLOUDHSM key stores.")


def _check_connectivity(connectivity: str | None) -> None:
    if connectivity not in (None, PUBLIC_ENDPOINT):
        raise XksProxyInvalidConfiguration(
            "kmsweb reaches XKS proxies over public endpoints only (XksProxyConnectivity PUBLIC_ENDPOINT)."
        )


def _locked(caller: Caller, store_id: str) -> CustomKeyStore:
    custom_key_store_get_for(caller=caller, store_id=store_id)
    return CustomKeyStore.objects.select_for_update().get(id=store_id)


def custom_key_store_update(*, caller: Caller, params: Mapping[str, Any]) -> None:
    """UpdateCustomKeyStore. A CloudHSM store must be DISCONNECTED; an external
    key store may change its name, URI path and credential while connected."""
    store_id = params["CustomKeyStoreId"]
    with audited(caller, "UpdateCustomKeyStore", request_parameters=_loggable(params)):
        authorize(caller=caller, action="kms:UpdateCustomKeyStore")
        store = _locked(caller, store_id)
        new_name = params.get("NewCustomKeyStoreName")
        if store.store_type == CustomKeyStoreType.AWS_CLOUDHSM:
            _refuse_xks_params(params)
            _require_disconnected(store, "UpdateCustomKeyStore")
            cluster = params.get("CloudHsmClusterId")
            if cluster and cluster != store.cloud_hsm_cluster_id:
                raise CloudHsmClusterNotRelated(
                    f"The token {cluster} is not the token of {store.id}; kmsweb cannot tell that it holds the "
                    "store's keys."
                )
            if params.get("KeyStorePassword"):
                store.secret_ciphertext = seal_secret(store.id, params["KeyStorePassword"])
        else:
            _refuse_cloudhsm_params(params)
            args = _xks_args(params)
            if args.endpoint or args.connectivity or params.get("XksProxyVpcEndpointServiceName"):
                _require_disconnected(store, "UpdateCustomKeyStore")
            _check_connectivity(args.connectivity)
            endpoint = args.endpoint or store.xks_proxy_uri_endpoint
            path = args.path or store.xks_proxy_uri_path
            _check_xks_uri(caller, endpoint, path, exclude=store.id)
            store.xks_proxy_uri_endpoint, store.xks_proxy_uri_path = endpoint, path
            secret = None
            if args.access_key_id and args.secret:
                store.xks_proxy_access_key_id = args.access_key_id
                secret = args.secret
                store.secret_ciphertext = seal_secret(store.id, secret)
            if args.endpoint or args.path or secret:
                try:
                    xks.health(store_endpoint(store, secret=secret), xks_metadata(caller, "UpdateCustomKeyStore"))
                except xks.XksError as exc:
                    raise xks_failure(exc) from exc
        if new_name:
            if "\x00" in new_name:
                raise ValidationError("NewCustomKeyStoreName must not contain the NUL character (U+0000).")
            _check_name(caller, new_name, exclude=store.id)
            store.name = new_name
        store.save()


def _require_disconnected(store: CustomKeyStore, operation: str) -> None:
    if store.connection_state != ConnectionState.DISCONNECTED:
        raise CustomKeyStoreInvalidState(
            f"{operation} needs the custom key store {store.id} to be DISCONNECTED; it is {store.connection_state}."
        )


def custom_key_store_delete(*, caller: Caller, store_id: str) -> None:
    """DeleteCustomKeyStore: only a DISCONNECTED store without keys (deleted keys' tombstones let go of it)."""
    with audited(caller, "DeleteCustomKeyStore", request_parameters={"CustomKeyStoreId": store_id}):
        authorize(caller=caller, action="kms:DeleteCustomKeyStore")
        store = _locked(caller, store_id)
        _require_disconnected(store, "DeleteCustomKeyStore")
        if Key.objects.filter(custom_key_store=store, deleted_at__isnull=True).exists():
            raise CustomKeyStoreHasCMKs(
                f"The custom key store {store.id} still has KMS keys: schedule their deletion and wait until "
                "they are deleted."
            )
        Key.objects.filter(custom_key_store=store).update(custom_key_store=None)
        store.delete()


def custom_key_store_connect(*, caller: Caller, store_id: str) -> None:
    """ConnectCustomKeyStore: log in to the token (or ask the proxy's health).

    The call succeeds either way, as AWS's does; the outcome is the store's
    ConnectionState (CONNECTED, or FAILED with a ConnectionErrorCode) and
    is recorded in the event's additionalEventData. On success the store's
    keys leave Unavailable for the state they had.
    """
    with audited(caller, "ConnectCustomKeyStore", request_parameters={"CustomKeyStoreId": store_id}) as op:
        authorize(caller=caller, action="kms:ConnectCustomKeyStore")
        store = _locked(caller, store_id)
        if store.connection_state in (ConnectionState.FAILED, ConnectionState.DISCONNECTING):
            raise CustomKeyStoreInvalidState(
                f"The custom key store {store.id} is {store.connection_state}: disconnect it before connecting it."
            )
        if store.connection_state == ConnectionState.CONNECTED:
            return
        error_code = _try_connect(caller, store)
        if error_code:
            store.connection_state = ConnectionState.FAILED
            store.connection_error_code = error_code
        else:
            store.connection_state = ConnectionState.CONNECTED
            store.connection_error_code = ""
            Key.objects.filter(custom_key_store=store, state=KeyState.UNAVAILABLE).exclude(
                state_when_connected=""
            ).update(state=F("state_when_connected"), state_when_connected="")
        store.save(update_fields=["connection_state", "connection_error_code"])
        generation_bump(KEYS)
        op.additional_event_data["connectionState"] = store.connection_state
        if error_code:
            op.additional_event_data["connectionErrorCode"] = error_code


def _try_connect(caller: Caller, store: CustomKeyStore) -> str:
    """'' when the store's backend accepts kmsweb, else the ConnectionErrorCode."""
    if store.store_type == CustomKeyStoreType.AWS_CLOUDHSM:
        if not settings.KMSWEB_PKCS11_LIBRARY:
            return "CLUSTER_NOT_FOUND"
        try:
            store_token(store).verify()
        except pkcs11.TokenError as exc:
            return TOKEN_ERROR_CODES.get(exc.reason, "INTERNAL_ERROR")
        return ""
    try:
        xks.health(store_endpoint(store), xks_metadata(caller, "ConnectCustomKeyStore"))
    except xks.XksError as exc:
        return XKS_ERROR_CODES.get(exc.kind, "XKS_PROXY_INVALID_CONFIGURATION")
    return ""


def custom_key_store_disconnect(*, caller: Caller, store_id: str) -> None:
    """DisconnectCustomKeyStore: the store's Enabled and Disabled keys become Unavailable."""
    with audited(caller, "DisconnectCustomKeyStore", request_parameters={"CustomKeyStoreId": store_id}):
        authorize(caller=caller, action="kms:DisconnectCustomKeyStore")
        store = _locked(caller, store_id)
        if store.connection_state in (ConnectionState.DISCONNECTED, ConnectionState.DISCONNECTING):
            raise CustomKeyStoreInvalidState(f"The custom key store {store.id} is already {store.connection_state}.")
        store_keys_unavailable(store)
        store.connection_state = ConnectionState.DISCONNECTED
        store.connection_error_code = ""
        store.save(update_fields=["connection_state", "connection_error_code"])
        if store.store_type == CustomKeyStoreType.AWS_CLOUDHSM and settings.KMSWEB_PKCS11_LIBRARY:
            # This process logs out at once; others find the store disconnected
            # (their keys are Unavailable) and never use their sessions again.
            pkcs11.Pkcs11Token(library=pkcs11_library(), label=store.cloud_hsm_cluster_id, pin="").forget()


def store_keys_unavailable(store: CustomKeyStore) -> None:
    """Enabled and Disabled keys of ``store`` become Unavailable, remembering their state."""
    Key.objects.filter(custom_key_store=store, state__in=(KeyState.ENABLED, KeyState.DISABLED)).update(
        state_when_connected=F("state"), state=KeyState.UNAVAILABLE
    )
    generation_bump(KEYS)
