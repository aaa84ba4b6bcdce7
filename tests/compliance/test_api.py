"""``GET /api/v1/findings`` against a live server, signed by botocore's SigV4 signer:
filters and paging, authorization through identity policies, bad input as
ValidationException, refusals audited once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from django.utils import timezone

from audit.models import AuditEvent
from compliance.models import Finding
from compliance.services import compliance_evaluate
from keys.models import Key
from kmsweb.lib.caller import Caller
from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

READ = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kmsweb:DescribeFindings", "Resource": "*"}]}
)


def get(
    live_server: Any, persona: Persona | None, query: dict[str, Any] | None = None, *, secret: str | None = None
) -> requests.Response:
    url = live_server.url + "/api/v1/findings" + ("?" + urlencode(query) if query else "")
    headers: dict[str, str] = {}
    if persona is not None:
        signed = AWSRequest(method="GET", url=url, data=b"", headers={})
        SigV4Auth(Credentials(persona.access_key_id, secret or persona.secret), "kms", REGION).add_auth(signed)
        headers = dict(signed.prepare().headers)
    return requests.get(url, headers=headers, timeout=10)


@pytest.fixture
def keys(make_key: Callable[..., Key]) -> list[Key]:
    made = [make_key(description=f"k{i}") for i in range(3)]
    compliance_evaluate(caller=Caller.system("evaluate_compliance"), now=timezone.now())
    return made


@pytest.fixture
def reader(make_persona: Callable[..., Persona]) -> Persona:
    return make_persona("reader", policy=READ)


def test_it_lists_findings_with_filters_and_pages(live_server: Any, reader: Persona, keys: list[Key]) -> None:
    response = get(live_server, reader, {"RuleId": "kms-rotation-enabled", "Status": "NON_COMPLIANT", "MaxResults": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["Total"] == 3 and len(body["Findings"]) == 2 and body["NextToken"] == "2"
    first = body["Findings"][0]
    assert first["RuleId"] == "kms-rotation-enabled" and first["Severity"] == "MEDIUM"
    assert {"Framework": "Security Hub", "Control": "KMS.4"} in first["Frameworks"]
    assert first["Evidence"] == {"rotationEnabled": False, "keySpec": "SYMMETRIC_DEFAULT"}
    second = get(
        live_server,
        reader,
        {"RuleId": "kms-rotation-enabled", "Status": "NON_COMPLIANT", "MaxResults": 2, "NextToken": "2"},
    ).json()
    assert len(second["Findings"]) == 1 and "NextToken" not in second
    arns = {f["ResourceId"] for f in body["Findings"] + second["Findings"]}
    assert arns == {k.arn for k in keys}

    by_key = get(live_server, reader, {"KeyId": keys[0].arn}).json()
    assert by_key["Findings"] and {f["KeyId"] for f in by_key["Findings"]} == {str(keys[0].id)}
    assert (
        AuditEvent.objects.filter(event_name="ListFindings", error_code="", principal_arn=reader.principal.arn).count()
        == 3
    )


@pytest.mark.parametrize(
    "query",
    [
        {"Severity": "SEVERE"},
        {"Status": "OPEN"},
        {"RuleId": "no-such-rule"},
        {"MaxResults": "0"},
        {"MaxResults": "many"},
        {"NextToken": "-1"},
        {"Colour": "red"},
        {"KeyId": "a\x00b"},
    ],
)
def test_it_refuses_malformed_parameters(
    live_server: Any, reader: Persona, keys: list[Key], query: dict[str, str]
) -> None:
    response = get(live_server, reader, query)
    assert response.status_code == 400, response.text
    assert response.json()["__type"] == "ValidationException"
    assert AuditEvent.objects.filter(event_name="ListFindings", error_code="ValidationException").count() == 1


def test_it_refuses_callers_without_the_permission_or_a_valid_signature(
    live_server: Any, make_persona: Callable[..., Persona], reader: Persona, keys: list[Key]
) -> None:
    nobody = make_persona("nobody", policy=None)
    response = get(live_server, nobody)
    assert response.status_code == 403 and response.json()["__type"] == "AccessDeniedException"
    assert get(live_server, reader, secret="wrong" * 8).status_code == 403
    assert get(live_server, None).status_code == 403
    refused = AuditEvent.objects.filter(event_name="ListFindings").exclude(error_code="")
    assert refused.count() == 3


def test_it_shows_only_the_callers_account(live_server: Any, outsider: Persona, keys: list[Key]) -> None:
    from keys import services as key_services
    from policies.services import identity_policy_put

    theirs = key_services.key_create(caller=outsider.caller())
    compliance_evaluate(caller=Caller.system("evaluate_compliance"), now=timezone.now())
    identity_policy_put(
        caller=Caller.system("tests", account_id=outsider.account_id),
        account=outsider.principal.account,
        name="read-findings",
        document=READ,
        principal=outsider.principal,
    )
    body = get(live_server, outsider, {"MaxResults": 100}).json()
    assert {f["ResourceId"] for f in body["Findings"] if f["RuleId"] == "kms-rotation-enabled"} == {theirs.arn}
    ours = set(Finding.objects.filter(account_id=keys[0].account_id).values_list("pk", flat=True))
    assert ours and ours.isdisjoint(f["FindingId"] for f in body["Findings"])
