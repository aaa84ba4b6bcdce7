"""Platform owned keys do not exist on the wire.

Every operation that takes a key is called with an owned key's id and ARN,
and again with a key id that never existed: the answers must be the same
(NotFoundException for the key-taking operations), so a client cannot even
learn that an owned key is there. Lists never show them.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.conf import settings

from keys import crypto
from keys.models import Key, KeyManager
from keys.services.platform import platform_encrypt, platform_key_get_or_create
from tests.conftest import REGION

KEY_MEMBERS = ("KeyId", "TargetKeyId", "DestinationKeyId", "SourceKeyId")
# The operations kmsweb serves that must answer NotFound for an unknown key
# (whatever other helpers add answers the same for owned and missing keys).
MUST_BE_NOT_FOUND = {
    "DescribeKey",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncrypt",
    "EnableKey",
    "DisableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "UpdateKeyDescription",
    "CreateAlias",
    "TagResource",
    "UntagResource",
    "ListResourceTags",
    "EnableKeyRotation",
    "DisableKeyRotation",
    "GetKeyRotationStatus",
    "RotateKeyOnDemand",
    "ListKeyRotations",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "ListKeyPolicies",
    "CreateGrant",
    "ListGrants",
    "RevokeGrant",
    "ListAliases",
    "GetKeyLastUsage",
}
_OVERRIDES: dict[str, Any] = {
    "Plaintext": b"secret",
    "CiphertextBlob": b"x" * 64,
    "KeySpec": "AES_256",
    "PolicyName": "default",
    "Policy": '{"Version":"2012-10-17","Statement":[]}',
    "GranteePrincipal": "arn:aws:iam::111122223333:user/x",
    "AliasName": "alias/owned-probe",
    "Description": "probe",
    "GrantId": "0" * 64,
    "Tags": [{"TagKey": "k", "TagValue": "v"}],
    "TagKeys": ["k"],
    "Operations": ["Encrypt"],
}


def _dummy(shape: Any, name: str) -> Any:
    if name in _OVERRIDES:
        return _OVERRIDES[name]
    kind = shape.type_name
    if kind == "structure":
        return {m: _dummy(shape.members[m], m) for m in shape.required_members}
    if kind == "list":
        return [_dummy(shape.member, name)]
    if kind == "map":
        return {}
    if kind == "string":
        enum = shape.enum
        return enum[0] if enum else "x" * max(1, shape.metadata.get("min", 1))
    if kind == "blob":
        return b"x" * max(1, shape.metadata.get("min", 1))
    if kind in ("integer", "long"):
        return max(1, shape.metadata.get("min", 1))
    if kind == "boolean":
        return False
    raise AssertionError(f"no dummy for {name} ({kind})")


def _calls(client: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(operation, key member, required parameters) for every key-taking operation."""
    model = client.meta.service_model
    calls = []
    for name in model.operation_names:
        shape = model.operation_model(name).input_shape
        if shape is None:
            continue
        for member in KEY_MEMBERS:
            if member in shape.members:
                wanted = set(shape.required_members) | (set(shape.members) & set(_OVERRIDES))
                params = {m: _dummy(shape.members[m], m) for m in sorted(wanted) if m not in KEY_MEMBERS}
                calls.append((name, member, params))
    return calls


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _answer(client: Any, operation: str, params: dict[str, Any]) -> tuple[str, str]:
    try:
        getattr(client, _snake(operation))(**params)
    except ClientError as exc:
        return exc.response["Error"]["Code"], exc.response["Error"].get("Message", "")
    return "OK", ""


@pytest.fixture
def owned(key_admin: Any) -> Key:
    # key_admin's access key already made the access-key-secrets key; add the others.
    for purpose in ("totp-secrets", "audit-signing"):
        platform_key_get_or_create(purpose=purpose)
    return Key.objects.filter(manager=KeyManager.OWNED).order_by("purpose").first()  # type: ignore[return-value]


def test_it_answers_every_key_operation_on_an_owned_key_as_on_a_missing_key(
    kms_client: Any, key_admin: Any, owned: Key
) -> None:
    client = kms_client(key_admin, validate=False)
    account = settings.KMSWEB_ACCOUNT_ID
    missing = str(uuid.uuid4())
    calls = _calls(client)
    assert {name for name, _, _ in calls} >= MUST_BE_NOT_FOUND
    for operation, member, params in calls:
        for form in ("{id}", f"arn:aws:kms:{REGION}:{account}:key/{{id}}"):
            owned_answer = _answer(client, operation, {**params, member: form.format(id=owned.id)})
            missing_answer = _answer(client, operation, {**params, member: form.format(id=missing)})
            assert owned_answer[0] == missing_answer[0], (operation, member, owned_answer, missing_answer)
            assert owned_answer[1].replace(str(owned.id), "<id>") == missing_answer[1].replace(missing, "<id>"), (
                operation,
                member,
            )
            if operation in MUST_BE_NOT_FOUND and member != "SourceKeyId":
                assert owned_answer[0] == "NotFoundException", (operation, member, owned_answer)
    # Nothing was changed on any owned key.
    for key in Key.objects.filter(manager=KeyManager.OWNED):
        assert key.state == "Enabled" and not key.aliases.exists() and not key.tags.exists()
        assert not key.grants.exists()


def test_it_never_lists_owned_keys(kms: Any, owned: Key) -> None:
    listed = {k["KeyId"] for k in kms.list_keys()["Keys"]}
    owned_ids = {str(k.id) for k in Key.objects.filter(manager=KeyManager.OWNED)}
    assert len(owned_ids) >= 3
    assert not listed & owned_ids
    aliases = kms.list_aliases()["Aliases"]
    assert not {a.get("TargetKeyId") for a in aliases} & owned_ids


def test_it_refuses_a_ciphertext_made_under_an_owned_key_like_any_unknown_blob(kms: Any, owned: Key) -> None:
    owned_blob = platform_encrypt(purpose=owned.purpose, plaintext=b"platform secret", context={})
    stranger = crypto.encrypt(
        crypto.generate_material(), key_id=uuid.uuid4(), version=1, plaintext=b"platform secret", context=None
    )
    answers = []
    for blob in (owned_blob, stranger):
        with pytest.raises(ClientError) as exc:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext={"kmsweb:purpose": owned.purpose})
        answers.append((exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]))
        with pytest.raises(ClientError) as exc:
            kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId="alias/none")
        assert exc.value.response["Error"]["Code"] == "NotFoundException"
    assert answers[0] == answers[1]
    assert answers[0][0] == "InvalidCiphertextException"
