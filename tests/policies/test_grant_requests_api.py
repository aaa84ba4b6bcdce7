"""The grant request REST API against a live server, signed by botocore's own SigV4 signer.

``POST /api/v1/grant-requests``, ``GET /api/v1/grant-requests/<id>`` and
``POST /api/v1/grant-requests/<id>/withdraw``: JSON in and out; errors as
``{"__type", "message"}`` with 400, 403 or 404 (never a 500), each refusal
audited once and nothing changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from django.conf import settings

from audit.models import AuditEvent
from keys.models import Alias, Key
from kmsweb.lib.caller import Caller
from policies import services
from policies.models import GrantRequest, GrantRequestState, Principal
from tests.conftest import REGION, Persona, _persona
from tests.factories import PrincipalFactory

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/api/v1/grant-requests"


def policy(*actions: str) -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}]}
    )


def give(persona: Persona, *actions: str) -> Persona:
    """An inline identity policy allowing ``actions`` on every resource."""
    principal = persona.principal
    services.identity_policy_put(
        caller=Caller.system("tests", account_id=principal.account_id),
        account=principal.account,
        name="grant-request-tests",
        document=policy(*actions),
        principal=principal,
    )
    return persona


@dataclass
class Api:
    """Raw, signed HTTP to the live server."""

    base: str

    def send(
        self,
        method: str,
        path: str,
        persona: Persona | None,
        body: Any = None,
        *,
        raw: bytes | None = None,
        secret: str | None = None,
        sign_path: str | None = None,
    ) -> requests.Response:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"}
        if persona is not None:
            signed = AWSRequest(method=method, url=self.base + (sign_path or path), data=data, headers=headers)
            SigV4Auth(Credentials(persona.access_key_id, secret or persona.secret), "kms", REGION).add_auth(signed)
            headers = dict(signed.prepare().headers)
        return requests.request(method, self.base + path, data=data, headers=headers, timeout=10)

    def create(self, persona: Persona, body: Any, **options: Any) -> requests.Response:
        return self.send("POST", PATH, persona, body, **options)

    def get(self, persona: Persona | None, request_id: int, **options: Any) -> requests.Response:
        return self.send("GET", f"{PATH}/{request_id}", persona, **options)

    def withdraw(self, persona: Persona, request_id: int) -> requests.Response:
        return self.send("POST", f"{PATH}/{request_id}/withdraw", persona)


@pytest.fixture
def api(live_server: Any) -> Api:
    return Api(live_server.url)


@pytest.fixture
def asker(key_admin: Persona) -> Persona:
    return give(key_admin, "kms:*", "kmsweb:RequestGrant")


@pytest.fixture
def approver(db: None) -> Persona:
    return give(_persona(settings.KMSWEB_ACCOUNT_ID, "security-bot"), "kms:Describe*", "kmsweb:DecideGrantRequest")


@pytest.fixture
def bystander(db: None) -> Persona:
    """A principal of the key's account with no say over grant requests."""
    return _persona(settings.KMSWEB_ACCOUNT_ID, "bystander")


@pytest.fixture
def grantee(key_admin: Persona) -> Principal:
    return PrincipalFactory(account=key_admin.principal.account, name="billing-app", type="role")


@pytest.fixture
def key(make_key: Callable[..., Key], asker: Persona) -> Key:
    return make_key(description="invoices", alias="alias/invoices")


def body_for(key: Key, grantee: Principal, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "KeyId": str(key.id),
        "GranteePrincipal": grantee.arn,
        "Operations": ["Decrypt"],
        "Constraints": {"EncryptionContextEquals": {"app": "billing"}},
        "Justification": "Nightly invoice export (CHG-7).",
        "DurationSeconds": 3600,
    }
    body.update(overrides)
    return body


def assert_error(response: requests.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["x-amzn-RequestId"]
    body = response.json()
    assert body["__type"] == code, body
    assert body["message"].strip()
    return body["message"]


def refusals(event_name: str) -> list[str]:
    return list(
        AuditEvent.objects.filter(event_name=event_name).exclude(error_code="").values_list("error_code", flat=True)
    )


# --- the happy path ---------------------------------------------------------------


def test_it_links_to_the_configured_public_url(
    api: Api, asker: Persona, key: Key, grantee: Principal, settings: Any
) -> None:
    settings.KMSWEB_PUBLIC_URL = "https://kms.example.net"
    created = api.create(asker, body_for(key, grantee)).json()
    assert created["Links"]["Dashboard"] == f"https://kms.example.net/grant-requests/{created['GrantRequestId']}/"


def test_it_creates_reads_and_withdraws_a_request(
    api: Api, asker: Persona, approver: Persona, key: Key, grantee: Principal, live_server: Any, settings: Any
) -> None:
    settings.KMSWEB_PUBLIC_URL = ""
    response = api.create(asker, body_for(key, grantee))
    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"] == "application/json"
    created = response.json()
    request_id = created["GrantRequestId"]
    assert created["State"] == "pending"
    assert created["KeyId"] == key.arn
    assert created["Requester"] == asker.principal.arn
    assert created["GranteePrincipal"] == grantee.arn
    assert created["Operations"] == ["Decrypt"]
    assert created["Constraints"] == {"EncryptionContextEquals": {"app": "billing"}}
    assert created["DurationSeconds"] == 3600
    assert created["ApprovalsRequired"] == 1 and created["Approvals"] == 0
    assert created["Links"] == {
        "Self": f"{live_server.url}{PATH}/{request_id}",
        "Withdraw": f"{live_server.url}{PATH}/{request_id}/withdraw",
        # The address this request came to (its port too), with no KMSWEB_PUBLIC_URL set.
        "Dashboard": f"{live_server.url}/grant-requests/{request_id}/",
    }
    stored = GrantRequest.objects.get(pk=request_id)
    assert stored.requester == asker.principal and stored.state == GrantRequestState.PENDING
    event = AuditEvent.objects.get(event_name="CreateGrantRequest")
    assert event.origin == "api" and event.error_code == ""
    assert event.user_identity["accessKeyId"] == asker.access_key_id

    for reader in (asker, approver):
        got = api.get(reader, request_id)
        assert got.status_code == 200, got.text
        assert got.json() == created

    withdrawn = api.withdraw(asker, request_id)
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["State"] == "withdrawn"
    assert "Withdraw" not in withdrawn.json()["Links"]
    assert [d["Verdict"] for d in withdrawn.json()["Decisions"]] == ["withdraw"]
    assert GrantRequest.objects.get(pk=request_id).state == GrantRequestState.WITHDRAWN

    again = api.withdraw(asker, request_id)
    assert_error(again, 400, "KMSInvalidStateException")


def test_it_names_the_key_by_alias_or_arn(api: Api, asker: Persona, key: Key, grantee: Principal) -> None:
    assert Alias.objects.filter(key=key, name="alias/invoices").exists()
    for key_ref in ("alias/invoices", key.arn):
        response = api.create(asker, body_for(key, grantee, KeyId=key_ref))
        assert response.status_code == 201, response.text
        assert response.json()["KeyId"] == key.arn


def test_it_shows_the_grant_once_approved(
    api: Api, asker: Persona, key: Key, grantee: Principal, make_dashboard_approver: Caller
) -> None:
    request_id = api.create(asker, body_for(key, grantee)).json()["GrantRequestId"]
    services.grant_request_decide(
        caller=make_dashboard_approver, request=GrantRequest.objects.get(pk=request_id), approve=True, comment="fine"
    )
    got = api.get(asker, request_id).json()
    assert got["State"] == "approved" and got["Approvals"] == 1
    assert got["GrantId"] and got["GrantExpirationDate"]
    assert got["Decisions"][0]["Comment"] == "fine"


@pytest.fixture
def make_dashboard_approver(db: None) -> Caller:
    principal = _persona(settings.KMSWEB_ACCOUNT_ID, "april").principal
    return Caller(
        principal_arn=principal.arn,
        account_id=principal.account_id,
        region=REGION,
        origin="dashboard",
        principal_pk=principal.pk,
        principal_name=principal.name,
        mfa_present=True,
        roles=("approver",),
    )


# --- who may -------------------------------------------------------------------------


def test_it_refuses_readers_other_than_the_requester_and_approvers(
    api: Api, asker: Persona, bystander: Persona, outsider: Persona, key: Key, grantee: Principal
) -> None:
    request_id = api.create(asker, body_for(key, grantee)).json()["GrantRequestId"]
    for reader in (bystander, outsider):
        assert "not authorized" in assert_error(api.get(reader, request_id), 403, "AccessDeniedException")
    assert refusals("DescribeGrantRequest") == ["AccessDeniedException"] * 2


def test_it_lets_only_the_requester_withdraw(
    api: Api, asker: Persona, approver: Persona, key: Key, grantee: Principal
) -> None:
    request_id = api.create(asker, body_for(key, grantee)).json()["GrantRequestId"]
    assert_error(api.withdraw(approver, request_id), 403, "AccessDeniedException")
    assert GrantRequest.objects.get(pk=request_id).state == GrantRequestState.PENDING
    assert refusals("WithdrawGrantRequest") == ["AccessDeniedException"]


def test_it_refuses_a_request_for_another_accounts_key(
    api: Api, outsider: Persona, key: Key, grantee: Principal
) -> None:
    give(outsider, "kms:*", "kmsweb:RequestGrant")
    assert_error(api.create(outsider, body_for(key, grantee, KeyId=key.arn)), 403, "AccessDeniedException")
    assert not GrantRequest.objects.exists()


def test_it_answers_an_unknown_request_with_404(api: Api, asker: Persona) -> None:
    assert_error(api.get(asker, 999999), 404, "NotFoundException")
    assert_error(api.withdraw(asker, 999999), 404, "NotFoundException")
    assert refusals("DescribeGrantRequest") == ["NotFoundException"]


# --- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"KeyId": "alias/nothing-here"}, 404, "NotFoundException"),
        ({"KeyId": "0b3c2c5e-0000-4000-8000-000000000000"}, 404, "NotFoundException"),
        ({"KeyId": ""}, 400, "ValidationException"),
        ({"KeyId": None}, 400, "ValidationException"),
        ({"KeyId": "nul\u0000"}, 400, "ValidationException"),
        ({"GranteePrincipal": "arn:aws:iam::111122223333:role/nobody"}, 400, "InvalidArnException"),
        ({"GranteePrincipal": 42}, 400, "ValidationException"),
        ({"Operations": []}, 400, "ValidationException"),
        ({"Operations": "Decrypt"}, 400, "ValidationException"),
        ({"Operations": ["Decrypt", 7]}, 400, "ValidationException"),
        ({"Operations": ["Sign"]}, 400, "ValidationException"),
        ({"Operations": ["DescribeKey"]}, 400, "ValidationException"),
        ({"Constraints": {"EncryptionContextSubset": {"a": 1}}}, 400, "ValidationException"),
        ({"Constraints": {"Something": {}}}, 400, "ValidationException"),
        ({"Constraints": ["EncryptionContextSubset"]}, 400, "ValidationException"),
        ({"Justification": ""}, 400, "ValidationException"),
        ({"Justification": "x" * 2001}, 400, "ValidationException"),
        ({"DurationSeconds": 3599}, 400, "ValidationException"),
        ({"DurationSeconds": 90 * 86400 + 1}, 400, "ValidationException"),
        ({"DurationSeconds": "3600"}, 400, "ValidationException"),
        ({"DurationSeconds": True}, 400, "ValidationException"),
        ({"DurationSeconds": 10**30}, 400, "ValidationException"),
        ({"Surprise": 1}, 400, "ValidationException"),
    ],
)
def test_it_refuses_bad_input_and_changes_nothing(
    api: Api, asker: Persona, key: Key, grantee: Principal, change: dict[str, Any], status: int, code: str
) -> None:
    assert_error(api.create(asker, body_for(key, grantee, **change)), status, code)
    assert not GrantRequest.objects.exists()
    assert refusals("CreateGrantRequest") == [code]


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe", b"{" * 10_000])
def test_it_refuses_a_body_that_is_not_a_json_object(api: Api, asker: Persona, raw: bytes) -> None:
    response = api.create(asker, None, raw=raw)
    assert response.status_code == 400, response.text
    assert response.json()["__type"] in ("SerializationException", "ValidationException")
    assert not GrantRequest.objects.exists()


def test_it_answers_a_wrong_method_with_405(api: Api, asker: Persona) -> None:
    assert_error(api.send("GET", PATH, asker), 405, "UnknownOperationException")
    assert_error(api.send("DELETE", f"{PATH}/1", asker), 405, "UnknownOperationException")


# --- signatures ----------------------------------------------------------------------


def test_it_refuses_unsigned_and_forged_requests(api: Api, asker: Persona, key: Key, grantee: Principal) -> None:
    body = body_for(key, grantee)
    assert_error(api.create(None, body), 403, "MissingAuthenticationTokenException")  # type: ignore[arg-type]
    assert_error(api.create(asker, body, secret="not-the-secret-at-all-0000"), 403, "InvalidSignatureException")
    unknown = Persona(principal=asker.principal, access_key_id="AKIAUNKNOWNUNKNOWN00", secret=asker.secret)
    assert_error(api.create(unknown, body), 403, "UnrecognizedClientException")
    assert not GrantRequest.objects.exists()
    assert refusals("CreateGrantRequest") == [
        "MissingAuthenticationTokenException",
        "InvalidSignatureException",
        "UnrecognizedClientException",
    ]


def test_it_refuses_a_signature_made_for_another_path_or_body(
    api: Api, asker: Persona, key: Key, grantee: Principal
) -> None:
    request_id = api.create(asker, body_for(key, grantee)).json()["GrantRequestId"]
    other = api.create(asker, body_for(key, grantee)).json()["GrantRequestId"]
    # A withdrawal signed for one request cannot be replayed against another.
    replayed = api.send("POST", f"{PATH}/{other}/withdraw", asker, sign_path=f"{PATH}/{request_id}/withdraw")
    assert_error(replayed, 403, "InvalidSignatureException")
    assert GrantRequest.objects.get(pk=other).state == GrantRequestState.PENDING

    signed = AWSRequest(method="POST", url=api.base + PATH, data=b"{}", headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(asker.access_key_id, asker.secret), "kms", REGION).add_auth(signed)
    headers = {k: v for k, v in signed.prepare().headers.items() if k.lower() != "content-length"}
    tampered = requests.post(api.base + PATH, data=json.dumps(body_for(key, grantee)), headers=headers, timeout=10)
    assert_error(tampered, 403, "InvalidSignatureException")
    assert GrantRequest.objects.count() == 2


@pytest.mark.parametrize(
    "change",
    [
        {"KeyId": "\ud800"},
        {"GranteePrincipal": "arn:aws:iam::111122223333:role/\udc00"},
        {"Operations": ["Decrypt\ud800"]},
        {"Constraints": {"EncryptionContextEquals": {"app\udfff": "billing"}}},
        {"Constraints": {"EncryptionContextSubset": {"app": "\ud800billing"}}},
        {"Justification": "half a pair: \ud83d"},
    ],
    ids=["key-id", "grantee", "operation", "context-key", "context-value", "justification"],
)
def test_it_refuses_a_lone_surrogate_in_json_with_an_audited_json_error(
    api: Api, asker: Persona, key: Key, grantee: Principal, change: dict[str, Any]
) -> None:
    # JSON can spell half a UTF-16 pair ("\\ud800"); no UTF-8 text holds it.
    message = assert_error(api.create(asker, body_for(key, grantee, **change)), 400, "SerializationException")
    assert "surrogate" in message
    assert not GrantRequest.objects.exists()
    assert refusals("CreateGrantRequest") == ["SerializationException"]


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"KeyId": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"a":' * 50_000 + b"}"],
    ids=["deep-list", "deep-member", "deep-object"],
)
def test_it_refuses_deeply_nested_json_with_an_audited_json_error(api: Api, asker: Persona, raw: bytes) -> None:
    assert_error(api.create(asker, None, raw=raw), 400, "SerializationException")
    assert not GrantRequest.objects.exists()
    assert refusals("CreateGrantRequest") == ["SerializationException"]
