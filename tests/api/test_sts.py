"""STS with boto3 against a live kmsweb: temporary credentials, MFA, roles.

``boto3.client("sts", endpoint_url=…)`` talks AWS Query to the same
``POST /`` as KMS; the credentials it gets sign KMS calls with
``X-Amz-Security-Token``. Key policies requiring MFA (the template in
docs/STS.md) see ``aws:MultiFactorAuthPresent`` / ``aws:MultiFactorAuthAge``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import time_machine
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from django.conf import settings
from django_otp.oath import hotp

from audit.models import AuditEvent
from keys.models import Key, KeyState
from keys.services.common import mfa_key_policy
from kmsweb.lib.caller import Caller
from policies.models import MfaDevice, Principal, PrincipalType, StsSession
from policies.services import identity_policy_put
from policies.services.sts import mfa_device_create, principal_delete, role_create
from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

SYSTEM = Caller.system("tests")
T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Iterator[Any]:
    """A stopped clock at T0 for the test and the live server thread alike."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def _client(live_server: Any, service: str, creds: dict[str, str] | Persona, **config: Any) -> Any:
    if isinstance(creds, Persona):
        keys = {"aws_access_key_id": creds.access_key_id, "aws_secret_access_key": creds.secret}
    else:
        keys = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
    return boto3.client(
        service,
        endpoint_url=live_server.url,
        region_name=REGION,
        config=Config(retries={"total_max_attempts": 1}, **config),
        **keys,
    )


@pytest.fixture
def sts(live_server: Any) -> Callable[..., Any]:
    return lambda creds, **config: _client(live_server, "sts", creds, **config)


@pytest.fixture
def kms_as(live_server: Any) -> Callable[..., Any]:
    return lambda creds: _client(live_server, "kms", creds)


class Device:
    """A virtual MFA device enrolled through the service, with a code generator."""

    def __init__(self, persona: Persona, name: str) -> None:
        enrolment = mfa_device_create(caller=SYSTEM, principal=persona.principal, name=name)
        self.serial = enrolment.device.serial
        self.secret = base64.b32decode(enrolment.secret_b32 + "=" * (-len(enrolment.secret_b32) % 8))

    def code(self, at: datetime | None = None) -> str:
        when = at or datetime.now(UTC)
        return str(hotp(self.secret, int(when.timestamp()) // 30, digits=6)).zfill(6)


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    return exc.value.response["Error"]["Code"], exc.value.response["Error"].get("Message", "")


@pytest.fixture
def mfa_key(key_admin: Persona, kms_as: Callable[..., Any]) -> str:
    """A key whose policy requires recent MFA for the destructive operations."""
    kms = kms_as(key_admin)
    key_id = kms.create_key(Policy=mfa_key_policy(key_admin.account_id), BypassPolicyLockoutSafetyCheck=True)
    return key_id["KeyMetadata"]["KeyId"]


def test_it_answers_get_caller_identity_in_sts_xml(sts: Callable[..., Any], key_admin: Persona) -> None:
    answer = sts(key_admin).get_caller_identity()
    assert answer["Arn"] == key_admin.principal.arn
    assert answer["Account"] == key_admin.account_id
    assert answer["UserId"] == key_admin.principal.name
    event = AuditEvent.objects.get(event_name="GetCallerIdentity")
    assert event.event_source == "sts.amazonaws.com"
    assert event.read_only is True
    assert event.error_code == ""


def test_it_issues_session_credentials_that_sign_kms_calls_and_audits_them(
    sts: Callable[..., Any], kms_as: Callable[..., Any], key_admin: Persona, make_key: Any
) -> None:
    creds = sts(key_admin).get_session_token(DurationSeconds=900)["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and len(creds["AccessKeyId"]) == 20
    assert creds["Expiration"] - datetime.now(UTC) <= timedelta(seconds=900)
    key = make_key()
    kms_as(creds).encrypt(KeyId=str(key.id), Plaintext=b"x")
    assert sts(creds).get_caller_identity()["Arn"] == key_admin.principal.arn

    session = StsSession.objects.get(access_key_id=creds["AccessKeyId"])
    # Neither the token nor the secret is stored as it is.
    assert creds["SessionToken"] not in session.token_sha256
    assert creds["SecretAccessKey"].encode() not in bytes(session.secret_ciphertext)
    issued = AuditEvent.objects.get(event_name="GetSessionToken")
    assert issued.event_source == "sts.amazonaws.com" and issued.read_only is False
    stored = json.dumps([issued.request_parameters, issued.response_elements])
    assert creds["SessionToken"] not in stored and creds["SecretAccessKey"] not in stored
    assert issued.response_elements["credentials"]["accessKeyId"] == creds["AccessKeyId"]
    used = AuditEvent.objects.get(event_name="Encrypt")
    identity = used.user_identity
    assert identity["type"] == "IAMUser"
    assert identity["accessKeyId"] == creds["AccessKeyId"]
    assert identity["sessionContext"]["attributes"]["mfaAuthenticated"] == "false"
    assert "creationDate" in identity["sessionContext"]["attributes"]


def test_it_requires_recent_mfa_for_destructive_operations_under_the_template(
    sts: Callable[..., Any], kms_as: Callable[..., Any], key_admin: Persona, mfa_key: str, clock: Any
) -> None:
    device = Device(key_admin, "key-admin-phone")
    # Long-term keys carry no MFA: refused, but everyday use goes on.
    with pytest.raises(ClientError) as exc:
        kms_as(key_admin).disable_key(KeyId=mfa_key)
    assert _error(exc)[0] == "AccessDeniedException"
    kms_as(key_admin).encrypt(KeyId=mfa_key, Plaintext=b"x")

    # A session without MFA: refused too.
    plain = sts(key_admin).get_session_token()["Credentials"]
    with pytest.raises(ClientError) as exc:
        kms_as(plain).schedule_key_deletion(KeyId=mfa_key, PendingWindowInDays=7)
    assert _error(exc)[0] == "AccessDeniedException"
    assert "explicit deny" in _error(exc)[1]

    # With MFA: allowed, and the audit trail says so.
    creds = sts(key_admin).get_session_token(SerialNumber=device.serial, TokenCode=device.code())["Credentials"]
    kms_as(creds).disable_key(KeyId=mfa_key)
    event = AuditEvent.objects.filter(event_name="DisableKey", error_code="").get()
    assert event.user_identity["sessionContext"]["attributes"]["mfaAuthenticated"] == "true"
    assert Key.objects.get(id=mfa_key).state == KeyState.DISABLED

    # An hour and a minute later the MFA is too old.
    clock.shift(timedelta(minutes=61))
    kms_as(creds).enable_key(KeyId=mfa_key)  # not guarded: still allowed
    with pytest.raises(ClientError) as exc:
        kms_as(creds).disable_key(KeyId=mfa_key)
    assert _error(exc)[0] == "AccessDeniedException"


def test_it_refuses_wrong_and_reused_codes(
    sts: Callable[..., Any], key_admin: Persona, make_persona: Any, clock: Any
) -> None:
    device = Device(key_admin, "phone")
    client = sts(key_admin)
    wrong = str((int(device.code()) + 1) % 1_000_000).zfill(6)
    with pytest.raises(ClientError) as exc:
        client.get_session_token(SerialNumber=device.serial, TokenCode=wrong)
    assert _error(exc) == ("AccessDenied", "MultiFactorAuthentication failed with invalid MFA one time pass code.")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    clock.shift(timedelta(seconds=5))  # past the throttle's first second
    code = device.code()
    client.get_session_token(SerialNumber=device.serial, TokenCode=code)
    with pytest.raises(ClientError) as exc:
        client.get_session_token(SerialNumber=device.serial, TokenCode=code)
    assert _error(exc)[0] == "AccessDenied"
    # A code from the previous step is no good once a later one was used.
    with pytest.raises(ClientError) as exc:
        client.get_session_token(SerialNumber=device.serial, TokenCode=device.code(T0 - timedelta(seconds=30)))
    assert _error(exc)[0] == "AccessDenied"

    # Someone else's device serial, even with its right code, is refused.
    other = make_persona("other", policy=None)
    clock.shift(timedelta(seconds=30))
    with pytest.raises(ClientError) as exc:
        sts(other).get_session_token(SerialNumber=device.serial, TokenCode=device.code())
    assert _error(exc)[0] == "AccessDenied"
    assert StsSession.objects.filter(mfa_authenticated_at__isnull=False).count() == 1
    refused = AuditEvent.objects.filter(event_name="GetSessionToken", error_code="AccessDenied")
    assert refused.count() == 4
    assert all("tokenCode" not in (e.request_parameters or {}) for e in refused)


def test_it_refuses_an_expired_session(
    sts: Callable[..., Any], kms_as: Callable[..., Any], key_admin: Persona, make_key: Any, clock: Any
) -> None:
    key = make_key()
    creds = sts(key_admin).get_session_token(DurationSeconds=900)["Credentials"]
    kms_as(creds).encrypt(KeyId=str(key.id), Plaintext=b"x")
    clock.shift(timedelta(seconds=901))
    with pytest.raises(ClientError) as exc:
        kms_as(creds).encrypt(KeyId=str(key.id), Plaintext=b"x")
    assert _error(exc) == ("ExpiredTokenException", "The security token included in the request is expired")
    with pytest.raises(ClientError) as exc:
        sts(creds).get_caller_identity()
    assert _error(exc)[0] == "ExpiredToken"


def test_it_refuses_a_tampered_or_missing_session_token(
    sts: Callable[..., Any], kms_as: Callable[..., Any], key_admin: Persona, make_key: Any
) -> None:
    key = make_key()
    creds = sts(key_admin).get_session_token()["Credentials"]
    token = creds["SessionToken"]
    tampered = {**creds, "SessionToken": token[:-2] + ("AA" if token[-2:] != "AA" else "BB")}
    with pytest.raises(ClientError) as exc:
        kms_as(tampered).encrypt(KeyId=str(key.id), Plaintext=b"x")
    assert _error(exc) == ("UnrecognizedClientException", "The security token included in the request is invalid.")
    with pytest.raises(ClientError) as exc:
        sts(tampered).get_caller_identity()
    assert _error(exc)[0] == "InvalidClientTokenId"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    # The session's key id and secret without its token are refused too.
    no_token = Persona(
        principal=key_admin.principal, access_key_id=creds["AccessKeyId"], secret=creds["SecretAccessKey"]
    )
    with pytest.raises(ClientError) as exc:
        kms_as(no_token).encrypt(KeyId=str(key.id), Plaintext=b"x")
    assert _error(exc)[0] == "UnrecognizedClientException"
    # A long-term key with some session token is refused.
    fake = {"AccessKeyId": key_admin.access_key_id, "SecretAccessKey": key_admin.secret, "SessionToken": token}
    with pytest.raises(ClientError) as exc:
        kms_as(fake).encrypt(KeyId=str(key.id), Plaintext=b"x")
    assert _error(exc)[0] == "UnrecognizedClientException"


def test_it_refuses_get_session_token_with_session_credentials(sts: Callable[..., Any], key_admin: Persona) -> None:
    creds = sts(key_admin).get_session_token()["Credentials"]
    with pytest.raises(ClientError) as exc:
        sts(creds).get_session_token()
    assert _error(exc) == ("AccessDenied", "Cannot call GetSessionToken with session credentials")


def _trust(principal_arn: str, condition: dict[str, Any] | None = None) -> str:
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"AWS": principal_arn}, "Action": "sts:AssumeRole"}
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@pytest.fixture
def role(key_admin: Persona) -> Principal:
    """A role key_admin may assume with MFA only, with kms:* and a tag."""
    account = key_admin.principal.account
    role = role_create(
        caller=SYSTEM,
        account=account,
        name="deployer",
        trust_policy=_trust(key_admin.principal.arn, {"Bool": {"aws:MultiFactorAuthPresent": "true"}}),
    )
    identity_policy_put(
        caller=SYSTEM,
        account=account,
        name="deployer-kms",
        principal=role,
        document=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "kms:*",
                        "Resource": "*",
                        "Condition": {"StringEquals": {"aws:PrincipalTag/team": "payments"}},
                    }
                ],
            }
        ),
    )
    return role


def test_it_assumes_a_role_with_mfa_and_session_tags(
    sts: Callable[..., Any],
    kms_as: Callable[..., Any],
    key_admin: Persona,
    role: Principal,
    make_key: Any,
    clock: Any,
) -> None:
    device = Device(key_admin, "admin-phone")
    key = make_key()
    client = sts(key_admin)
    # The trust policy wants MFA: without it, refused.
    with pytest.raises(ClientError) as exc:
        client.assume_role(RoleArn=role.arn, RoleSessionName="release")
    code, message = _error(exc)
    assert code == "AccessDenied"
    assert message == (
        f"User: {key_admin.principal.arn} is not authorized to perform: sts:AssumeRole on resource: {role.arn}"
    )
    assumed = client.assume_role(
        RoleArn=role.arn,
        RoleSessionName="release",
        SerialNumber=device.serial,
        TokenCode=device.code(),
        Tags=[{"Key": "team", "Value": "payments"}],
        DurationSeconds=1800,
    )
    arn = f"arn:aws:sts::{key_admin.account_id}:assumed-role/deployer/release"
    assert assumed["AssumedRoleUser"]["Arn"] == arn
    assert assumed["AssumedRoleUser"]["AssumedRoleId"].startswith("AROA")
    assert assumed["AssumedRoleUser"]["AssumedRoleId"].endswith(":release")
    creds = assumed["Credentials"]
    assert sts(creds).get_caller_identity()["Arn"] == arn
    # The role's identity policy matches the session tag (aws:PrincipalTag/team).
    kms_as(creds).encrypt(KeyId=str(key.id), Plaintext=b"x")
    event = AuditEvent.objects.get(event_name="Encrypt")
    identity = event.user_identity
    assert identity["type"] == "AssumedRole"
    assert identity["arn"] == arn
    assert identity["sessionContext"]["attributes"]["mfaAuthenticated"] == "true"
    assert identity["sessionContext"]["sessionIssuer"]["arn"] == role.arn
    assert event.principal_arn == role.arn  # aws:PrincipalArn of a role session is the role (AWS)

    # Without the tag the role's policy does not apply.
    clock.shift(timedelta(seconds=30))
    untagged = client.assume_role(
        RoleArn=role.arn, RoleSessionName="plain", SerialNumber=device.serial, TokenCode=device.code()
    )["Credentials"]
    with pytest.raises(ClientError) as exc:
        kms_as(untagged).encrypt(KeyId=str(key.id), Plaintext=b"x")
    assert _error(exc)[0] == "AccessDeniedException"


def test_it_refuses_assume_role_outside_the_trust_policy(
    sts: Callable[..., Any], key_admin: Persona, make_persona: Any, role: Principal
) -> None:
    stranger = make_persona("stranger", policy=None)
    device = Device(stranger, "stranger-phone")
    with pytest.raises(ClientError) as exc:
        sts(stranger).assume_role(
            RoleArn=role.arn, RoleSessionName="try", SerialNumber=device.serial, TokenCode=device.code()
        )
    assert _error(exc)[0] == "AccessDenied"
    # A role that does not exist is refused the same way (no enumeration).
    with pytest.raises(ClientError) as exc:
        sts(stranger).assume_role(RoleArn=role.arn + "x", RoleSessionName="try")
    assert _error(exc)[0] == "AccessDenied"
    refused = AuditEvent.objects.filter(event_name="AssumeRole", error_code="AccessDenied")
    assert refused.count() == 2
    assert refused.first().event_source == "sts.amazonaws.com"
    assert not StsSession.objects.exists()


def test_it_ends_a_deleted_principals_sessions_at_once(
    settings: Any,
    sts: Callable[..., Any],
    kms_as: Callable[..., Any],
    key_admin: Persona,
    make_persona: Any,
    make_key: Any,
) -> None:
    settings.KMSWEB_AUTH_CACHE_SECONDS = 60  # deletion must not wait for the credentials cache
    key = make_key()
    bob = make_persona(
        "bob",
        policy=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
        ),
    )
    creds = sts(bob).get_session_token()["Credentials"]
    kms = kms_as(creds)
    kms.encrypt(KeyId=str(key.id), Plaintext=b"x")
    principal_delete(caller=SYSTEM, principal=bob.principal)
    with pytest.raises(ClientError) as exc:
        kms.encrypt(KeyId=str(key.id), Plaintext=b"x")
    assert _error(exc)[0] == "UnrecognizedClientException"
    assert not StsSession.objects.filter(access_key_id=creds["AccessKeyId"]).exists()
    assert AuditEvent.objects.filter(event_name="DeletePrincipal", event_source="iam.amazonaws.com").count() == 1


def test_it_ends_a_deleted_roles_sessions_at_once(
    settings: Any, sts: Callable[..., Any], kms_as: Callable[..., Any], key_admin: Persona, make_key: Any
) -> None:
    settings.KMSWEB_AUTH_CACHE_SECONDS = 60
    account = key_admin.principal.account
    role = role_create(caller=SYSTEM, account=account, name="ops", trust_policy=_trust(key_admin.principal.arn))
    identity_policy_put(
        caller=SYSTEM,
        account=account,
        name="ops-kms",
        principal=role,
        document=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
        ),
    )
    key = make_key()
    creds = sts(key_admin).assume_role(RoleArn=role.arn, RoleSessionName="s1")["Credentials"]
    kms_as(creds).encrypt(KeyId=str(key.id), Plaintext=b"x")
    principal_delete(caller=SYSTEM, principal=role)
    with pytest.raises(ClientError) as exc:
        kms_as(creds).encrypt(KeyId=str(key.id), Plaintext=b"x")
    assert _error(exc)[0] == "UnrecognizedClientException"


def test_it_answers_get_access_key_info_to_permitted_callers(
    sts: Callable[..., Any], key_admin: Persona, make_persona: Any
) -> None:
    allowed = make_persona(
        "auditor",
        policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:GetAccessKeyInfo", "Resource": "*"}],
            }
        ),
    )
    assert sts(allowed).get_access_key_info(AccessKeyId=key_admin.access_key_id)["Account"] == key_admin.account_id
    with pytest.raises(ClientError) as exc:
        sts(key_admin).get_access_key_info(AccessKeyId=allowed.access_key_id)
    assert _error(exc)[0] == "AccessDenied"
    events = AuditEvent.objects.filter(event_name="GetAccessKeyInfo").order_by("id")
    assert [e.error_code for e in events] == ["", "AccessDenied"]
    assert all(e.read_only for e in events)


def _raw(live_server: Any, persona: Persona, body: str, service: str = "sts") -> tuple[int, str]:
    """POST a hand-made form body, signed as botocore signs STS calls."""
    import urllib.error
    import urllib.request

    request = AWSRequest(
        method="POST",
        url=live_server.url + "/",
        data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials(persona.access_key_id, persona.secret), service, REGION).add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST")
    try:
        with urllib.request.urlopen(req) as resp:  # noqa: S310 - the live test server
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_it_answers_bad_input_with_sts_errors(live_server: Any, sts: Callable[..., Any], key_admin: Persona) -> None:
    status, body = _raw(live_server, key_admin, "Version=2011-06-15")
    assert status == 400 and "<Code>MissingAction</Code>" in body
    assert body.startswith('<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender')
    status, body = _raw(live_server, key_admin, "Action=GetFederationToken&Version=2011-06-15&Name=x")
    assert status == 400 and "<Code>InvalidAction</Code>" in body
    status, body = _raw(live_server, key_admin, "Action=GetCallerIdentity&Version=2010-01-01")
    assert status == 400 and "<Code>InvalidAction</Code>" in body
    status, body = _raw(live_server, key_admin, "Action=AssumeRole&Version=2011-06-15&RoleSessionName=ab")
    assert status == 400 and "<Code>ValidationError</Code>" in body and "roleArn" in body
    # A KMS-scoped signature does not sign an STS call.
    status, body = _raw(live_server, key_admin, "Action=GetCallerIdentity&Version=2011-06-15", service="kms")
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body

    unchecked = sts(key_admin, parameter_validation=False)
    for duration in (899, 129601):
        with pytest.raises(ClientError) as exc:
            unchecked.get_session_token(DurationSeconds=duration)
        assert _error(exc)[0] == "ValidationError"
    with pytest.raises(ClientError) as exc:
        unchecked.assume_role(RoleArn="arn:aws:iam::111122223333:role/x", RoleSessionName="a b")
    assert _error(exc)[0] == "ValidationError"
    with pytest.raises(ClientError) as exc:
        unchecked.get_session_token(SerialNumber="arn:aws:iam::111122223333:mfa/x", TokenCode="12ab56")
    assert _error(exc)[0] == "ValidationError"
    assert not StsSession.objects.exists()
    assert AuditEvent.objects.filter(event_source="sts.amazonaws.com", error_code="").count() == 0
    assert AuditEvent.objects.filter(event_source="sts.amazonaws.com").count() == 9


def test_it_keeps_serving_kms_json_calls(kms_as: Callable[..., Any], key_admin: Persona) -> None:
    # The dispatch looks at X-Amz-Target first; a KMS call is untouched.
    assert kms_as(key_admin).list_keys()["Keys"] == []


def test_it_stores_mfa_secrets_encrypted_with_aws_serials(key_admin: Persona) -> None:
    device = Device(key_admin, "yubi")
    row = MfaDevice.objects.get()
    assert device.serial == f"arn:aws:iam::{settings.KMSWEB_ACCOUNT_ID}:mfa/yubi"
    assert device.secret not in bytes(row.secret_ciphertext)
    with pytest.raises(Exception, match="already exists"):
        mfa_device_create(caller=SYSTEM, principal=key_admin.principal, name="yubi")
    assert Principal.objects.filter(type=PrincipalType.ROLE).count() == 0


def test_it_deletes_expired_sessions_in_the_job(sts: Callable[..., Any], key_admin: Persona, clock: Any) -> None:
    from audit.models import JobRun
    from kmsweb.tasks import JOB_TASKS

    short = sts(key_admin).get_session_token(DurationSeconds=900)["Credentials"]
    long = sts(key_admin).get_session_token(DurationSeconds=3600)["Credentials"]
    clock.shift(timedelta(seconds=901))
    assert JOB_TASKS["delete_expired_sessions"].run() == {"count": 1}
    assert list(StsSession.objects.values_list("access_key_id", flat=True)) == [long["AccessKeyId"]]
    assert short["AccessKeyId"] != long["AccessKeyId"]
    assert JobRun.objects.get().name == "delete_expired_sessions"
    assert AuditEvent.objects.filter(event_name="DeleteExpiredSessions", event_source="sts.amazonaws.com").count() == 1


def test_it_refuses_session_credentials_acting_on_another_principals_behalf(
    sts: Callable[..., Any], kms_as: Callable[..., Any], key_admin: Persona, make_persona: Any
) -> None:
    from policies.services import access_key_create, service_delegation_create

    service = Principal.objects.create(account_id=key_admin.account_id, name="backup", type=PrincipalType.SERVICE)
    key, secret = access_key_create(caller=SYSTEM, principal=service)
    user = make_persona("carol", policy=None)
    service_delegation_create(caller=user.caller(), principal=user.principal, service=service)
    creds = sts(Persona(principal=service, access_key_id=key.access_key_id, secret=secret)).get_session_token()
    kms = kms_as(creds["Credentials"])

    def add_header(request: Any, **_: Any) -> None:
        request.headers["X-Kmsweb-On-Behalf-Of"] = user.principal.arn

    kms.meta.events.register("before-sign.kms.*", add_header)
    with pytest.raises(ClientError) as exc:
        kms.list_keys()
    assert _error(exc) == ("AccessDeniedException", "Temporary credentials cannot act on another principal's behalf.")
