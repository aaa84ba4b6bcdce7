"""The keys of custom key stores: CreateKey's checks, their material in the
store, and Encrypt/Decrypt/GenerateRandom done by the store (see
keys.services.key_stores for the two store types)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keys import xks
from keys.crypto import pkcs11
from keys.crypto.errors import CryptoError, DecryptionError
from keys.crypto.symmetric import external_aad, external_blob, external_parts
from keys.models import (
    ConnectionState,
    CustomKeyStore,
    CustomKeyStoreType,
    Key,
    KeyMaterial,
    KeyOrigin,
    KeySpec,
    KeyUsage,
)
from keys.services.store_backends import (
    custom_key_store_get_for,
    store_endpoint,
    store_token,
    token_key_label,
    xks_failure,
    xks_metadata,
)
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    CloudHsmClusterInvalidConfiguration,
    CustomKeyStoreInvalidState,
    InternalError,
    InvalidCiphertext,
    InvalidState,
    KmsError,
    UnsupportedOperation,
    ValidationError,
    XksKeyAlreadyInUse,
    XksKeyInvalidConfiguration,
    XksKeyNotFound,
)

_INVALID_CIPHERTEXT = "The ciphertext is invalid, was altered, or was not encrypted under this key and context."


def store_for_new_key(
    *, caller: Caller, store_id: str | None, origin: str, key_spec: str, key_usage: str, xks_key_id: str | None
) -> CustomKeyStore | None:
    """CreateKey's checks of a key for a custom key store; the store, or None for other keys."""
    store_origins = (KeyOrigin.AWS_CLOUDHSM, KeyOrigin.EXTERNAL_KEY_STORE)
    if origin not in store_origins:
        if store_id:
            # An unknown store is CustomKeyStoreNotFoundException whatever the Origin.
            custom_key_store_get_for(caller=caller, store_id=store_id)
            raise UnsupportedOperation(
                f"CustomKeyStoreId needs Origin AWS_CLOUDHSM or EXTERNAL_KEY_STORE, not {origin}."
            )
        if xks_key_id:
            raise ValidationError("XksKeyId is valid only with Origin EXTERNAL_KEY_STORE.")
        return None
    if not store_id:
        raise ValidationError(f"Origin {origin} needs a CustomKeyStoreId.")
    store = custom_key_store_get_for(caller=caller, store_id=store_id)
    if store.store_type != origin:
        raise UnsupportedOperation(
            f"The custom key store {store.id} is {store.store_type}; Origin {origin} needs one of type {origin}."
        )
    if key_spec != KeySpec.SYMMETRIC_DEFAULT or key_usage != KeyUsage.ENCRYPT_DECRYPT:
        raise UnsupportedOperation("Custom key stores hold symmetric encryption keys only (SYMMETRIC_DEFAULT).")
    if store.connection_state != ConnectionState.CONNECTED:
        raise CustomKeyStoreInvalidState(
            f"The custom key store {store.id} is {store.connection_state}; keys are created only in a connected store."
        )
    if origin == KeyOrigin.EXTERNAL_KEY_STORE:
        if not xks_key_id:
            raise ValidationError("Origin EXTERNAL_KEY_STORE needs an XksKeyId.")
        if Key.objects.filter(custom_key_store=store, xks_key_id=xks_key_id, deleted_at__isnull=True).exists():
            raise XksKeyAlreadyInUse(f"The external key {xks_key_id} already backs a KMS key in {store.id}.")
    elif xks_key_id:
        raise ValidationError("XksKeyId is valid only with Origin EXTERNAL_KEY_STORE.")
    return store


def store_key_material(*, caller: Caller, key: Key, store: CustomKeyStore, now: Any) -> KeyMaterial:
    """Make (CloudHSM) or check (external) the key's material in its store; its version 1 row.

    The row holds no material: ``wrapped`` is empty and ``root_key_id`` empty.
    """
    from keys.services.material import new_material_id

    if store.store_type == CustomKeyStoreType.AWS_CLOUDHSM:
        try:
            store_token(store).generate_aes_key(token_key_label(key), key.id.bytes)
        except pkcs11.TokenError as exc:
            raise CloudHsmClusterInvalidConfiguration(f"The token could not create the key: {exc}") from exc
    else:
        _check_external_key(caller, store, key)
    return KeyMaterial.objects.create(
        key=key, version=1, material_id=new_material_id(), wrapped=b"", root_key_id="", created_at=now
    )


def _check_external_key(caller: Caller, store: CustomKeyStore, key: Key) -> None:
    try:
        meta = xks.key_metadata(store_endpoint(store), key.xks_key_id, xks_metadata(caller, "CreateKey", key))
    except xks.XksError as exc:
        if exc.kind == "key-not-found":
            raise XksKeyNotFound(f"The XKS proxy knows no key {key.xks_key_id}.") from exc
        raise xks_failure(exc) from exc
    usage = meta.get("keyUsage") or []
    if (
        meta.get("keySpec") != "AES_256"
        or not isinstance(usage, list)
        or not {"ENCRYPT", "DECRYPT"} <= set(usage)
        or meta.get("keyStatus") != "ENABLED"
    ):
        raise XksKeyInvalidConfiguration(
            f"The external key {key.xks_key_id} must be an enabled AES_256 key that can ENCRYPT and DECRYPT."
        )


def store_connected(key: Key) -> bool:
    """Whether the custom key store of ``key`` is connected."""
    return CustomKeyStore.objects.filter(
        id=key.custom_key_store_id, connection_state=ConnectionState.CONNECTED
    ).exists()


def _usable_store(key: Key) -> CustomKeyStore:
    store = CustomKeyStore.objects.filter(id=key.custom_key_store_id).first()
    if store is None or store.connection_state != ConnectionState.CONNECTED:
        raise InvalidState(f"{key.arn} is unavailable: its custom key store is not connected.")
    return store


def store_encrypt(
    *,
    caller: Caller,
    key: Key,
    material: KeyMaterial,
    plaintext: bytes,
    context: Mapping[str, str] | None,
    operation: str,
) -> bytes:
    """kmsweb's blob, AES-GCM done by the key's store."""
    store = _usable_store(key)
    aad = external_aad(key.id, material.version, context)
    try:
        if store.store_type == CustomKeyStoreType.AWS_CLOUDHSM:
            iv, sealed = store_token(store).encrypt(token_key_label(key), plaintext, aad)
        else:
            iv, body, tag = xks.encrypt(
                store_endpoint(store), key.xks_key_id, plaintext, aad, xks_metadata(caller, operation, key)
            )
            sealed = body + tag
        return external_blob(key.id, material.version, iv, sealed)
    except (pkcs11.TokenError, xks.XksError) as exc:
        raise _unavailable(key, exc) from exc
    except CryptoError as exc:
        raise InternalError("The custom key store's answer is not a valid AES-GCM result.") from exc


def store_decrypt(
    *, caller: Caller, key: Key, material: KeyMaterial, blob: bytes, context: Mapping[str, str] | None, operation: str
) -> bytes:
    """The plaintext of a blob of a custom key store's key, decrypted by the store."""
    store = _usable_store(key)
    aad = external_aad(key.id, material.version, context)
    try:
        iv, sealed = external_parts(blob)
        if store.store_type == CustomKeyStoreType.AWS_CLOUDHSM:
            return store_token(store).decrypt(token_key_label(key), iv, sealed, aad)
        return xks.decrypt(
            store_endpoint(store),
            key.xks_key_id,
            iv,
            sealed[:-16],
            sealed[-16:],
            aad,
            xks_metadata(caller, operation, key),
        )
    except DecryptionError as exc:
        raise InvalidCiphertext(_INVALID_CIPHERTEXT) from exc
    except xks.XksError as exc:
        if exc.kind == "invalid-ciphertext":
            raise InvalidCiphertext(_INVALID_CIPHERTEXT) from exc
        raise _unavailable(key, exc) from exc
    except pkcs11.TokenError as exc:
        raise _unavailable(key, exc) from exc
    except CryptoError as exc:
        raise InvalidCiphertext(_INVALID_CIPHERTEXT) from exc


def _unavailable(key: Key, exc: Exception) -> KmsError:
    return InvalidState(f"{key.arn} is unavailable: its custom key store did not complete the request ({exc}).")


def store_random(*, caller: Caller, store_id: str, number_of_bytes: int) -> bytes:
    """GenerateRandom from a connected CloudHSM key store's token."""
    store = custom_key_store_get_for(caller=caller, store_id=store_id)
    if store.store_type != CustomKeyStoreType.AWS_CLOUDHSM:
        raise UnsupportedOperation(
            "GenerateRandom with a CustomKeyStoreId is supported only for AWS_CLOUDHSM key stores."
        )
    if store.connection_state != ConnectionState.CONNECTED:
        raise CustomKeyStoreInvalidState(f"The custom key store {store.id} is {store.connection_state}, not CONNECTED.")
    try:
        return store_token(store).random(number_of_bytes)
    except pkcs11.TokenError as exc:
        raise CustomKeyStoreInvalidState(f"The custom key store {store.id} did not answer: {exc}") from exc
