"""Every operation's documented errors, walked as a table.

For each KMS operation kmsweb serves, the "Errors" section of its page in
the AWS KMS API Reference (docs.aws.amazon.com/kms/latest/APIReference/,
the same list botocore's model carries as the operation's ``errors``) is
walked: ``CASES`` provokes each error kmsweb can be brought to answer and
checks the code, the HTTP status and the message (AWS's wording where it is
known, never a Python ``None``; no message at all where AWS sends none).
``test_it_walks_every_documented_error`` fails when an operation gains a
documented error that no case provokes and no entry of ``NOT_PROVOKED``
explains.

Calls go past the signature check (``tests.api.direct``), so the hundreds
of cases stay fast; the wire itself is covered by the live-server tests.
The custom key store cases share one SoftHSM2 token (CloudHSM key stores)
and one XKS proxy (``tests.xks_proxy``) made once for the module; each case
makes its own stores on them, in its own rolled-back database.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.session import get_session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import override_settings

from keys import services as key_services
from keys.crypto import pkcs11
from keys.models import Key
from keys.services.importing import FINGERPRINT_PURPOSE, TOKEN_PURPOSE
from keys.services.platform import platform_key_get_or_create
from keys.services.store_backends import SECRET_PURPOSE
from kmsweb.api.handlers import HANDLERS
from tests.api.direct import Answer, call
from tests.conftest import REGION, Persona
from tests.importing import wrap
from tests.softhsm import LIBRARY, Token, cloudhsm_params, init_token, softhsm_dir
from tests.xks_proxy import ACCESS_KEY_ID, INVALID_URI_PATH, SECRET, URI_PATH, XksProxy

pytestmark = pytest.mark.django_db

MODEL = get_session().get_service_model("kms")
# Errors any operation may answer besides its documented ones (AWS's common errors).
COMMON = {"ValidationException", "AccessDeniedException", "SerializationException"}
# Errors AWS answers without a message member.
BARE = {"InvalidCiphertextException", "KMSInvalidSignatureException", "KMSInvalidMacException"}
STATUS = {"DryRunOperationException": 412}

# Documented errors no request can bring kmsweb to answer on purpose.
UNPROVOKED = {
    "DependencyTimeoutException": "kmsweb calls no dependency that can time out",
    "KMSInternalException": "an internal failure (tests/api/test_fuzz.py checks none happens)",
    "KeyUnavailableException": "kmsweb's key material is always at hand",
    "ConflictException": "kmsweb serialises changes to a key under its row lock",
    "XksProxyVpcEndpointServiceInUseException": "kmsweb reaches proxies over public endpoints only: "
    "VPC_ENDPOINT_SERVICE connectivity is XksProxyInvalidConfigurationException",
    "XksProxyVpcEndpointServiceNotFoundException": "kmsweb reaches proxies over public endpoints only",
    "XksProxyVpcEndpointServiceInvalidConfigurationException": "kmsweb reaches proxies over public endpoints only",
    "XksProxyUriEndpointInUseException": "kmsweb checks a proxy's endpoint and path together: "
    "XksProxyUriInUseException",
}
# (operation, documented error) that no case provokes, and why.
NOT_PROVOKED: dict[tuple[str, str], str] = {
    **{
        (op, "LimitExceededException"): "kmsweb sets no quota on keys, aliases, grants or policies"
        for op in (
            "CreateAlias",
            "CreateGrant",
            "CreateKey",
            "EnableKey",
            "PutKeyPolicy",
            "ReplicateKey",
            "TagResource",
            "UpdateAlias",
        )
    },
    **{
        (op, "InvalidArnException"): "a malformed key ARN names no key: NotFoundException, as for any unknown key"
        for op in (
            "CancelKeyDeletion",
            "DeleteImportedKeyMaterial",
            "DescribeKey",
            "DisableKey",
            "DisableKeyRotation",
            "EnableKey",
            "EnableKeyRotation",
            "GetKeyLastUsage",
            "GetKeyPolicy",
            "GetKeyRotationStatus",
            "GetParametersForImport",
            "GetPublicKey",
            "ImportKeyMaterial",
            "ListAliases",
            "ListGrants",
            "ListKeyPolicies",
            "ListKeyRotations",
            "ListResourceTags",
            "PutKeyPolicy",
            "ReplicateKey",
            "RetireGrant",
            "RevokeGrant",
            "RotateKeyOnDemand",
            "ScheduleKeyDeletion",
            "TagResource",
            "UntagResource",
            "UpdateKeyDescription",
            "UpdatePrimaryRegion",
        )
    },
    ("CreateKey", "InvalidArnException"): "CreateKey names no existing resource by ARN in kmsweb",
    **{
        (op, "KMSInvalidStateException"): "the key state table lets it act in every state (test_key_states.py)"
        for op in (
            "DeleteAlias",
            "DeleteImportedKeyMaterial",
            "GetKeyPolicy",
            "GetKeyRotationStatus",
            "ListGrants",
            "ListKeyPolicies",
            "ListKeyRotations",
            "PutKeyPolicy",
            "RetireGrant",
            "RevokeGrant",
        )
    },
    ("ListKeyRotations", "UnsupportedOperationException"): "kmsweb lists no rotations for a key that cannot rotate",
    ("GetKeyRotationStatus", "UnsupportedOperationException"): "kmsweb reports rotation off for a key that cannot",
    ("PutKeyPolicy", "UnsupportedOperationException"): "AWS managed keys: tests/api/test_service_keys.py",
    ("ImportKeyMaterial", "ExpiredImportTokenException"): "needs a clock: tests/keys/test_services_import.py",
    ("ConnectCustomKeyStore", "CloudHsmClusterNotActiveException"): "a token that cannot be used leaves the store "
    "FAILED with a ConnectionErrorCode, as AWS's ConnectCustomKeyStore does (tests/keys/test_key_stores.py)",
    ("CreateCustomKeyStore", "CloudHsmClusterNotActiveException"): "a token without a user PIN: softhsm2-util "
    "always sets one",
    ("UpdateCustomKeyStore", "CloudHsmClusterNotFoundException"): "kmsweb checks only that the token is the "
    "store's own: CloudHsmClusterNotRelatedException",
    ("UpdateCustomKeyStore", "CloudHsmClusterNotActiveException"): "kmsweb checks only that the token is the "
    "store's own: CloudHsmClusterNotRelatedException",
    **{
        (op, "CloudHsmClusterInvalidConfigurationException"): "a PKCS#11 library that cannot be loaded leaves the "
        "store FAILED (ConnectCustomKeyStore) and is not asked by UpdateCustomKeyStore"
        for op in ("ConnectCustomKeyStore", "UpdateCustomKeyStore")
    },
    ("GetPublicKey", "InvalidKeyUsageException"): "a key with no public key is UnsupportedOperationException",
    ("ListRetirableGrants", "NotFoundException"): "a retiring principal is matched, not looked up",
}

PEER = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
)
# The other region of the multi-Region keys' replicas.
EU = "eu-west-1"
KINDS: dict[str, dict[str, Any]] = {
    "sym": {},
    "rsa": {"key_spec": "RSA_2048", "key_usage": "ENCRYPT_DECRYPT"},
    "sign": {"key_spec": "ECC_NIST_P256", "key_usage": "SIGN_VERIFY"},
    "agree": {"key_spec": "ECC_NIST_P256", "key_usage": "KEY_AGREEMENT"},
    "hmac": {"key_spec": "HMAC_256", "key_usage": "GENERATE_VERIFY_MAC"},
    "ext": {"origin": "EXTERNAL"},
    "kem": {"key_spec": "ML_KEM_768", "key_usage": "ENCAPSULATE_DECAPSULATE"},
    "mrk": {"multi_region": True},  # a multi-Region primary key (no replica)
}


@dataclass(frozen=True)
class Stores:
    """A SoftHSM2 token for CloudHSM key stores and an XKS proxy, made once for the module."""

    token: Token
    proxy: XksProxy


class World:
    """Keys and artefacts made on first use, as the persona."""

    def __init__(self, persona: Persona, stores: Stores) -> None:
        self.persona = persona
        self.stores = stores
        self._keys: dict[tuple[str, str], Key] = {}
        self.made: dict[str, Any] = {}

    def ok(self, operation: str, **params: Any) -> Answer:
        answer = call(self.persona, operation, **params)
        assert answer.status == 200, answer.body
        return answer

    @property
    def missing(self) -> str:
        return f"arn:aws:kms:{REGION}:{self.persona.account_id}:key/00000000-0000-4000-8000-000000000000"

    def key(self, kind: str = "sym", state: str = "Enabled", *, before: Callable[[str], None] | None = None) -> str:
        """The id of a key of ``kind`` in ``state``; ``before`` runs while it is still Enabled."""
        if (kind, state) in self._keys and before is None:
            return self._keys[(kind, state)].key_id
        key = key_services.key_create(caller=self.persona.caller(), **KINDS[kind])
        key_id = key.key_id
        if before is not None:
            before(key_id)
        if state == "Disabled":
            self.ok("DisableKey", KeyId=key_id)
        elif state == "PendingDeletion":
            self.ok("ScheduleKeyDeletion", KeyId=key_id, PendingWindowInDays=7)
        if before is None:
            # A key made for one artefact (a ciphertext) is that artefact's own.
            self._keys[(kind, state)] = key
        return key_id

    def replicated(self, state: str = "Enabled") -> str:
        """A multi-Region primary key with a replica in ``EU``, then put in ``state``
        (PendingDeletion gives PendingReplicaDeletion: the replica is still there)."""
        if ("mrk+replica", state) not in self._keys:
            key = key_services.key_create(caller=self.persona.caller(), **KINDS["mrk"])
            self.ok("ReplicateKey", KeyId=key.key_id, ReplicaRegion=EU)
            if state == "Disabled":
                self.ok("DisableKey", KeyId=key.key_id)
            elif state == "PendingDeletion":
                self.ok("ScheduleKeyDeletion", KeyId=key.key_id, PendingWindowInDays=7)
            self._keys[("mrk+replica", state)] = key
        return self._keys[("mrk+replica", state)].key_id

    def blob(self, state: str = "Enabled") -> bytes:
        """A ciphertext under a symmetric key that is then put in ``state``."""

        def encrypt(key_id: str) -> None:
            self.made["blob"] = self.ok("Encrypt", KeyId=key_id, Plaintext=b"p").blob("CiphertextBlob")

        self.made["blob_key"] = self.key("sym", state, before=encrypt)
        return self.made["blob"]

    def grant(self) -> tuple[str, str]:
        key_id = self.key()
        grant_id = self.ok(
            "CreateGrant",
            KeyId=key_id,
            GranteePrincipal=self.persona.principal.arn,
            Operations=["Encrypt", "RetireGrant"],
        ).out("GrantId")
        return key_id, grant_id

    def import_parameters(self, key_id: str) -> dict[str, Any]:
        params = self.ok(
            "GetParametersForImport", KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )
        return {"token": params.blob("ImportToken"), "public": params.blob("PublicKey")}

    def store(self, state: str = "CONNECTED", *, with_key: bool = False) -> str:
        """The id of a CloudHSM key store on the module's token, in ``state``."""
        if "store" not in self.made:
            store_id = self.ok("CreateCustomKeyStore", **cloudhsm_params(self.stores.token)).out("CustomKeyStoreId")
            self.made["store"] = store_id
            if with_key or state == "CONNECTED":
                self.ok("ConnectCustomKeyStore", CustomKeyStoreId=store_id)
            if with_key:
                self.ok("CreateKey", Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)
                if state == "DISCONNECTED":
                    self.ok("DisconnectCustomKeyStore", CustomKeyStoreId=store_id)
        return str(self.made["store"])

    def xks_store(self, name: str = "xks-store", *, connected: bool = True, **params: Any) -> str:
        """The id of an external key store on the module's proxy."""
        store_id = self.ok("CreateCustomKeyStore", **xks_params(name, **params)).out("CustomKeyStoreId")
        if connected:
            self.ok("ConnectCustomKeyStore", CustomKeyStoreId=store_id)
        return str(store_id)

    def imported(self) -> str:
        """An EXTERNAL key with 32 bytes of material imported."""
        key_id = self.key("ext")
        params = self.import_parameters(key_id)
        self.made["material"] = os.urandom(32)
        self.ok(
            "ImportKeyMaterial",
            KeyId=key_id,
            ImportToken=params["token"],
            EncryptedKeyMaterial=wrap(params["public"], "RSAES_OAEP_SHA_256", self.made["material"]),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
        return key_id


def xks_params(name: str = "xks-store", **overrides: Any) -> dict[str, Any]:
    """CreateCustomKeyStore's parameters for the module's XKS proxy."""
    params: dict[str, Any] = {
        "CustomKeyStoreName": name,
        "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
        "XksProxyUriEndpoint": "https://127.0.0.1",
        "XksProxyUriPath": URI_PATH,
        "XksProxyConnectivity": "PUBLIC_ENDPOINT",
        "XksProxyAuthenticationCredential": {"AccessKeyId": ACCESS_KEY_ID, "RawSecretAccessKey": SECRET},
    }
    params.update(overrides)
    return params


WRONG_SECRET = {"AccessKeyId": ACCESS_KEY_ID, "RawSecretAccessKey": "W" * 43}
UNKNOWN_STORE = "cks-1234567890abcdef0"
BROKEN_LIBRARY = (("KMSWEB_PKCS11_LIBRARY", "/nonexistent/libpkcs11.so"),)


def _failed_store(w: World) -> str:
    """A CloudHSM store whose connection failed (a wrong PIN): FAILED, to be disconnected first."""
    params = cloudhsm_params(w.stores.token, KeyStorePassword="not-the-pin")
    store_id = str(w.ok("CreateCustomKeyStore", **params).out("CustomKeyStoreId"))
    w.ok("ConnectCustomKeyStore", CustomKeyStoreId=store_id)
    return store_id


def _eleventh_store(w: World) -> dict[str, Any]:
    for i in range(10):
        w.ok("CreateCustomKeyStore", **cloudhsm_params(init_token(), name=f"store-{i}"))
    return cloudhsm_params(init_token(), name="eleventh")


@dataclass(frozen=True)
class Case:
    operation: str
    name: str
    params: Callable[[World], dict[str, Any]]
    code: str
    message: str | Callable[[World], str] | None = None  # exact, when AWS's wording is known
    settings: tuple[tuple[str, Any], ...] = ()  # Django settings in force for the call only


def _arn(w: World, key_id: str) -> str:
    return f"arn:aws:kms:{REGION}:{w.persona.account_id}:key/{key_id}"


def _disabled(kind: str) -> Callable[[World], str]:
    return lambda w: f"{_arn(w, w.key(kind, 'Disabled'))} is disabled."


def _pending(kind: str) -> Callable[[World], str]:
    return lambda w: f"{_arn(w, w.key(kind, 'PendingDeletion'))} is pending deletion."


def key_cases(operation: str, kind: str = "sym", *, states: bool = True, **extra: Any) -> list[Case]:
    """NotFound for an unknown key, and the Disabled / PendingDeletion refusals of crypto operations."""
    cases = [
        Case(operation, "unknown key", lambda w: {"KeyId": w.missing, **extra}, "NotFoundException"),
        Case(operation, "key id that is none", lambda w: {"KeyId": "not-a-key", **extra}, "NotFoundException", None),
    ]
    if states:
        cases += [
            Case(
                operation,
                "disabled key",
                lambda w: {"KeyId": w.key(kind, "Disabled"), **extra},
                "DisabledException",
                _disabled(kind),
            ),
            Case(
                operation,
                "key pending deletion",
                lambda w: {"KeyId": w.key(kind, "PendingDeletion"), **extra},
                "KMSInvalidStateException",
                _pending(kind),
            ),
            Case(
                operation,
                "dry run",
                lambda w: {"KeyId": w.key(kind), "DryRun": True, **extra},
                "DryRunOperationException",
                "The request would have succeeded, but the DryRun option is set.",
            ),
            Case(
                operation,
                "unknown grant token",
                lambda w: {"KeyId": w.key(kind), "GrantTokens": ["not-a-token"], **extra},
                "InvalidGrantTokenException",
            ),
        ]
    return cases


def management_cases(operation: str, *, pending: bool = True, **extra: Any) -> list[Case]:
    cases = [Case(operation, "unknown key", lambda w: {"KeyId": w.missing, **extra}, "NotFoundException")]
    if pending:
        cases.append(
            Case(
                operation,
                "key pending deletion",
                lambda w: {"KeyId": w.key("sym", "PendingDeletion"), **extra},
                "KMSInvalidStateException",
                _pending("sym"),
            )
        )
    return cases


TAG = {"TagKey": "k", "TagValue": "v"}
NO_EXPIRY = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}

CASES: list[Case] = [
    # --- key lifecycle --------------------------------------------------------------
    *management_cases("CancelKeyDeletion", pending=False),
    Case(
        "CancelKeyDeletion",
        "key not pending deletion",
        lambda w: {"KeyId": w.key()},
        "KMSInvalidStateException",
        lambda w: f"{_arn(w, w.key())} is not pending deletion.",
    ),
    Case("CreateKey", "policy that is not JSON", lambda w: {"Policy": "{"}, "MalformedPolicyDocumentException"),
    Case("CreateKey", "reserved tag", lambda w: {"Tags": [{"TagKey": "aws:x", "TagValue": "v"}]}, "TagException"),
    Case("CreateKey", "duplicate tag keys", lambda w: {"Tags": [TAG, TAG]}, "TagException", "Duplicate tag keys"),
    Case(
        "CreateKey",
        "51 tags",
        lambda w: {"Tags": [{"TagKey": f"t{i}", "TagValue": "v"} for i in range(51)]},
        "TagException",
        "Too many tags",
    ),
    Case(
        "CreateKey",
        "unknown custom key store",
        lambda w: {"CustomKeyStoreId": "cks-1234567890abcdef0"},
        "CustomKeyStoreNotFoundException",
    ),
    Case(
        "CreateKey",
        "CloudHSM origin without a store",
        lambda w: {"Origin": "AWS_CLOUDHSM"},
        "ValidationException",
        "Origin AWS_CLOUDHSM needs a CustomKeyStoreId.",
    ),
    Case(
        "CreateKey",
        "store of another type",
        lambda w: {"Origin": "AWS_CLOUDHSM", "CustomKeyStoreId": w.xks_store()},
        "UnsupportedOperationException",
    ),
    Case(
        "CreateKey",
        "disconnected store",
        lambda w: {"Origin": "AWS_CLOUDHSM", "CustomKeyStoreId": w.store("DISCONNECTED")},
        "CustomKeyStoreInvalidStateException",
        lambda w: f"The custom key store {w.store()} is DISCONNECTED; keys are created only in a connected store.",
    ),
    Case(
        "CreateKey",
        "PKCS#11 library that cannot be loaded",
        lambda w: {"Origin": "AWS_CLOUDHSM", "CustomKeyStoreId": w.store()},
        "CloudHsmClusterInvalidConfigurationException",
        settings=BROKEN_LIBRARY,
    ),
    Case(
        "CreateKey",
        "external key the proxy does not know",
        lambda w: {"Origin": "EXTERNAL_KEY_STORE", "CustomKeyStoreId": w.xks_store(), "XksKeyId": "no-such-key"},
        "XksKeyNotFoundException",
    ),
    Case(
        "CreateKey",
        "external key that is disabled",
        lambda w: {"Origin": "EXTERNAL_KEY_STORE", "CustomKeyStoreId": w.xks_store(), "XksKeyId": "disabled-key-1"},
        "XksKeyInvalidConfigurationException",
        "The external key disabled-key-1 must be an enabled AES_256 key that can ENCRYPT and DECRYPT.",
    ),
    Case(
        "CreateKey",
        "external key already backing a key",
        lambda w: (
            (store_id := w.xks_store())
            and w.ok("CreateKey", Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store_id, XksKeyId="ext-key-1")
            and {"Origin": "EXTERNAL_KEY_STORE", "CustomKeyStoreId": store_id, "XksKeyId": "ext-key-1"}
        ),
        "XksKeyAlreadyInUseException",
    ),
    Case(
        "CreateKey",
        "asymmetric spec without usage",
        lambda w: {"KeySpec": "RSA_2048"},
        "ValidationException",
        "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.",
    ),
    *management_cases("DescribeKey", pending=False),
    Case("DescribeKey", "key id that is none", lambda w: {"KeyId": "not-a-key"}, "NotFoundException"),
    *management_cases("DisableKey"),
    *management_cases("EnableKey"),
    *management_cases("ScheduleKeyDeletion"),
    Case(
        "ScheduleKeyDeletion",
        "window under 7 days",
        lambda w: {"KeyId": w.key(), "PendingWindowInDays": 6},
        "ValidationException",
        "1 validation error detected: Value '6' at 'pendingWindowInDays' failed to satisfy constraint: "
        "Member must have value greater than or equal to 7",
    ),
    *management_cases("UpdateKeyDescription", Description="d"),
    *management_cases("GetKeyLastUsage", pending=False),
    Case("ListKeys", "marker of nothing", lambda w: {"Marker": "garbage"}, "InvalidMarkerException"),
    # --- policies -------------------------------------------------------------------
    *management_cases("GetKeyPolicy", pending=False),
    *management_cases("ListKeyPolicies", pending=False),
    *management_cases("PutKeyPolicy", pending=False, Policy="{}"),
    Case(
        "PutKeyPolicy",
        "policy that is not JSON",
        lambda w: {"KeyId": w.key(), "Policy": "{"},
        "MalformedPolicyDocumentException",
    ),
    # --- aliases --------------------------------------------------------------------
    Case(
        "CreateAlias",
        "name without alias/",
        lambda w: {"AliasName": "orders", "TargetKeyId": w.key()},
        "ValidationException",
        'Alias must start with the prefix "alias/". Please see '
        "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html",
    ),
    Case(
        "CreateAlias",
        "reserved name",
        lambda w: {"AliasName": "alias/aws/s3", "TargetKeyId": w.key()},
        "InvalidAliasNameException",
    ),
    Case(
        "CreateAlias",
        "taken name",
        lambda w: (
            w.ok("CreateAlias", AliasName="alias/taken", TargetKeyId=w.key())
            and {"AliasName": "alias/taken", "TargetKeyId": w.key("sym", "Disabled")}
        ),
        "AlreadyExistsException",
        lambda w: f"An alias with the name arn:aws:kms:{REGION}:{w.persona.account_id}:alias/taken already exists",
    ),
    Case(
        "CreateAlias",
        "unknown target",
        lambda w: {"AliasName": "alias/x", "TargetKeyId": w.missing},
        "NotFoundException",
    ),
    Case(
        "CreateAlias",
        "target pending deletion",
        lambda w: {"AliasName": "alias/x", "TargetKeyId": w.key("sym", "PendingDeletion")},
        "KMSInvalidStateException",
        _pending("sym"),
    ),
    Case(
        "DeleteAlias",
        "unknown alias",
        lambda w: {"AliasName": "alias/none"},
        "NotFoundException",
        lambda w: f"Alias arn:aws:kms:{REGION}:{w.persona.account_id}:alias/none is not found.",
    ),
    Case("DeleteAlias", "name without alias/", lambda w: {"AliasName": "none"}, "ValidationException"),
    Case(
        "UpdateAlias",
        "unknown alias",
        lambda w: {"AliasName": "alias/none", "TargetKeyId": w.key()},
        "NotFoundException",
    ),
    Case(
        "UpdateAlias",
        "target pending deletion",
        lambda w: (
            w.ok("CreateAlias", AliasName="alias/u", TargetKeyId=w.key())
            and {"AliasName": "alias/u", "TargetKeyId": w.key("sym", "PendingDeletion")}
        ),
        "KMSInvalidStateException",
        _pending("sym"),
    ),
    Case("ListAliases", "unknown key", lambda w: {"KeyId": w.missing}, "NotFoundException"),
    Case("ListAliases", "marker of nothing", lambda w: {"Marker": "garbage"}, "InvalidMarkerException"),
    # --- tags -----------------------------------------------------------------------
    *management_cases("TagResource", Tags=[TAG]),
    Case(
        "TagResource",
        "reserved tag",
        lambda w: {"KeyId": w.key(), "Tags": [{"TagKey": "aws:x", "TagValue": "v"}]},
        "TagException",
        "Tags beginning with aws: are reserved",
    ),
    Case(
        "TagResource",
        "duplicate tag keys",
        lambda w: {"KeyId": w.key(), "Tags": [TAG, {"TagKey": "k", "TagValue": "w"}]},
        "TagException",
        "Duplicate tag keys",
    ),
    Case(
        "TagResource",
        "51 tags",
        lambda w: {"KeyId": w.key(), "Tags": [{"TagKey": f"t{i}", "TagValue": "v"} for i in range(51)]},
        "TagException",
        "Too many tags",
    ),
    *management_cases("UntagResource", TagKeys=["k"]),
    Case(
        "UntagResource",
        "reserved tag",
        lambda w: {"KeyId": w.key(), "TagKeys": ["aws:x"]},
        "TagException",
        "Tags beginning with aws: are reserved",
    ),
    *management_cases("ListResourceTags", pending=False),
    Case(
        "ListResourceTags", "marker of nothing", lambda w: {"KeyId": w.key(), "Marker": "x"}, "InvalidMarkerException"
    ),
    # --- rotation -------------------------------------------------------------------
    *management_cases("EnableKeyRotation"),
    Case(
        "EnableKeyRotation",
        "disabled key",
        lambda w: {"KeyId": w.key("sym", "Disabled")},
        "DisabledException",
        _disabled("sym"),
    ),
    Case("EnableKeyRotation", "asymmetric key", lambda w: {"KeyId": w.key("sign")}, "UnsupportedOperationException"),
    *management_cases("DisableKeyRotation"),
    Case(
        "DisableKeyRotation",
        "disabled key",
        lambda w: {"KeyId": w.key("sym", "Disabled")},
        "DisabledException",
        _disabled("sym"),
    ),
    Case("DisableKeyRotation", "HMAC key", lambda w: {"KeyId": w.key("hmac")}, "UnsupportedOperationException"),
    *management_cases("GetKeyRotationStatus", pending=False),
    *management_cases("ListKeyRotations", pending=False),
    Case(
        "ListKeyRotations", "marker of nothing", lambda w: {"KeyId": w.key(), "Marker": "x"}, "InvalidMarkerException"
    ),
    *management_cases("RotateKeyOnDemand"),
    Case(
        "RotateKeyOnDemand",
        "disabled key",
        lambda w: {"KeyId": w.key("sym", "Disabled")},
        "DisabledException",
        _disabled("sym"),
    ),
    Case("RotateKeyOnDemand", "asymmetric key", lambda w: {"KeyId": w.key("sign")}, "UnsupportedOperationException"),
    Case(
        "RotateKeyOnDemand",
        "eleventh rotation",
        lambda w: [w.ok("RotateKeyOnDemand", KeyId=w.key()) for _ in range(10)] and {"KeyId": w.key()},
        "LimitExceededException",
    ),
    # --- multi-Region keys ----------------------------------------------------------
    Case("ReplicateKey", "unknown key", lambda w: {"KeyId": w.missing, "ReplicaRegion": EU}, "NotFoundException"),
    Case(
        "ReplicateKey",
        "disabled key",
        lambda w: {"KeyId": w.key("mrk", "Disabled"), "ReplicaRegion": EU},
        "DisabledException",
        _disabled("mrk"),
    ),
    Case(
        "ReplicateKey",
        "key pending deletion",
        lambda w: {"KeyId": w.key("mrk", "PendingDeletion"), "ReplicaRegion": EU},
        "KMSInvalidStateException",
        _pending("mrk"),
    ),
    Case(
        "ReplicateKey",
        "key pending replica deletion",
        lambda w: {"KeyId": w.replicated("PendingDeletion"), "ReplicaRegion": "ap-southeast-2"},
        "KMSInvalidStateException",
        lambda w: f"{_arn(w, w.replicated('PendingDeletion'))} is pending replica deletion.",
    ),
    Case(
        "ReplicateKey",
        "region that has a replica",
        lambda w: {"KeyId": w.replicated(), "ReplicaRegion": EU},
        "AlreadyExistsException",
    ),
    Case(
        "ReplicateKey",
        "single-Region key",
        lambda w: {"KeyId": w.key(), "ReplicaRegion": EU},
        "UnsupportedOperationException",
    ),
    Case(
        "ReplicateKey",
        "policy that is not JSON",
        lambda w: {"KeyId": w.key("mrk"), "ReplicaRegion": EU, "Policy": "{"},
        "MalformedPolicyDocumentException",
    ),
    Case(
        "ReplicateKey",
        "reserved tag",
        lambda w: {"KeyId": w.key("mrk"), "ReplicaRegion": EU, "Tags": [{"TagKey": "aws:x", "TagValue": "v"}]},
        "TagException",
    ),
    Case(
        "UpdatePrimaryRegion", "unknown key", lambda w: {"KeyId": w.missing, "PrimaryRegion": EU}, "NotFoundException"
    ),
    Case(
        "UpdatePrimaryRegion",
        "region without a replica",
        lambda w: {"KeyId": w.key("mrk"), "PrimaryRegion": EU},
        "NotFoundException",
    ),
    Case(
        "UpdatePrimaryRegion",
        "disabled key",
        lambda w: {"KeyId": w.replicated("Disabled"), "PrimaryRegion": EU},
        "DisabledException",
        lambda w: f"{_arn(w, w.replicated('Disabled'))} is disabled.",
    ),
    Case(
        "UpdatePrimaryRegion",
        "key pending replica deletion",
        lambda w: {"KeyId": w.replicated("PendingDeletion"), "PrimaryRegion": EU},
        "KMSInvalidStateException",
        lambda w: f"{_arn(w, w.replicated('PendingDeletion'))} is pending replica deletion.",
    ),
    Case(
        "UpdatePrimaryRegion",
        "single-Region key",
        lambda w: {"KeyId": w.key(), "PrimaryRegion": EU},
        "UnsupportedOperationException",
    ),
    # --- symmetric cryptography -----------------------------------------------------
    *key_cases("Encrypt", Plaintext=b"p"),
    Case("Encrypt", "signing key", lambda w: {"KeyId": w.key("sign"), "Plaintext": b"p"}, "InvalidKeyUsageException"),
    Case("Encrypt", "HMAC key", lambda w: {"KeyId": w.key("hmac"), "Plaintext": b"p"}, "InvalidKeyUsageException"),
    Case(
        "Encrypt",
        "RSA plaintext over the OAEP limit",
        lambda w: {"KeyId": w.key("rsa"), "Plaintext": b"p" * 191, "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"},
        "ValidationException",
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length less than or equal to 190",
    ),
    Case(
        "Encrypt",
        "RSA algorithm on a symmetric key",
        lambda w: {"KeyId": w.key(), "Plaintext": b"p", "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"},
        "InvalidKeyUsageException",
    ),
    Case(
        "Decrypt",
        "unknown key",
        lambda w: {"CiphertextBlob": w.blob(), "KeyId": w.missing},
        "NotFoundException",
    ),
    Case(
        "Decrypt",
        "disabled key",
        lambda w: {"CiphertextBlob": w.blob("Disabled")},
        "DisabledException",
        lambda w: f"{_arn(w, w.made['blob_key'])} is disabled.",
    ),
    Case(
        "Decrypt",
        "key pending deletion",
        lambda w: {"CiphertextBlob": w.blob("PendingDeletion")},
        "KMSInvalidStateException",
        lambda w: f"{_arn(w, w.made['blob_key'])} is pending deletion.",
    ),
    Case("Decrypt", "altered ciphertext", lambda w: {"CiphertextBlob": b"\x01" * 80}, "InvalidCiphertextException"),
    Case(
        "Decrypt",
        "wrong encryption context",
        lambda w: {"CiphertextBlob": w.blob(), "EncryptionContext": {"a": "b"}},
        "InvalidCiphertextException",
    ),
    Case(
        "Decrypt",
        "another symmetric key named",
        lambda w: {"CiphertextBlob": w.blob(), "KeyId": w.key()},
        "IncorrectKeyException",
    ),
    Case(
        "Decrypt",
        "HMAC key named",
        lambda w: {"CiphertextBlob": w.blob(), "KeyId": w.key("hmac")},
        "IncorrectKeyException",
    ),
    Case(
        "Decrypt",
        "signing key named",
        lambda w: {"CiphertextBlob": w.blob(), "KeyId": w.key("sign"), "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"},
        "InvalidKeyUsageException",
    ),
    Case(
        "Decrypt",
        "dry run",
        lambda w: {"CiphertextBlob": w.blob(), "DryRun": True},
        "DryRunOperationException",
    ),
    Case(
        "Decrypt",
        "unknown grant token",
        lambda w: {"CiphertextBlob": w.blob(), "GrantTokens": ["not-a-token"]},
        "InvalidGrantTokenException",
    ),
    Case(
        "ReEncrypt",
        "unknown destination",
        lambda w: {"CiphertextBlob": w.blob(), "DestinationKeyId": w.missing},
        "NotFoundException",
    ),
    Case(
        "ReEncrypt",
        "disabled destination",
        lambda w: {"CiphertextBlob": w.blob(), "DestinationKeyId": w.key("sym", "Disabled")},
        "DisabledException",
        _disabled("sym"),
    ),
    Case(
        "ReEncrypt",
        "destination pending deletion",
        lambda w: {"CiphertextBlob": w.blob(), "DestinationKeyId": w.key("sym", "PendingDeletion")},
        "KMSInvalidStateException",
        _pending("sym"),
    ),
    Case(
        "ReEncrypt",
        "signing destination",
        lambda w: {"CiphertextBlob": w.blob(), "DestinationKeyId": w.key("sign")},
        "InvalidKeyUsageException",
    ),
    Case(
        "ReEncrypt",
        "altered ciphertext",
        lambda w: {"CiphertextBlob": b"\x01" * 80, "DestinationKeyId": w.key()},
        "InvalidCiphertextException",
    ),
    Case(
        "ReEncrypt",
        "HMAC source key named",
        lambda w: {"CiphertextBlob": w.blob(), "SourceKeyId": w.key("hmac"), "DestinationKeyId": w.key()},
        "IncorrectKeyException",
    ),
    Case(
        "ReEncrypt",
        "dry run",
        lambda w: {"CiphertextBlob": w.blob(), "DestinationKeyId": w.key(), "DryRun": True},
        "DryRunOperationException",
    ),
    Case(
        "ReEncrypt",
        "unknown grant token",
        lambda w: {"CiphertextBlob": w.blob(), "DestinationKeyId": w.key(), "GrantTokens": ["x"]},
        "InvalidGrantTokenException",
    ),
    *key_cases("GenerateDataKey", KeySpec="AES_256"),
    Case(
        "GenerateDataKey",
        "RSA key",
        lambda w: {"KeyId": w.key("rsa"), "KeySpec": "AES_256"},
        "InvalidKeyUsageException",
    ),
    Case(
        "GenerateDataKey",
        "neither KeySpec nor NumberOfBytes",
        lambda w: {"KeyId": w.key()},
        "ValidationException",
        "Please specify either number of bytes or key spec.",
    ),
    *key_cases("GenerateDataKeyWithoutPlaintext", NumberOfBytes=32),
    Case(
        "GenerateDataKeyWithoutPlaintext",
        "HMAC key",
        lambda w: {"KeyId": w.key("hmac"), "NumberOfBytes": 32},
        "InvalidKeyUsageException",
    ),
    *key_cases("GenerateDataKeyPair", KeyPairSpec="ECC_NIST_P256"),
    Case(
        "GenerateDataKeyPair",
        "signing key",
        lambda w: {"KeyId": w.key("sign"), "KeyPairSpec": "ECC_NIST_P256"},
        "InvalidKeyUsageException",
    ),
    Case(
        "GenerateDataKeyPair",
        "Nitro Enclaves recipient",
        lambda w: {
            "KeyId": w.key(),
            "KeyPairSpec": "ECC_NIST_P256",
            "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b"doc"},
        },
        "UnsupportedOperationException",
    ),
    *key_cases("GenerateDataKeyPairWithoutPlaintext", KeyPairSpec="ECC_NIST_P256"),
    Case(
        "GenerateDataKeyPairWithoutPlaintext",
        "key pair spec kmsweb does not make",
        lambda w: {"KeyId": w.key(), "KeyPairSpec": "SM2"},
        "UnsupportedOperationException",
    ),
    Case(
        "GenerateDataKeyPairWithoutPlaintext",
        "HMAC key",
        lambda w: {"KeyId": w.key("hmac"), "KeyPairSpec": "ECC_NIST_P256"},
        "InvalidKeyUsageException",
    ),
    Case(
        "GenerateRandom",
        "no NumberOfBytes",
        lambda w: {},
        "ValidationException",
        "1 validation error detected: Value null at 'numberOfBytes' failed to satisfy constraint: "
        "Member must not be null",
    ),
    Case(
        "GenerateRandom",
        "unknown custom key store",
        lambda w: {"NumberOfBytes": 8, "CustomKeyStoreId": "cks-1234567890abcdef0"},
        "CustomKeyStoreNotFoundException",
    ),
    Case(
        "GenerateRandom",
        "disconnected store",
        lambda w: {"NumberOfBytes": 8, "CustomKeyStoreId": w.store("DISCONNECTED")},
        "CustomKeyStoreInvalidStateException",
        lambda w: f"The custom key store {w.store()} is DISCONNECTED, not CONNECTED.",
    ),
    Case(
        "GenerateRandom",
        "external key store",
        lambda w: {"NumberOfBytes": 8, "CustomKeyStoreId": w.xks_store()},
        "UnsupportedOperationException",
        "GenerateRandom with a CustomKeyStoreId is supported only for AWS_CLOUDHSM key stores.",
    ),
    Case(
        "GenerateRandom",
        "Nitro Enclaves recipient",
        lambda w: {
            "NumberOfBytes": 8,
            "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b"doc"},
        },
        "UnsupportedOperationException",
    ),
    # --- asymmetric, ML-KEM and HMAC ------------------------------------------------
    *key_cases("Encapsulate", "kem", EncapsulationAlgorithm="ML_KEM"),
    Case(
        "Encapsulate",
        "symmetric key",
        lambda w: {"KeyId": w.key(), "EncapsulationAlgorithm": "ML_KEM"},
        "InvalidKeyUsageException",
    ),
    *key_cases("Decapsulate", "kem", SharedSecretCiphertextBlob=b"c" * 1088, EncapsulationAlgorithm="ML_KEM"),
    Case(
        "Decapsulate",
        "signing key",
        lambda w: {
            "KeyId": w.key("sign"),
            "SharedSecretCiphertextBlob": b"c" * 1088,
            "EncapsulationAlgorithm": "ML_KEM",
        },
        "InvalidKeyUsageException",
    ),
    Case(
        "Decapsulate",
        "ciphertext of the wrong length",
        lambda w: {"KeyId": w.key("kem"), "SharedSecretCiphertextBlob": b"c" * 100, "EncapsulationAlgorithm": "ML_KEM"},
        "InvalidCiphertextException",
    ),
    *key_cases("Sign", "sign", Message=b"m", SigningAlgorithm="ECDSA_SHA_256"),
    Case(
        "Sign",
        "symmetric key",
        lambda w: {"KeyId": w.key(), "Message": b"m", "SigningAlgorithm": "ECDSA_SHA_256"},
        "InvalidKeyUsageException",
    ),
    Case(
        "Sign",
        "algorithm of another key spec",
        lambda w: {"KeyId": w.key("sign"), "Message": b"m", "SigningAlgorithm": "RSASSA_PSS_SHA_256"},
        "InvalidKeyUsageException",
    ),
    *key_cases("Verify", "sign", Message=b"m", Signature=b"s" * 64, SigningAlgorithm="ECDSA_SHA_256"),
    Case(
        "Verify",
        "signature that does not verify",
        lambda w: {
            "KeyId": w.key("sign"),
            "Message": b"m",
            "Signature": b"s" * 64,
            "SigningAlgorithm": "ECDSA_SHA_256",
        },
        "KMSInvalidSignatureException",
    ),
    Case(
        "Verify",
        "HMAC key",
        lambda w: {"KeyId": w.key("hmac"), "Message": b"m", "Signature": b"s", "SigningAlgorithm": "ECDSA_SHA_256"},
        "InvalidKeyUsageException",
    ),
    *key_cases("GetPublicKey", "sign", states=False),
    Case(
        "GetPublicKey",
        "disabled key",
        lambda w: {"KeyId": w.key("sign", "Disabled")},
        "DisabledException",
        _disabled("sign"),
    ),
    Case(
        "GetPublicKey",
        "key pending deletion",
        lambda w: {"KeyId": w.key("sign", "PendingDeletion")},
        "KMSInvalidStateException",
        _pending("sign"),
    ),
    Case("GetPublicKey", "symmetric key", lambda w: {"KeyId": w.key()}, "UnsupportedOperationException"),
    Case(
        "GetPublicKey",
        "unknown grant token",
        lambda w: {"KeyId": w.key("sign"), "GrantTokens": ["x"]},
        "InvalidGrantTokenException",
    ),
    *key_cases("GenerateMac", "hmac", Message=b"m", MacAlgorithm="HMAC_SHA_256"),
    Case(
        "GenerateMac",
        "symmetric key",
        lambda w: {"KeyId": w.key(), "Message": b"m", "MacAlgorithm": "HMAC_SHA_256"},
        "InvalidKeyUsageException",
    ),
    Case(
        "GenerateMac",
        "algorithm of another HMAC spec",
        lambda w: {"KeyId": w.key("hmac"), "Message": b"m", "MacAlgorithm": "HMAC_SHA_512"},
        "InvalidKeyUsageException",
    ),
    *key_cases("VerifyMac", "hmac", Message=b"m", Mac=b"x" * 32, MacAlgorithm="HMAC_SHA_256"),
    Case(
        "VerifyMac",
        "MAC that does not verify",
        lambda w: {"KeyId": w.key("hmac"), "Message": b"m", "Mac": b"x" * 32, "MacAlgorithm": "HMAC_SHA_256"},
        "KMSInvalidMacException",
    ),
    Case(
        "VerifyMac",
        "symmetric key",
        lambda w: {"KeyId": w.key(), "Message": b"m", "Mac": b"x" * 32, "MacAlgorithm": "HMAC_SHA_256"},
        "InvalidKeyUsageException",
    ),
    *key_cases("DeriveSharedSecret", "agree", KeyAgreementAlgorithm="ECDH", PublicKey=PEER),
    Case(
        "DeriveSharedSecret",
        "signing key",
        lambda w: {"KeyId": w.key("sign"), "KeyAgreementAlgorithm": "ECDH", "PublicKey": PEER},
        "InvalidKeyUsageException",
    ),
    # --- grants ---------------------------------------------------------------------
    *key_cases("CreateGrant", GranteePrincipal="arn:aws:iam::111122223333:root", Operations=["Encrypt"]),
    Case(
        "CreateGrant",
        "grantee that is no ARN",
        lambda w: {"KeyId": w.key(), "GranteePrincipal": "someone", "Operations": ["Encrypt"]},
        "InvalidArnException",
    ),
    Case("ListGrants", "unknown key", lambda w: {"KeyId": w.missing}, "NotFoundException"),
    Case("ListGrants", "malformed grant id", lambda w: {"KeyId": w.key(), "GrantId": "x"}, "InvalidGrantIdException"),
    Case("ListGrants", "marker of nothing", lambda w: {"KeyId": w.key(), "Marker": "x"}, "InvalidMarkerException"),
    Case(
        "ListRetirableGrants",
        "retiring principal that is no ARN",
        lambda w: {"RetiringPrincipal": "someone"},
        "InvalidArnException",
    ),
    Case(
        "ListRetirableGrants",
        "marker of nothing",
        lambda w: {"RetiringPrincipal": w.persona.principal.arn, "Marker": "x"},
        "InvalidMarkerException",
    ),
    Case("RetireGrant", "unknown grant token", lambda w: {"GrantToken": "not-a-token"}, "InvalidGrantTokenException"),
    Case(
        "RetireGrant",
        "malformed grant id",
        lambda w: {"KeyId": _arn(w, w.key()), "GrantId": "x"},
        "InvalidGrantIdException",
    ),
    Case(
        "RetireGrant",
        "unknown grant",
        lambda w: {"KeyId": _arn(w, w.key()), "GrantId": "0" * 64},
        "NotFoundException",
    ),
    Case(
        "RetireGrant",
        "dry run",
        lambda w: dict(zip(("KeyId", "GrantId"), w.grant(), strict=True), DryRun=True),
        "DryRunOperationException",
    ),
    Case("RevokeGrant", "unknown key", lambda w: {"KeyId": w.missing, "GrantId": "0" * 64}, "NotFoundException"),
    Case("RevokeGrant", "malformed grant id", lambda w: {"KeyId": w.key(), "GrantId": "x"}, "InvalidGrantIdException"),
    Case(
        "RevokeGrant",
        "dry run",
        lambda w: dict(zip(("KeyId", "GrantId"), w.grant(), strict=True), DryRun=True),
        "DryRunOperationException",
    ),
    # --- imported key material ------------------------------------------------------
    *management_cases(
        "GetParametersForImport", pending=False, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    ),
    Case(
        "GetParametersForImport",
        "key with generated material",
        lambda w: {"KeyId": w.key(), "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"},
        "UnsupportedOperationException",
    ),
    Case(
        "GetParametersForImport",
        "key pending deletion",
        lambda w: {
            "KeyId": w.key("ext", "PendingDeletion"),
            "WrappingAlgorithm": "RSAES_OAEP_SHA_256",
            "WrappingKeySpec": "RSA_2048",
        },
        "KMSInvalidStateException",
        _pending("ext"),
    ),
    *management_cases(
        "ImportKeyMaterial",
        pending=False,
        ImportToken=b"t",
        EncryptedKeyMaterial=b"m",
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    ),
    Case(
        "ImportKeyMaterial",
        "key with generated material",
        lambda w: {"KeyId": w.key(), "ImportToken": b"t", "EncryptedKeyMaterial": b"m", **NO_EXPIRY},
        "UnsupportedOperationException",
    ),
    Case(
        "ImportKeyMaterial",
        "token that is none",
        lambda w: {"KeyId": w.key("ext"), "ImportToken": b"t", "EncryptedKeyMaterial": b"m", **NO_EXPIRY},
        "InvalidImportTokenException",
    ),
    Case(
        "ImportKeyMaterial",
        "material not wrapped by the token's key",
        lambda w: {
            "KeyId": w.key("ext"),
            "ImportToken": w.import_parameters(w.key("ext"))["token"],
            "EncryptedKeyMaterial": b"\x01" * 256,
            "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
        },
        "InvalidCiphertextException",
    ),
    Case(
        "ImportKeyMaterial",
        "other material than the key's",
        lambda w: (
            (key_id := w.imported())
            and (params := w.import_parameters(key_id))
            and {
                "KeyId": key_id,
                "ImportToken": params["token"],
                "EncryptedKeyMaterial": wrap(params["public"], "RSAES_OAEP_SHA_256", os.urandom(32)),
                "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
            }
        ),
        "IncorrectKeyMaterialException",
    ),
    Case(
        "ImportKeyMaterial",
        "key pending deletion",
        lambda w: {
            "KeyId": w.key("ext", "PendingDeletion"),
            "ImportToken": b"t",
            "EncryptedKeyMaterial": b"m",
            **NO_EXPIRY,
        },
        "KMSInvalidStateException",
        _pending("ext"),
    ),
    # --- custom key stores ----------------------------------------------------------
    Case(
        "CreateCustomKeyStore",
        "taken name",
        lambda w: w.store() and cloudhsm_params(init_token()),
        "CustomKeyStoreNameInUseException",
        "A custom key store named hsm-store already exists in this account and region.",
    ),
    Case(
        "CreateCustomKeyStore",
        "token backing another store",
        lambda w: w.store() and cloudhsm_params(w.stores.token, name="again"),
        "CloudHsmClusterInUseException",
        lambda w: f"The token {w.stores.token.label} is already associated with a custom key store.",
    ),
    Case(
        "CreateCustomKeyStore",
        "unknown token",
        lambda w: cloudhsm_params(w.stores.token, CloudHsmClusterId="cluster-234567abcde"),
        "CloudHsmClusterNotFoundException",
        "No PKCS#11 token is labelled cluster-234567abcde.",
    ),
    Case(
        "CreateCustomKeyStore",
        "trust anchor that is no certificate",
        lambda w: cloudhsm_params(w.stores.token, TrustAnchorCertificate="not a certificate"),
        "IncorrectTrustAnchorException",
        "The TrustAnchorCertificate is not a PEM-encoded X.509 certificate.",
    ),
    Case("CreateCustomKeyStore", "eleventh store", _eleventh_store, "LimitExceededException"),
    Case(
        "CreateCustomKeyStore",
        "PKCS#11 library that cannot be loaded",
        lambda w: cloudhsm_params(w.stores.token),
        "CloudHsmClusterInvalidConfigurationException",
        settings=BROKEN_LIBRARY,
    ),
    Case(
        "CreateCustomKeyStore",
        "proxy URI of another store",
        lambda w: w.xks_store() and xks_params("again"),
        "XksProxyUriInUseException",
    ),
    Case(
        "CreateCustomKeyStore",
        "wrong proxy secret",
        lambda w: xks_params(XksProxyAuthenticationCredential=WRONG_SECRET),
        "XksProxyIncorrectAuthenticationCredentialException",
    ),
    Case(
        "CreateCustomKeyStore",
        "proxy that does not answer",
        lambda w: xks_params(XksProxyUriEndpoint="https://127.0.0.2"),
        "XksProxyUriUnreachableException",
    ),
    Case(
        "CreateCustomKeyStore",
        "proxy whose health answer is no XKS answer",
        lambda w: xks_params(XksProxyUriPath=INVALID_URI_PATH),
        "XksProxyInvalidResponseException",
    ),
    Case(
        "CreateCustomKeyStore",
        "VPC endpoint service connectivity",
        lambda w: xks_params(XksProxyConnectivity="VPC_ENDPOINT_SERVICE"),
        "XksProxyInvalidConfigurationException",
        "kmsweb reaches XKS proxies over public endpoints only (XksProxyConnectivity PUBLIC_ENDPOINT).",
    ),
    Case(
        "DescribeCustomKeyStores",
        "unknown store",
        lambda w: {"CustomKeyStoreId": UNKNOWN_STORE},
        "CustomKeyStoreNotFoundException",
        f"Custom key store {UNKNOWN_STORE} does not exist.",
    ),
    Case("DescribeCustomKeyStores", "marker of nothing", lambda w: {"Marker": "x"}, "InvalidMarkerException"),
    *[
        Case(op, "unknown store", lambda w: {"CustomKeyStoreId": UNKNOWN_STORE}, "CustomKeyStoreNotFoundException")
        for op in ("ConnectCustomKeyStore", "DisconnectCustomKeyStore", "DeleteCustomKeyStore", "UpdateCustomKeyStore")
    ],
    Case(
        "ConnectCustomKeyStore",
        "failed store",
        lambda w: {"CustomKeyStoreId": _failed_store(w)},
        "CustomKeyStoreInvalidStateException",
    ),
    Case(
        "DisconnectCustomKeyStore",
        "disconnected store",
        lambda w: {"CustomKeyStoreId": w.store("DISCONNECTED")},
        "CustomKeyStoreInvalidStateException",
        lambda w: f"The custom key store {w.store()} is already DISCONNECTED.",
    ),
    Case(
        "DeleteCustomKeyStore",
        "connected store",
        lambda w: {"CustomKeyStoreId": w.store()},
        "CustomKeyStoreInvalidStateException",
        lambda w: f"DeleteCustomKeyStore needs the custom key store {w.store()} to be DISCONNECTED; it is CONNECTED.",
    ),
    Case(
        "DeleteCustomKeyStore",
        "store with keys",
        lambda w: {"CustomKeyStoreId": w.store("DISCONNECTED", with_key=True)},
        "CustomKeyStoreHasCMKsException",
    ),
    Case(
        "UpdateCustomKeyStore",
        "connected CloudHSM store",
        lambda w: {"CustomKeyStoreId": w.store(), "KeyStorePassword": "another-pin"},
        "CustomKeyStoreInvalidStateException",
    ),
    Case(
        "UpdateCustomKeyStore",
        "taken name",
        lambda w: {
            "CustomKeyStoreId": w.store("DISCONNECTED"),
            "NewCustomKeyStoreName": w.xks_store("taken") and "taken",
        },
        "CustomKeyStoreNameInUseException",
    ),
    Case(
        "UpdateCustomKeyStore",
        "another token",
        lambda w: {"CustomKeyStoreId": w.store("DISCONNECTED"), "CloudHsmClusterId": init_token().label},
        "CloudHsmClusterNotRelatedException",
    ),
    Case(
        "UpdateCustomKeyStore",
        "proxy URI of another store",
        lambda w: (
            w.xks_store("first", connected=False, XksProxyUriEndpoint="https://localhost")
            and {"CustomKeyStoreId": w.xks_store(connected=False), "XksProxyUriEndpoint": "https://localhost"}
        ),
        "XksProxyUriInUseException",
    ),
    Case(
        "UpdateCustomKeyStore",
        "wrong proxy secret",
        lambda w: {"CustomKeyStoreId": w.xks_store(), "XksProxyAuthenticationCredential": WRONG_SECRET},
        "XksProxyIncorrectAuthenticationCredentialException",
    ),
    Case(
        "UpdateCustomKeyStore",
        "proxy that does not answer",
        lambda w: {"CustomKeyStoreId": w.xks_store(connected=False), "XksProxyUriEndpoint": "https://127.0.0.2"},
        "XksProxyUriUnreachableException",
    ),
    Case(
        "UpdateCustomKeyStore",
        "proxy whose health answer is no XKS answer",
        lambda w: {"CustomKeyStoreId": w.xks_store(), "XksProxyUriPath": INVALID_URI_PATH},
        "XksProxyInvalidResponseException",
    ),
    Case(
        "UpdateCustomKeyStore",
        "VPC endpoint service connectivity",
        lambda w: {"CustomKeyStoreId": w.xks_store(connected=False), "XksProxyConnectivity": "VPC_ENDPOINT_SERVICE"},
        "XksProxyInvalidConfigurationException",
    ),
    *management_cases("DeleteImportedKeyMaterial", pending=False),
    Case(
        "DeleteImportedKeyMaterial",
        "key with generated material",
        lambda w: {"KeyId": w.key()},
        "UnsupportedOperationException",
    ),
]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    directory: Path = tmp_path_factory.mktemp("stores")
    with pytest.MonkeyPatch.context() as monkeypatch:
        softhsm_dir(directory, monkeypatch)
        proxy = XksProxy(token=init_token().session_token(), region=REGION)
        ca = proxy.start(directory)
        proxy.create_key("ext-key-1")
        proxy.create_key("disabled-key-1")
        with override_settings(
            KMSWEB_PKCS11_LIBRARY=LIBRARY,
            KMSWEB_XKS_PROXY_PORT=proxy.port,
            KMSWEB_XKS_CA_BUNDLE=str(ca),
            KMSWEB_XKS_ALLOW_PRIVATE=True,  # the test proxy listens on 127.0.0.1
        ):
            yield Stores(token=init_token(), proxy=proxy)
        proxy.stop()
    pkcs11.forget_all()


@pytest.fixture(autouse=True)
def _platform_keys(db: None) -> None:
    for purpose in (TOKEN_PURPOSE, FINGERPRINT_PURPOSE, SECRET_PURPOSE):
        platform_key_get_or_create(purpose=purpose)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.operation}-{c.name.replace(' ', '_')}")
def test_it_answers_the_documented_error(key_admin: Persona, stores: Stores, case: Case) -> None:
    w = World(key_admin, stores)
    params = case.params(w)

    with override_settings(**dict(case.settings)):
        answer = call(key_admin, case.operation, **params)

    assert (answer.status, answer.code) == (STATUS.get(case.code, 400), case.code), answer.body
    if case.code in BARE:
        assert "message" not in answer.body
    else:
        assert answer.message, answer.body
        assert "None" not in answer.message
    if case.message is not None:
        expected = case.message(w) if callable(case.message) else case.message
        assert answer.message == expected


def test_it_provokes_only_errors_aws_documents_for_the_operation() -> None:
    for case in CASES:
        documented = {shape.name for shape in MODEL.operation_model(case.operation).error_shapes}
        assert case.code in documented | COMMON, (case.operation, case.name, case.code)


def test_it_walks_every_documented_error() -> None:
    provoked = {(case.operation, case.code) for case in CASES}
    missing = []
    for operation in sorted(HANDLERS):
        for shape in MODEL.operation_model(operation).error_shapes:
            pair = (operation, shape.name)
            if pair not in provoked and shape.name not in UNPROVOKED and pair not in NOT_PROVOKED:
                missing.append(pair)
    assert missing == [], "provoke these errors in CASES, or say in NOT_PROVOKED why not"
    assert not (set(NOT_PROVOKED) & provoked), "NOT_PROVOKED names an error a case provokes"
