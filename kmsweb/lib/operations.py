"""The KMS operations table: one row per operation, read by everything that sorts operations.

The policy engine (which operations an encryption-context grant constraint
applies to), grants (which operations a grant may list for which key), usage
metrics, last-used tracking and alarms (which operations are cryptographic), and
the audit recorder (CloudTrail's ``readOnly``, the members never recorded) all
read this table instead of keeping their own lists.

Rows are named by their IAM action without the ``kms:`` prefix. Besides the
API operations of AWS's KMS model there are two permission-only rows,
``ReEncryptFrom`` and ``ReEncryptTo``: the ReEncrypt operation is authorized
as both, and grants list them, never ``ReEncrypt``.

Standard library only: the pure policy engine imports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Kinds of key a grant operation applies to: symmetric encryption keys, and the
# other keys by their key usage (AWS's "Grant operations" table).
SYMMETRIC = "SYMMETRIC_DEFAULT"
ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"  # asymmetric encryption keys
SIGN_VERIFY = "SIGN_VERIFY"
GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"
KEY_AGREEMENT = "KEY_AGREEMENT"
KEY_ENCAPSULATION = "ENCAPSULATE_DECAPSULATE"
KEY_KINDS = (SYMMETRIC, ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC, KEY_AGREEMENT, KEY_ENCAPSULATION)


@dataclass(frozen=True, slots=True)
class Operation:
    """What kmsweb needs to know of one KMS operation (or permission-only action)."""

    name: str
    # CloudTrail's readOnly: the call changes no state.
    read_only: bool = False
    # A cryptographic use of a key: counted in usage metrics, alarms and
    # GetKeyLastUsage (botocore's KeyLastUsageTrackingOperation).
    crypto: bool = False
    # Takes an encryption context: grant constraints and kms:EncryptionContext* apply.
    context_bound: bool = False
    # The kinds of key (above) whose grants may list this operation; empty
    # for an operation no grant can allow.
    grant_for: frozenset[str] = frozenset()
    # Request and response members that carry secrets or ciphertext: never recorded.
    redacted: frozenset[str] = frozenset()
    # False for ReEncryptFrom / ReEncryptTo, which are permissions, not calls.
    api: bool = True

    @property
    def action(self) -> str:
        return f"kms:{self.name}"


_ALL_KEYS = frozenset(KEY_KINDS)


def _op(
    name: str,
    *,
    read_only: bool = False,
    crypto: bool = False,
    context_bound: bool = False,
    grant_for: Iterable[str] = (),
    redacted: Iterable[str] = (),
    api: bool = True,
) -> Operation:
    return Operation(
        name=name,
        read_only=read_only,
        crypto=crypto,
        context_bound=context_bound,
        grant_for=frozenset(grant_for),
        redacted=frozenset(redacted),
        api=api,
    )


_ROWS = (
    # Cryptographic operations.
    _op(
        "Encrypt",
        read_only=True,
        crypto=True,
        context_bound=True,
        grant_for=(SYMMETRIC, ENCRYPT_DECRYPT),
        redacted=("Plaintext", "CiphertextBlob"),
    ),
    _op(
        "Decrypt",
        read_only=True,
        crypto=True,
        context_bound=True,
        grant_for=(SYMMETRIC, ENCRYPT_DECRYPT),
        redacted=("CiphertextBlob", "Plaintext", "CiphertextForRecipient"),
    ),
    _op(
        "ReEncrypt",
        read_only=True,
        crypto=True,
        context_bound=True,
        redacted=("CiphertextBlob", "SourceCiphertextBlob"),
    ),
    _op("ReEncryptFrom", read_only=True, context_bound=True, grant_for=(SYMMETRIC, ENCRYPT_DECRYPT), api=False),
    _op("ReEncryptTo", read_only=True, context_bound=True, grant_for=(SYMMETRIC, ENCRYPT_DECRYPT), api=False),
    _op(
        "GenerateDataKey",
        read_only=True,
        crypto=True,
        context_bound=True,
        grant_for=(SYMMETRIC,),
        redacted=("CiphertextBlob", "Plaintext", "CiphertextForRecipient"),
    ),
    _op(
        "GenerateDataKeyWithoutPlaintext",
        read_only=True,
        crypto=True,
        context_bound=True,
        grant_for=(SYMMETRIC,),
        redacted=("CiphertextBlob",),
    ),
    _op(
        "GenerateDataKeyPair",
        read_only=True,
        crypto=True,
        context_bound=True,
        grant_for=(SYMMETRIC,),
        redacted=("PrivateKeyCiphertextBlob", "PrivateKeyPlaintext", "PublicKey", "CiphertextForRecipient"),
    ),
    _op(
        "GenerateDataKeyPairWithoutPlaintext",
        read_only=True,
        crypto=True,
        context_bound=True,
        grant_for=(SYMMETRIC,),
        redacted=("PrivateKeyCiphertextBlob", "PublicKey"),
    ),
    _op("Sign", read_only=True, crypto=True, grant_for=(SIGN_VERIFY,), redacted=("Message", "Signature")),
    _op("Verify", read_only=True, crypto=True, grant_for=(SIGN_VERIFY,), redacted=("Message", "Signature")),
    _op("GenerateMac", read_only=True, crypto=True, grant_for=(GENERATE_VERIFY_MAC,), redacted=("Message", "Mac")),
    _op("VerifyMac", read_only=True, crypto=True, grant_for=(GENERATE_VERIFY_MAC,), redacted=("Message", "Mac")),
    _op(
        "DeriveSharedSecret",
        read_only=True,
        crypto=True,
        grant_for=(KEY_AGREEMENT,),
        redacted=("PublicKey", "SharedSecret", "CiphertextForRecipient"),
    ),
    _op(
        "Encapsulate",
        read_only=True,
        crypto=True,
        grant_for=(KEY_ENCAPSULATION,),
        redacted=("SharedSecret", "SharedSecretCiphertextBlob"),
    ),
    _op(
        "Decapsulate",
        read_only=True,
        crypto=True,
        grant_for=(KEY_ENCAPSULATION,),
        redacted=("SharedSecretCiphertextBlob", "SharedSecret"),
    ),
    _op("GenerateRandom", read_only=True, redacted=("Plaintext", "CiphertextForRecipient")),
    # Reads.
    _op(
        "GetPublicKey",
        read_only=True,
        grant_for=(ENCRYPT_DECRYPT, SIGN_VERIFY, KEY_AGREEMENT, KEY_ENCAPSULATION),
        redacted=("PublicKey",),
    ),
    _op("DescribeKey", read_only=True, grant_for=_ALL_KEYS),
    _op("DescribeCustomKeyStores", read_only=True),
    _op("GetKeyLastUsage", read_only=True),
    _op("GetKeyPolicy", read_only=True),
    _op("GetKeyRotationStatus", read_only=True),
    _op("ListAliases", read_only=True),
    _op("ListGrants", read_only=True),
    _op("ListKeyPolicies", read_only=True),
    _op("ListKeyRotations", read_only=True),
    _op("ListKeys", read_only=True),
    _op("ListResourceTags", read_only=True),
    _op("ListRetirableGrants", read_only=True),
    # Grants.
    _op("CreateGrant", grant_for=_ALL_KEYS),
    _op("RetireGrant", grant_for=_ALL_KEYS),
    _op("RevokeGrant"),
    # Changes to keys, aliases, tags and key stores.
    _op("CancelKeyDeletion"),
    _op("ConnectCustomKeyStore"),
    _op("CreateAlias"),
    _op("CreateCustomKeyStore", redacted=("KeyStorePassword", "RawSecretAccessKey")),
    _op("CreateKey"),
    _op("DeleteAlias"),
    _op("DeleteCustomKeyStore"),
    _op("DeleteImportedKeyMaterial"),
    _op("DisableKey"),
    _op("DisableKeyRotation"),
    _op("DisconnectCustomKeyStore"),
    _op("EnableKey"),
    _op("EnableKeyRotation"),
    _op("GetParametersForImport", redacted=("ImportToken", "PublicKey")),
    _op("ImportKeyMaterial", redacted=("ImportToken", "EncryptedKeyMaterial")),
    _op("PutKeyPolicy"),
    _op("ReplicateKey"),
    _op("RotateKeyOnDemand"),
    _op("ScheduleKeyDeletion"),
    _op("TagResource"),
    _op("UntagResource"),
    _op("UpdateAlias"),
    _op("UpdateCustomKeyStore", redacted=("KeyStorePassword", "RawSecretAccessKey")),
    _op("UpdateKeyDescription"),
    _op("UpdatePrimaryRegion"),
)

OPERATIONS: dict[str, Operation] = {row.name: row for row in _ROWS}

# The views the rest of kmsweb reads.
# The operations of the API (the model's names: a test compares them).
API_OPERATIONS: frozenset[str] = frozenset(o.name for o in _ROWS if o.api)
CONTEXT_BOUND: frozenset[str] = frozenset(o.name for o in _ROWS if o.context_bound)
CRYPTO: tuple[str, ...] = tuple(o.name for o in _ROWS if o.crypto)
REDACTED: frozenset[str] = frozenset(m for o in _ROWS for m in o.redacted)


def grant_operations(kind: str) -> frozenset[str]:
    """The operations a grant may list for a key of ``kind`` (one of ``KEY_KINDS``)."""
    return _GRANT_OPERATIONS.get(kind, frozenset())


_GRANT_OPERATIONS: dict[str, frozenset[str]] = {
    kind: frozenset(o.name for o in _ROWS if kind in o.grant_for) for kind in KEY_KINDS
}


def is_read_only(event_name: str) -> bool:
    """CloudTrail's readOnly for a KMS event name; False for a name not in the table."""
    row = OPERATIONS.get(event_name)
    return row is not None and row.read_only
