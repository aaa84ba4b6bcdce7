"""AWS's key state table, generated: every operation on a key, in every key state.

The table is AWS's, encoded as data: AWS KMS Developer Guide, "Key states of
AWS KMS keys" (docs.aws.amazon.com/kms/latest/developerguide/key-state.html),
section "Key state table". Each cell is what AWS answers for the operation
on a key in that state: success, or the error code its footnote names
([1] DisabledException, [3] KMSInvalidStateException "is pending deletion",
[4] KMSInvalidStateException "is not pending deletion", [5]
KMSInvalidStateException "is pending import", [6]/[7]/[9]
UnsupportedOperationException for keys with imported material or keys that
cannot have it). Where AWS writes "[2] or [3]" for a pending deletion key
(DisabledException or KMSInvalidStateException), kmsweb answers [3].

A test is generated per operation and state: it makes a real key of the
kind the operation needs, does in the Enabled state what the call needs
first (a ciphertext, a signature, a grant, an alias, import parameters),
moves the key to the state through the services (DisableKey,
ScheduleKeyDeletion, DeleteImportedKeyMaterial), makes the call past the
signature check (``tests.api.direct``) and compares the answer with the
cell. PendingImport applies to keys with imported material only, so that
column uses a symmetric key with imported material, and is N/A for the
operations of asymmetric and HMAC keys. Unavailable applies to keys in a
custom key store only, which are symmetric encryption keys: that column
uses a key of a CloudHSM key store (on a SoftHSM2 token made once for the
module) whose store is then disconnected, and is N/A for the operations of
other keys. Its cells follow the table's notes: [11] KMSInvalidStateException
"is unavailable" for cryptographic operations and EnableKey/DisableKey, [7]
UnsupportedOperationException for rotation (keys in custom key stores do
not rotate), and success for what only reads or manages the key.

PendingReplicaDeletion applies to
multi-Region primary keys only: that column uses a multi-Region primary key
of the same kind, given a replica and then scheduled for deletion; AWS's
table gives it the PendingDeletion column. ReplicateKey and
UpdatePrimaryRegion act on multi-Region primary keys in every column.

Adding a state (Creating, Updating for multi-Region keys): add it to
``STATES`` with a way to reach it in ``_move_to``, and give the rows a value for it through
``row(...)``'s keyword columns; rows without a value are not generated.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keys import services as key_services
from keys.models import Key, KeyState
from keys.services.importing import FINGERPRINT_PURPOSE, TOKEN_PURPOSE
from keys.services.platform import platform_key_get_or_create
from tests.api.direct import call
from tests.conftest import Persona
from tests.importing import wrap
from tests.softhsm import Token, cloudhsm_params, module_token

pytestmark = pytest.mark.django_db

OK = "OK"
N_A = "N/A"  # the state does not apply to the kind of key the operation needs
DIS = "DisabledException"
INV = "KMSInvalidStateException"
UNS = "UnsupportedOperationException"

STATES = ("Enabled", "Disabled", "PendingDeletion", "PendingImport", "Unavailable", "PendingReplicaDeletion")

# Another region, where the multi-Region keys of the table get their replica.
REPLICA_REGION = "eu-west-1"


def row(enabled: str, disabled: str, pending_deletion: str, pending_import: str, **more: str) -> dict[str, str]:
    """One row of the table; ``more`` holds the columns of states kmsweb adds later."""
    cells = {"Enabled": enabled, "Disabled": disabled, "PendingDeletion": pending_deletion}
    cells["PendingImport"] = pending_import
    cells.update({_state_name(name): value for name, value in more.items()})
    return cells


def _state_name(keyword: str) -> str:
    return "".join(part.capitalize() for part in keyword.split("_"))


ALL_OK = row(OK, OK, OK, OK, unavailable=OK, pending_replica_deletion=OK)
# Encrypt, Decrypt, GenerateDataKey*, ReEncrypt ([11] when Unavailable)
CRYPTO = row(OK, DIS, INV, INV, unavailable=INV, pending_replica_deletion=INV)
# Sign, Verify, GetPublicKey, *Mac, DeriveSharedSecret
ASYMMETRIC_CRYPTO = row(OK, DIS, INV, N_A, unavailable=N_A, pending_replica_deletion=INV)
# Encapsulate, Decapsulate (ML-KEM keys are single-Region here)
KEM_CRYPTO = row(OK, DIS, INV, N_A, unavailable=N_A)
# tags, description, aliases, ScheduleKeyDeletion
MANAGE = row(OK, OK, INV, OK, unavailable=OK, pending_replica_deletion=INV)
STATE_CHANGE = row(OK, OK, INV, INV, unavailable=INV, pending_replica_deletion=INV)  # EnableKey, DisableKey ([11])
# Enable/DisableKeyRotation ([1], [3], [6], [7])
ROTATION = row(OK, DIS, INV, UNS, unavailable=UNS, pending_replica_deletion=INV)
# GetParametersForImport, ImportKeyMaterial ([8])
IMPORT = row(OK, OK, INV, OK, unavailable=N_A, pending_replica_deletion=INV)

KEY_STATE_TABLE: dict[str, dict[str, str]] = {
    "CancelKeyDeletion": row(INV, INV, OK, INV, unavailable=INV, pending_replica_deletion=OK),
    "Decapsulate": KEM_CRYPTO,
    "CreateAlias": MANAGE,
    # A grant manages the key, which a disconnected store leaves manageable.
    "CreateGrant": row(OK, DIS, INV, INV, unavailable=OK),
    "Decrypt": CRYPTO,
    "DeleteAlias": ALL_OK,
    # Deleting the material of a key pending deletion succeeds and leaves it PendingDeletion.
    "DeleteImportedKeyMaterial": row(OK, OK, OK, OK, unavailable=N_A, pending_replica_deletion=OK),
    "DeriveSharedSecret": ASYMMETRIC_CRYPTO,
    "DescribeKey": ALL_OK,
    "DisableKey": STATE_CHANGE,
    "DisableKeyRotation": ROTATION,
    "EnableKey": STATE_CHANGE,
    "EnableKeyRotation": ROTATION,
    "Encapsulate": KEM_CRYPTO,
    "Encrypt": CRYPTO,
    "GenerateDataKey": CRYPTO,
    "GenerateDataKeyPair": CRYPTO,
    "GenerateDataKeyPairWithoutPlaintext": CRYPTO,
    "GenerateDataKeyWithoutPlaintext": CRYPTO,
    "GenerateMac": ASYMMETRIC_CRYPTO,
    "GetKeyLastUsage": ALL_OK,
    "GetKeyPolicy": ALL_OK,
    # Keys with imported material rotate on demand, so their rotation status and
    # rotations can be read; only automatic rotation is refused them ([6]).
    "GetKeyRotationStatus": ALL_OK,
    "GetParametersForImport": IMPORT,
    "GetPublicKey": ASYMMETRIC_CRYPTO,
    "ImportKeyMaterial": IMPORT,
    "ListAliases": ALL_OK,
    "ListGrants": ALL_OK,
    "ListKeyPolicies": ALL_OK,
    "ListKeyRotations": ALL_OK,
    "ListResourceTags": ALL_OK,
    "PutKeyPolicy": ALL_OK,
    "ReEncrypt": CRYPTO,
    # A disabled primary key cannot be replicated; one pending import can (its replica awaits the same material).
    "ReplicateKey": row(OK, DIS, INV, OK, pending_replica_deletion=INV),
    "RetireGrant": ALL_OK,
    "RevokeGrant": ALL_OK,
    # Keys with imported material rotate on demand, so a PendingImport one is [5], not [6].
    "RotateKeyOnDemand": row(OK, DIS, INV, INV, unavailable=UNS, pending_replica_deletion=INV),
    "ScheduleKeyDeletion": MANAGE,
    "Sign": ASYMMETRIC_CRYPTO,
    "TagResource": MANAGE,
    "UntagResource": MANAGE,
    "UpdateAlias": MANAGE,  # [10]: the target key's state decides
    "UpdateKeyDescription": MANAGE,
    # The primary key and its replica in the new primary Region must both be Enabled. A primary
    # key with a replica scheduled for deletion is PendingReplicaDeletion, never PendingDeletion.
    "UpdatePrimaryRegion": row(OK, DIS, N_A, INV, pending_replica_deletion=INV),
    "Verify": ASYMMETRIC_CRYPTO,
    "VerifyMac": ASYMMETRIC_CRYPTO,
}

# Operations that name no existing key, so the table leaves them out.
WITHOUT_A_KEY = {
    "CreateKey",
    "ListKeys",
    "GenerateRandom",
    "ListRetirableGrants",
    "CreateCustomKeyStore",
    "DescribeCustomKeyStores",
    "UpdateCustomKeyStore",
    "DeleteCustomKeyStore",
    "ConnectCustomKeyStore",
    "DisconnectCustomKeyStore",
}

# The kind of key each operation acts on (CreateKey's arguments).
KINDS: dict[str, dict[str, str]] = {
    "symmetric": {},
    "sign": {"key_spec": "ECC_NIST_P256", "key_usage": "SIGN_VERIFY"},
    "agreement": {"key_spec": "ECC_NIST_P256", "key_usage": "KEY_AGREEMENT"},
    "hmac": {"key_spec": "HMAC_256", "key_usage": "GENERATE_VERIFY_MAC"},
    "imported": {"origin": "EXTERNAL"},
    "kem": {"key_spec": "ML_KEM_768", "key_usage": "ENCAPSULATE_DECAPSULATE"},
    "store": {"origin": "AWS_CLOUDHSM"},
}
# The operations of multi-Region primary keys: a symmetric one (with imported
# material in the PendingImport column).
MULTI_REGION = "multi-Region"


@dataclass
class World:
    """What one generated case has at hand."""

    persona: Persona
    key: Key
    other: Key  # an Enabled symmetric key (ReEncrypt's destination, an alias's first target)
    made: dict[str, Any] = field(default_factory=dict)

    @property
    def key_id(self) -> str:
        # The KeyId on the wire: mrk-<hex> for a multi-Region key.
        return self.key.key_id

    def ok(self, operation: str, **params: Any) -> Any:
        answer = call(self.persona, operation, **params)
        assert answer.status == 200, answer.body
        return answer


Prepare = Callable[[World], None]
Params = Callable[[World], dict[str, Any]]


def _nothing(w: World) -> None:
    return None


def _encrypt(w: World) -> None:
    w.made["blob"] = w.ok("Encrypt", KeyId=w.key_id, Plaintext=b"state table").blob("CiphertextBlob")


def _sign(w: World) -> None:
    w.made["signature"] = w.ok("Sign", KeyId=w.key_id, Message=b"state table", SigningAlgorithm="ECDSA_SHA_256").blob(
        "Signature"
    )


def _mac(w: World) -> None:
    w.made["mac"] = w.ok("GenerateMac", KeyId=w.key_id, Message=b"state table", MacAlgorithm="HMAC_SHA_256").blob("Mac")


def _encapsulate(w: World) -> None:
    w.made["kem_blob"] = w.ok("Encapsulate", KeyId=w.key_id, EncapsulationAlgorithm="ML_KEM").blob(
        "SharedSecretCiphertextBlob"
    )


def _grant(w: World) -> None:
    answer = w.ok(
        "CreateGrant",
        KeyId=w.key_id,
        GranteePrincipal=w.persona.principal.arn,
        Operations=["Encrypt", "RetireGrant"],
    )
    w.made["grant_id"] = answer.out("GrantId")


def _alias(w: World) -> None:
    w.ok("CreateAlias", AliasName="alias/state-table", TargetKeyId=w.key_id)


def _alias_on_other(w: World) -> None:
    w.ok("CreateAlias", AliasName="alias/state-table", TargetKeyId=str(w.other.id))


def _replicate(w: World) -> None:
    w.ok("ReplicateKey", KeyId=w.key_id, ReplicaRegion=REPLICA_REGION)


def _import_parameters(w: World) -> None:
    params = w.ok(
        "GetParametersForImport",
        KeyId=w.key_id,
        WrappingAlgorithm="RSAES_OAEP_SHA_256",
        WrappingKeySpec="RSA_2048",
    )
    w.made["token"] = params.blob("ImportToken")
    w.made["wrapped"] = wrap(params.blob("PublicKey"), "RSAES_OAEP_SHA_256", w.made["material"])


def _peer_public_key() -> bytes:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@dataclass(frozen=True)
class Case:
    kind: str
    params: Params
    prepare: Prepare = _nothing


def _key(w: World) -> dict[str, Any]:
    return {"KeyId": w.key_id}


CASES: dict[str, Case] = {
    "CancelKeyDeletion": Case("symmetric", _key),
    "CreateAlias": Case("symmetric", lambda w: {"AliasName": "alias/state-table", "TargetKeyId": w.key_id}),
    "Decapsulate": Case(
        "kem",
        lambda w: {
            "KeyId": w.key_id,
            "SharedSecretCiphertextBlob": w.made["kem_blob"],
            "EncapsulationAlgorithm": "ML_KEM",
        },
        _encapsulate,
    ),
    "Encapsulate": Case("kem", lambda w: {"KeyId": w.key_id, "EncapsulationAlgorithm": "ML_KEM"}),
    "CreateGrant": Case(
        "symmetric",
        lambda w: {"KeyId": w.key_id, "GranteePrincipal": w.persona.principal.arn, "Operations": ["Encrypt"]},
    ),
    "Decrypt": Case("symmetric", lambda w: {"CiphertextBlob": w.made["blob"], "KeyId": w.key_id}, _encrypt),
    "DeleteAlias": Case("symmetric", lambda w: {"AliasName": "alias/state-table"}, _alias),
    "DeleteImportedKeyMaterial": Case("imported", _key),
    "DeriveSharedSecret": Case(
        "agreement",
        lambda w: {"KeyId": w.key_id, "KeyAgreementAlgorithm": "ECDH", "PublicKey": _peer_public_key()},
    ),
    "DescribeKey": Case("symmetric", _key),
    "DisableKey": Case("symmetric", _key),
    "DisableKeyRotation": Case("symmetric", _key),
    "EnableKey": Case("symmetric", _key),
    "EnableKeyRotation": Case("symmetric", _key),
    "Encrypt": Case("symmetric", lambda w: {"KeyId": w.key_id, "Plaintext": b"state table"}),
    "GenerateDataKey": Case("symmetric", lambda w: {"KeyId": w.key_id, "KeySpec": "AES_256"}),
    "GenerateDataKeyPair": Case("symmetric", lambda w: {"KeyId": w.key_id, "KeyPairSpec": "ECC_NIST_P256"}),
    "GenerateDataKeyPairWithoutPlaintext": Case(
        "symmetric", lambda w: {"KeyId": w.key_id, "KeyPairSpec": "ECC_NIST_P256"}
    ),
    "GenerateDataKeyWithoutPlaintext": Case("symmetric", lambda w: {"KeyId": w.key_id, "NumberOfBytes": 32}),
    "GenerateMac": Case(
        "hmac", lambda w: {"KeyId": w.key_id, "Message": b"state table", "MacAlgorithm": "HMAC_SHA_256"}
    ),
    "GetKeyLastUsage": Case("symmetric", _key),
    "GetKeyPolicy": Case("symmetric", lambda w: {"KeyId": w.key_id, "PolicyName": "default"}),
    "GetKeyRotationStatus": Case("symmetric", _key),
    "GetParametersForImport": Case(
        "imported",
        lambda w: {"KeyId": w.key_id, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"},
    ),
    "GetPublicKey": Case("sign", _key),
    "ImportKeyMaterial": Case(
        "imported",
        lambda w: {
            "KeyId": w.key_id,
            "ImportToken": w.made["token"],
            "EncryptedKeyMaterial": w.made["wrapped"],
            "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
        },
        _import_parameters,
    ),
    "ListAliases": Case("symmetric", _key),
    "ListGrants": Case("symmetric", _key),
    "ListKeyPolicies": Case("symmetric", _key),
    "ListKeyRotations": Case("symmetric", _key),
    "ListResourceTags": Case("symmetric", _key),
    "PutKeyPolicy": Case(
        "symmetric", lambda w: {"KeyId": w.key_id, "PolicyName": "default", "Policy": w.made["policy"]}
    ),
    "ReplicateKey": Case(MULTI_REGION, lambda w: {"KeyId": w.key_id, "ReplicaRegion": "ap-southeast-2"}),
    "ReEncrypt": Case(
        "symmetric",
        lambda w: {"CiphertextBlob": w.made["blob"], "SourceKeyId": w.key_id, "DestinationKeyId": str(w.other.id)},
        _encrypt,
    ),
    "RetireGrant": Case("symmetric", lambda w: {"KeyId": w.key.arn, "GrantId": w.made["grant_id"]}, _grant),
    "RevokeGrant": Case("symmetric", lambda w: {"KeyId": w.key_id, "GrantId": w.made["grant_id"]}, _grant),
    "RotateKeyOnDemand": Case("symmetric", _key),
    "ScheduleKeyDeletion": Case("symmetric", lambda w: {"KeyId": w.key_id, "PendingWindowInDays": 7}),
    "Sign": Case("sign", lambda w: {"KeyId": w.key_id, "Message": b"state table", "SigningAlgorithm": "ECDSA_SHA_256"}),
    "TagResource": Case("symmetric", lambda w: {"KeyId": w.key_id, "Tags": [{"TagKey": "k", "TagValue": "v"}]}),
    "UntagResource": Case("symmetric", lambda w: {"KeyId": w.key_id, "TagKeys": ["k"]}),
    "UpdateAlias": Case(
        "symmetric", lambda w: {"AliasName": "alias/state-table", "TargetKeyId": w.key_id}, _alias_on_other
    ),
    "UpdateKeyDescription": Case("symmetric", lambda w: {"KeyId": w.key_id, "Description": "new"}),
    "UpdatePrimaryRegion": Case(
        MULTI_REGION, lambda w: {"KeyId": w.key_id, "PrimaryRegion": REPLICA_REGION}, _replicate
    ),
    "Verify": Case(
        "sign",
        lambda w: {
            "KeyId": w.key_id,
            "Message": b"state table",
            "Signature": w.made["signature"],
            "SigningAlgorithm": "ECDSA_SHA_256",
        },
        _sign,
    ),
    "VerifyMac": Case(
        "hmac",
        lambda w: {"KeyId": w.key_id, "Message": b"state table", "Mac": w.made["mac"], "MacAlgorithm": "HMAC_SHA_256"},
        _mac,
    ),
}


def _move_to(w: World, state: str) -> None:
    """Take the key from Enabled to ``state`` the way a client would."""
    if state == "Enabled":
        return
    if state == "Disabled":
        w.ok("DisableKey", KeyId=w.key_id)
    elif state == "PendingDeletion":
        w.ok("ScheduleKeyDeletion", KeyId=w.key_id, PendingWindowInDays=7)
    elif state == "PendingImport":
        w.ok("DeleteImportedKeyMaterial", KeyId=w.key_id)
    elif state == "Unavailable":
        w.ok("DisconnectCustomKeyStore", CustomKeyStoreId=w.key.custom_key_store_id)
    elif state == "PendingReplicaDeletion":
        # A multi-Region primary key scheduled for deletion while it has a replica.
        if not Key.objects.filter(multi_region_id=w.key.multi_region_id, region=REPLICA_REGION).exists():
            _replicate(w)
        w.ok("ScheduleKeyDeletion", KeyId=w.key_id, PendingWindowInDays=7)
    else:
        raise AssertionError(f"no way to reach {state} yet: add it here")
    w.key = Key.objects.select_related("current_material").get(pk=w.key.pk)
    assert w.key.state == KeyState(state)


def _kind_for(operation: str, state: str) -> tuple[str, bool]:
    """The kind of key a case makes, and whether it is a multi-Region primary key."""
    kind = CASES[operation].kind
    # Only multi-Region primary keys can be PendingReplicaDeletion.
    multi_region = kind == MULTI_REGION or state == "PendingReplicaDeletion"
    kind = "symmetric" if kind == MULTI_REGION else kind
    if kind == "symmetric" and state == "PendingImport":
        return "imported", multi_region  # only keys with imported material can be PendingImport
    if kind == "symmetric" and state == "Unavailable":
        return "store", multi_region  # only keys in a custom key store can be Unavailable
    return kind, multi_region


def _generated() -> list[Any]:
    cases = []
    for operation, cells in sorted(KEY_STATE_TABLE.items()):
        for state in STATES:
            expected = cells.get(state)
            if expected is None or expected == N_A:
                continue
            cases.append(pytest.param(operation, state, expected, id=f"{operation}-{state}"))
    return cases


@pytest.fixture(autouse=True)
def _platform_keys(db: None) -> None:
    for purpose in (TOKEN_PURPOSE, FINGERPRINT_PURPOSE):
        platform_key_get_or_create(purpose=purpose)


token = module_token()


def _store(persona: Persona, token: Token) -> str:
    """A connected CloudHSM key store on the module's token."""
    store_id = call(persona, "CreateCustomKeyStore", **cloudhsm_params(token)).out("CustomKeyStoreId")
    assert call(persona, "ConnectCustomKeyStore", CustomKeyStoreId=store_id).status == 200
    return str(store_id)


def _make_key(persona: Persona, kind: str, multi_region: bool, token: Token) -> tuple[Key, bytes]:
    extra: dict[str, Any] = {"custom_key_store_id": _store(persona, token)} if kind == "store" else {}
    if multi_region:
        extra["multi_region"] = True
    key = key_services.key_create(caller=persona.caller(), **KINDS[kind], **extra)
    material = os.urandom(32)
    if kind == "imported":
        world = World(persona, key, key)
        world.made["material"] = material
        _import_parameters(world)
        world.ok(
            "ImportKeyMaterial",
            KeyId=key.key_id,
            ImportToken=world.made["token"],
            EncryptedKeyMaterial=world.made["wrapped"],
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
        key = Key.objects.select_related("current_material").get(pk=key.pk)
    return key, material


@pytest.mark.parametrize(("operation", "state", "expected"), _generated())
def test_it_answers_as_the_key_state_table_says(
    key_admin: Persona, token: Token, operation: str, state: str, expected: str
) -> None:
    key, material = _make_key(key_admin, *_kind_for(operation, state), token)
    other = key_services.key_create(caller=key_admin.caller())
    w = World(key_admin, key, other, {"material": material, "policy": key.policy})
    CASES[operation].prepare(w)
    _move_to(w, state)

    answer = call(key_admin, operation, **CASES[operation].params(w))

    if expected == OK:
        assert answer.status == 200, answer.body
    else:
        assert (answer.status, answer.code) == (400, expected), answer.body
        assert answer.message


def test_it_has_a_row_and_a_case_for_every_operation_on_an_existing_key() -> None:
    from kmsweb.api.handlers import HANDLERS

    assert set(KEY_STATE_TABLE) == set(CASES)
    assert set(KEY_STATE_TABLE) == set(HANDLERS) - WITHOUT_A_KEY
    for cells in KEY_STATE_TABLE.values():
        assert set(cells) <= set(STATES)
