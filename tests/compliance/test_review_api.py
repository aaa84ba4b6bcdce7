"""``GET /api/v1/principals/<arn>/access-review`` and ``POST /api/v1/policy-previews``
against a live server, signed by botocore's SigV4 signer: the generated policy the
engine confirmed, previews of real policies, malformed input as clear 400 errors
with nothing saved, and authorization as for the findings API (refusals audited)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from audit.models import AuditEvent
from keys.models import Key
from policies.models import IdentityPolicy
from tests.conftest import OTHER_ACCOUNT, REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

READ = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kmsweb:DescribeFindings", "Resource": "*"}]}
)
BROAD = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})


def signed(live_server: Any, persona: Persona | None, method: str, path: str, body: Any = None) -> requests.Response:
    url = live_server.url + path
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else (body or b"")
    headers: dict[str, str] = {"Content-Type": "application/json"} if method == "POST" else {}
    if persona is not None:
        request = AWSRequest(method=method, url=url, data=data, headers=dict(headers))
        SigV4Auth(Credentials(persona.access_key_id, persona.secret), "kms", REGION).add_auth(request)
        headers = dict(request.prepare().headers)
    return requests.request(method, url, data=data, headers=headers, timeout=30)


@pytest.fixture
def reader(make_persona: Callable[..., Persona]) -> Persona:
    return make_persona("reader", policy=READ)


@pytest.fixture
def used(live_server: Any, make_persona: Callable[..., Persona], make_key: Callable[..., Key]) -> dict[str, Any]:
    """An application that used a key through boto3, with a context."""
    key = make_key(description="payroll")
    app = make_persona("app", policy=BROAD)
    kms = boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=live_server.url,
        aws_access_key_id=app.access_key_id,
        aws_secret_access_key=app.secret,
    )
    blob = kms.encrypt(KeyId=str(key.id), Plaintext=b"x", EncryptionContext={"purpose": "payroll"})["CiphertextBlob"]
    kms.decrypt(CiphertextBlob=blob, EncryptionContext={"purpose": "payroll"})
    kms.describe_key(KeyId=str(key.id))
    return {"key": key, "app": app}


def test_it_answers_the_access_review_with_the_confirmed_policy(
    live_server: Any, reader: Persona, used: dict[str, Any]
) -> None:
    key, app = used["key"], used["app"]
    # The ARN goes in the path as it is (":" and "/" are allowed in a path).
    response = signed(live_server, reader, "GET", f"/api/v1/principals/{app.principal.arn}/access-review?Days=7")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["PrincipalArn"] == app.principal.arn and body["Days"] == 7
    (row,) = [k for k in body["Keys"] if k["KeyId"] == str(key.id)]
    assert {u["Action"] for u in row["Used"]} == {"kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"}
    assert "kms:ScheduleKeyDeletion" in row["Unused"]
    policy = json.loads(body["GeneratedPolicy"])
    crypto = next(s for s in policy["Statement"] if "Condition" in s)
    assert crypto == {
        "Sid": crypto["Sid"],
        "Effect": "Allow",
        "Action": ["kms:Decrypt", "kms:Encrypt"],
        "Resource": key.arn,
        "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "payroll"}},
    }
    assert body["Links"]["Dashboard"].endswith(f"/compliance/principals/{app.principal.pk}/access-review/")
    assert AuditEvent.objects.filter(event_name="GetAccessReview", error_code="").count() == 1


def test_it_previews_a_key_policy_change(live_server: Any, reader: Persona, used: dict[str, Any]) -> None:
    key = used["key"]
    policy = json.loads(key.policy)
    partner = f"arn:aws:iam::{OTHER_ACCOUNT}:root"
    policy["Statement"].append(
        {"Sid": "Partner", "Effect": "Allow", "Principal": {"AWS": partner}, "Action": "kms:Decrypt", "Resource": "*"}
    )
    body = {"ChangeType": "KeyPolicy", "KeyId": key.arn, "Policy": json.dumps(policy)}
    response = signed(live_server, reader, "POST", "/api/v1/policy-previews", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert {"Principal": partner, "KeyId": str(key.id), "KeyArn": key.arn, "Actions": ["kms:Decrypt"]} in [
        {k: v for k, v in g.items() if k != "OnlyUnderConditions"} for g in answer["Gains"]
    ]
    assert answer["Losses"] == []
    assert any(f["RuleId"] == "kms-key-policy-no-public-access" for f in answer["FindingsCreated"])
    assert Key.objects.get(pk=key.pk).policy == key.policy


def test_it_previews_an_identity_policy_change(live_server: Any, reader: Persona, used: dict[str, Any]) -> None:
    app = used["app"]
    name = app.principal.inline_policies.get().name
    body = {
        "ChangeType": "IdentityPolicy",
        "PrincipalArn": app.principal.arn,
        "PolicyName": name,
        "Policy": json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}]}
        ),
    }
    response = signed(live_server, reader, "POST", "/api/v1/policy-previews", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert not answer["Gains"]
    (loss,) = [g for g in answer["Losses"] if g["KeyId"] == str(used["key"].id)]
    assert "kms:Decrypt" in loss["Actions"] and "kms:Encrypt" not in loss["Actions"]
    assert any(f["RuleId"] == "iam-policy-blocked-kms-actions" for f in answer["FindingsResolved"])
    assert IdentityPolicy.objects.get(principal=app.principal, name=name).document == BROAD


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        (b"{not json", "SerializationException", "not valid JSON"),
        ({"ChangeType": "Everything"}, "ValidationException", "ChangeType must be one of"),
        ({"ChangeType": "KeyPolicy", "Colour": "red"}, "ValidationException", "Unknown member"),
        ({"ChangeType": "KeyPolicy", "KeyId": "KEY", "Policy": "{not json"}, "MalformedPolicyDocumentException", ""),
        (
            {"ChangeType": "KeyPolicy", "KeyId": "KEY", "Policy": json.dumps({"Statement": [{"Effect": "Maybe"}]})},
            "MalformedPolicyDocumentException",
            "",
        ),
        ({"ChangeType": "KeyPolicy", "KeyId": "KEY", "Policy": 7}, "ValidationException", "Policy must be a string"),
        ({"ChangeType": "CreateGrant", "KeyId": "KEY", "Operations": "Decrypt"}, "ValidationException", "Operations"),
    ],
)
def test_it_refuses_malformed_previews_with_a_clear_error(
    live_server: Any, reader: Persona, used: dict[str, Any], body: Any, code: str, says: str
) -> None:
    key = used["key"]
    if isinstance(body, dict) and body.get("KeyId") == "KEY":
        body = {**body, "KeyId": str(key.id)}
    response = signed(live_server, reader, "POST", "/api/v1/policy-previews", body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["__type"] == code and answer["message"] and says in answer["message"]
    assert Key.objects.get(pk=key.pk).policy == key.policy
    refused = AuditEvent.objects.filter(event_name="PreviewPolicyChange").exclude(error_code="")
    assert [e.error_code for e in refused] == [code]


def test_it_refuses_callers_without_the_permission_or_a_signature(
    live_server: Any, make_persona: Callable[..., Persona], used: dict[str, Any]
) -> None:
    nobody = make_persona("nobody", policy=None)
    review = f"/api/v1/principals/{used['app'].principal.arn}/access-review"
    preview = {"ChangeType": "KeyPolicy", "KeyId": str(used["key"].id), "Policy": BROAD}
    for persona in (nobody, None):
        response = signed(live_server, persona, "GET", review)
        assert response.status_code == 403 and "GeneratedPolicy" not in response.text
        response = signed(live_server, persona, "POST", "/api/v1/policy-previews", preview)
        assert response.status_code == 403 and "Gains" not in response.text
    assert signed(live_server, nobody, "GET", review).json()["__type"] == "AccessDeniedException"
    refused = AuditEvent.objects.filter(event_name__in=["GetAccessReview", "PreviewPolicyChange"]).exclude(
        error_code=""
    )
    assert refused.count() == 5


def test_it_refuses_another_accounts_principal_and_bad_days(
    live_server: Any, reader: Persona, outsider: Persona, used: dict[str, Any]
) -> None:
    response = signed(live_server, reader, "GET", f"/api/v1/principals/{outsider.principal.arn}/access-review")
    assert response.status_code == 404 and response.json()["__type"] == "NotFoundException"
    path = f"/api/v1/principals/{used['app'].principal.arn}/access-review"
    for query in ("?Days=0", "?Days=many", "?Colour=red"):
        response = signed(live_server, reader, "GET", path + query)
        assert response.status_code == 400 and response.json()["__type"] == "ValidationException", query
