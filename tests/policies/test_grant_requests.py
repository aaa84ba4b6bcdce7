"""Grant requests, service by service: asking, deciding, withdrawing, expiring, previewing.

Callers are built as the dashboard builds them (roles, MFA) for approvers,
and each step asserts its result, the database state, exactly one audit
event (two on the final approval: the approval and the CreateGrant it
causes, sharing a request id) and the emails sent after commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.core import mail
from django.http import HttpResponse

from audit.models import AuditEvent
from keys import services as key_services
from keys.models import Key, KeyManager
from keys.services.common import default_key_policy
from keys.services.material import material_create
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AccessDenied,
    AlreadyExists,
    InvalidArn,
    InvalidState,
    KmsError,
    UnsupportedOperation,
    ValidationError,
)
from kmsweb.lib.public_url import PublicUrlMiddleware
from policies import services
from policies.models import Grant, GrantRequest, GrantRequestDecision, GrantRequestState, Principal
from tests.conftest import REGION, Persona
from tests.dashboard_fixtures import DashboardUser
from tests.factories import PrincipalFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 2, 9, 0, 0, tzinfo=UTC)
EIGHT_HOURS = timedelta(hours=8)
ALLOW_DECRYPT = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}
)


# --- personas and helpers ----------------------------------------------------------


def dashboard_caller(who: DashboardUser, *roles: str, mfa: bool = True) -> Caller:
    """The Caller the dashboard builds for a signed-in user (roles, MFA verified)."""
    principal = who.principal
    return Caller(
        principal_arn=principal.arn,
        account_id=principal.account_id,
        region=REGION,
        origin="dashboard",
        principal_type=principal.type,
        principal_name=principal.name,
        principal_pk=principal.pk,
        source_ip="127.0.0.1",
        user_agent="pytest",
        mfa_present=mfa,
        roles=roles,
    )


@pytest.fixture
def requester(make_dashboard_user: Callable[..., DashboardUser]) -> DashboardUser:
    who = make_dashboard_user("rita", "key-admin")
    who.user.email = "rita@example.com"
    who.user.save()
    return who


@pytest.fixture
def approvers(make_dashboard_user: Callable[..., DashboardUser]) -> list[DashboardUser]:
    """Two approvers with addresses, and one without (mailed nothing)."""
    found = []
    for name, email in (("april", "april@example.com"), ("bruno", "bruno@example.com"), ("quiet", "")):
        who = make_dashboard_user(name, "approver")
        who.user.email = email
        who.user.save()
        found.append(who)
    return found


@pytest.fixture
def asker(requester: DashboardUser) -> Caller:
    return dashboard_caller(requester, "key-admin")


@pytest.fixture
def april(approvers: list[DashboardUser]) -> Caller:
    return dashboard_caller(approvers[0], "approver")


@pytest.fixture
def bruno(approvers: list[DashboardUser]) -> Caller:
    return dashboard_caller(approvers[1], "approver")


@pytest.fixture
def grantee(key_admin: Persona) -> Principal:
    return PrincipalFactory(account=key_admin.principal.account, name="billing-app", type="role")


@pytest.fixture
def key(make_key: Callable[..., Key]) -> Key:
    return make_key(description="invoices")


def ask(caller: Caller, key: Key, grantee: Principal, **overrides: Any) -> GrantRequest:
    values: dict[str, Any] = {
        "grantee_principal": grantee.arn,
        "operations": ["Decrypt", "Encrypt"],
        "constraints": {"EncryptionContextSubset": {"app": "billing"}},
        "justification": "Billing needs to read the invoice archive (TICKET-42).",
        "duration": EIGHT_HOURS,
    }
    values.update(overrides)
    return services.grant_request_create(caller=caller, key=key, **values)


def aws_managed_key(account_id: str) -> Key:
    """A service managed key, as a service principal's first use would create it."""
    key = Key.objects.create(
        account_id=account_id,
        region=REGION,
        manager=KeyManager.AWS,
        policy=default_key_policy(account_id),
        created_at=datetime.now(UTC),
    )
    key.current_material = material_create(key=key, version=1, now=key.created_at)
    key.save(update_fields=["current_material"])
    return key


def last_event_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


@contextmanager
def events(*expected: tuple[str, str]) -> Iterator[list[AuditEvent]]:
    """Exactly these (event name, error code) audit events are written inside the block."""
    mark = last_event_id()
    found: list[AuditEvent] = []
    yield found
    found.extend(AuditEvent.objects.filter(id__gt=mark).order_by("id"))
    assert [(e.event_name, e.error_code) for e in found] == list(expected)


def fresh(request: GrantRequest) -> GrantRequest:
    return GrantRequest.objects.get(pk=request.pk)


def snapshot(request: GrantRequest) -> dict[str, Any]:
    return {
        "request": GrantRequest.objects.filter(pk=request.pk).values().get(),
        "decisions": list(GrantRequestDecision.objects.filter(request=request).values_list("verdict", "principal")),
        "grants": Grant.objects.count(),
    }


# --- asking -------------------------------------------------------------------------


def test_it_creates_a_pending_request_and_mails_the_approvers(
    asker: Caller,
    key: Key,
    grantee: Principal,
    approvers: list[DashboardUser],
    requester: DashboardUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with events(("CreateGrantRequest", "")) as audit, django_capture_on_commit_callbacks(execute=True):
        request = ask(asker, key, grantee)

    request = fresh(request)
    assert request.state == GrantRequestState.PENDING
    assert request.requester == requester.principal
    assert request.grantee_principal == grantee.arn
    assert request.operations == ["Decrypt", "Encrypt"]
    assert request.constraints == {"EncryptionContextSubset": {"app": "billing"}}
    assert request.duration == EIGHT_HOURS
    assert request.approvals_required == 1
    assert request.grant is None and request.decided_at is None
    assert not Grant.objects.exists()
    event = audit[0]
    assert event.principal_arn == asker.principal_arn and event.origin == "dashboard"
    assert event.key_id == str(key.id)
    assert event.response_elements == {"grantRequestId": request.pk, "state": "pending"}
    # One mail per approver with an address, never to the requester.
    assert sorted(m.to[0] for m in mail.outbox) == ["april@example.com", "bruno@example.com"]
    assert all(len(m.to) == 1 for m in mail.outbox)
    body = mail.outbox[0].body
    assert grantee.arn in body and "TICKET-42" in body and f"/grant-requests/{request.pk}/" in body


@pytest.mark.parametrize(
    ("public_url", "link"),
    [("", "https://kms.example.net:9443"), ("https://kms.example.org/kmsweb", "https://kms.example.org/kmsweb")],
)
def test_it_links_mails_to_the_public_url_or_the_address_the_request_came_to(
    public_url: str,
    link: str,
    asker: Caller,
    key: Key,
    grantee: Principal,
    approvers: list[DashboardUser],
    django_capture_on_commit_callbacks: Any,
    settings: Any,
    rf: Any,
) -> None:
    settings.KMSWEB_PUBLIC_URL = public_url
    settings.ALLOWED_HOSTS = ["kms.example.net"]
    made: list[GrantRequest] = []

    def view(request: Any) -> HttpResponse:
        with django_capture_on_commit_callbacks(execute=True):
            made.append(ask(asker, key, grantee))
        return HttpResponse()

    PublicUrlMiddleware(view)(rf.get("/grant-requests/new/", HTTP_HOST="kms.example.net:9443", secure=True))

    assert mail.outbox and all(f"{link}/grant-requests/{made[0].pk}/" in m.body for m in mail.outbox)
    assert "8000" not in mail.outbox[0].body


def test_it_mails_nobody_when_a_request_is_refused(
    asker: Caller, key: Key, approvers: list[DashboardUser], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(InvalidArn):
        ask(asker, key, grantee=PrincipalFactory.build(account_id=key.account_id, name="ghost"))
    assert mail.outbox == []


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"operations": []}, ValidationError),
        ({"operations": ["Sign"]}, ValidationError),
        ({"operations": ["DescribeKey"]}, ValidationError),  # a constraint on an operation without context
        (
            {"constraints": {"EncryptionContextSubset": {"a": "b"}, "EncryptionContextEquals": {"a": "b"}}},
            ValidationError,
        ),
        ({"grantee_principal": "arn:aws:iam::111122223333:role/nobody"}, InvalidArn),
        ({"grantee_principal": "billing-app"}, InvalidArn),
        ({"grantee_principal": "arn:aws:iam::111122223333:role/" + "x" * 300}, ValidationError),
        ({"duration": timedelta(minutes=59)}, ValidationError),
        ({"duration": timedelta(days=90, seconds=1)}, ValidationError),
        ({"justification": "   "}, ValidationError),
        ({"justification": "x" * 2001}, ValidationError),
        ({"justification": "nul \x00 inside"}, ValidationError),
        ({"constraints": {"EncryptionContextSubset": {"app": "a\x00b"}}}, ValidationError),
    ],
)
def test_it_refuses_bad_input_and_changes_nothing(
    asker: Caller, key: Key, grantee: Principal, overrides: dict[str, Any], error: type[KmsError]
) -> None:
    with events(("CreateGrantRequest", error.code)), pytest.raises(error):
        ask(asker, key, grantee, **overrides)
    assert not GrantRequest.objects.exists()


@pytest.mark.parametrize("duration", [timedelta(hours=1), timedelta(days=90)])
def test_it_accepts_the_duration_bounds(asker: Caller, key: Key, grantee: Principal, duration: timedelta) -> None:
    assert ask(asker, key, grantee, duration=duration).duration == duration


def test_it_refuses_a_request_on_an_aws_managed_key(asker: Caller, grantee: Principal) -> None:
    managed = aws_managed_key(grantee.account_id)
    with events(("CreateGrantRequest", "UnsupportedOperationException")), pytest.raises(UnsupportedOperation):
        ask(asker, managed, grantee)
    assert not GrantRequest.objects.exists()


def test_it_refuses_a_request_from_a_role_that_may_not_ask(
    make_dashboard_user: Callable[..., DashboardUser], key: Key, grantee: Principal
) -> None:
    auditor = dashboard_caller(make_dashboard_user("otto", "auditor"), "auditor")
    with events(("CreateGrantRequest", "AccessDeniedException")) as audit, pytest.raises(AccessDenied):
        ask(auditor, key, grantee)
    assert "kmsweb:RequestGrant" in audit[0].error_message
    assert not GrantRequest.objects.exists()


def test_it_refuses_a_request_for_another_accounts_key(outsider: Persona, key: Key, grantee: Principal) -> None:
    with events(("CreateGrantRequest", "AccessDeniedException")), pytest.raises(AccessDenied):
        ask(outsider.caller(), key, grantee)
    assert not GrantRequest.objects.exists()


# --- deciding -----------------------------------------------------------------------


def test_it_creates_the_grant_on_the_approval_with_its_expiry(
    asker: Caller,
    april: Caller,
    key: Key,
    grantee: Principal,
    requester: DashboardUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    request = ask(asker, key, grantee)
    with time_machine.travel(NOW, tick=False):
        with (
            events(("CreateGrant", ""), ("ApproveGrantRequest", "")) as audit,
            django_capture_on_commit_callbacks(execute=True),
        ):
            decided = services.grant_request_decide(caller=april, request=request, approve=True, comment="ok")

    assert decided.state == GrantRequestState.APPROVED
    assert decided.decided_at == NOW
    grant = decided.grant
    assert grant is not None
    assert grant.key == key and grant.grantee_principal == grantee.arn
    assert grant.operations == ["Decrypt", "Encrypt"]
    assert grant.constraints == {"EncryptionContextSubset": {"app": "billing"}}
    assert grant.expires_at == NOW + EIGHT_HOURS
    assert grant.created_by == april.principal_arn
    assert grant.name == f"grant-request-{request.pk}"
    assert list(fresh(request).decisions.values_list("verdict", "comment")) == [("approve", "ok")]
    create_grant, approval = audit
    # The grant is issued by the platform for the approver: one request id ties both events.
    assert approval.principal_arn == create_grant.principal_arn == april.principal_arn
    assert approval.request_id == create_grant.request_id == april.request_id
    assert approval.response_elements == {"grantRequestId": request.pk, "state": "approved", "grantId": grant.grant_id}
    assert [m.to for m in mail.outbox] == [["rita@example.com"]]
    assert "approved" in mail.outbox[0].subject and grant.grant_id in mail.outbox[0].body


def test_it_never_lets_the_requester_decide(
    make_dashboard_user: Callable[..., DashboardUser], april: Caller, key: Key, grantee: Principal
) -> None:
    # An approver who asks for a grant still needs someone else to approve it.
    both = make_dashboard_user("dual", "approver", "key-admin")
    dual = dashboard_caller(both, "approver", "key-admin")
    request = ask(dual, key, grantee)
    before = snapshot(request)
    for approve in (True, False):
        with events((("Approve" if approve else "Reject") + "GrantRequest", "AccessDeniedException")) as audit:
            with pytest.raises(AccessDenied):
                services.grant_request_decide(caller=dual, request=request, approve=approve, comment="mine")
        assert "own grant request" in audit[0].error_message
    assert snapshot(request) == before
    assert services.grant_request_decide(caller=april, request=request, approve=True, comment="").state == "approved"


def test_it_never_lets_the_grantee_decide(
    make_dashboard_user: Callable[..., DashboardUser], asker: Caller, key: Key
) -> None:
    approving_grantee = make_dashboard_user("gus", "approver")
    request = ask(asker, key, approving_grantee.principal)
    with events(("ApproveGrantRequest", "AccessDeniedException")), pytest.raises(AccessDenied):
        services.grant_request_decide(
            caller=dashboard_caller(approving_grantee, "approver"), request=request, approve=True, comment=""
        )
    assert fresh(request).state == GrantRequestState.PENDING


@pytest.mark.parametrize("role", ["viewer", "key-admin", "auditor"])
def test_it_refuses_a_decision_from_a_non_approver(
    make_dashboard_user: Callable[..., DashboardUser], asker: Caller, key: Key, grantee: Principal, role: str
) -> None:
    request = ask(asker, key, grantee)
    before = snapshot(request)
    someone = dashboard_caller(make_dashboard_user("someone", role), role)
    with events(("ApproveGrantRequest", "AccessDeniedException")) as audit, pytest.raises(AccessDenied):
        services.grant_request_decide(caller=someone, request=request, approve=True, comment="")
    assert "kmsweb:DecideGrantRequest" in audit[0].error_message
    assert snapshot(request) == before


def test_it_requires_mfa_to_decide(approvers: list[DashboardUser], asker: Caller, key: Key, grantee: Principal) -> None:
    request = ask(asker, key, grantee)
    before = snapshot(request)
    without_mfa = dashboard_caller(approvers[0], "approver", mfa=False)
    with events(("ApproveGrantRequest", "AccessDeniedException")) as audit, pytest.raises(AccessDenied):
        services.grant_request_decide(caller=without_mfa, request=request, approve=True, comment="")
    assert "multi-factor" in audit[0].error_message
    assert snapshot(request) == before


def test_it_needs_two_distinct_approvals_when_the_key_says_so(
    asker: Caller,
    april: Caller,
    bruno: Caller,
    key_admin: Persona,
    key: Key,
    grantee: Principal,
    django_capture_on_commit_callbacks: Any,
) -> None:
    key = key_services.key_set_grant_approvals(caller=asker, key=key, required=2)
    request = ask(asker, key, grantee)
    assert request.approvals_required == 2

    with events(("ApproveGrantRequest", "")), django_capture_on_commit_callbacks(execute=True):
        first = services.grant_request_decide(caller=april, request=request, approve=True, comment="one")
    assert first.state == GrantRequestState.PENDING and first.grant is None
    assert not Grant.objects.exists()
    assert mail.outbox == []  # not decided yet

    # The same approver twice is still one approval.
    before = snapshot(request)
    with events(("ApproveGrantRequest", "AlreadyExistsException")), pytest.raises(AlreadyExists):
        services.grant_request_decide(caller=april, request=request, approve=True, comment="again")
    assert snapshot(request) == before

    with events(("CreateGrant", ""), ("ApproveGrantRequest", "")), django_capture_on_commit_callbacks(execute=True):
        second = services.grant_request_decide(caller=bruno, request=request, approve=True, comment="two")
    assert second.state == GrantRequestState.APPROVED
    assert second.grant is not None and second.grant.created_by == bruno.principal_arn
    assert [m.to for m in mail.outbox] == [["rita@example.com"]]


def test_it_holds_a_pending_request_to_a_raised_approval_count(
    asker: Caller, april: Caller, bruno: Caller, key_admin: Persona, key: Key, grantee: Principal
) -> None:
    request = ask(asker, key, grantee)
    assert request.approvals_required == 1
    key_services.key_set_grant_approvals(caller=asker, key=key, required=2)

    assert services.grant_request_decide(caller=april, request=request, approve=True, comment="").state == "pending"
    assert fresh(request).approvals_required == 2
    assert services.grant_request_decide(caller=bruno, request=request, approve=True, comment="").state == "approved"


def test_it_rejects_at_once_with_a_comment(
    asker: Caller,
    april: Caller,
    bruno: Caller,
    key: Key,
    grantee: Principal,
    django_capture_on_commit_callbacks: Any,
) -> None:
    request = ask(asker, key, grantee)
    with events(("RejectGrantRequest", "ValidationException")), pytest.raises(ValidationError):
        services.grant_request_decide(caller=april, request=request, approve=False, comment="  ")
    assert fresh(request).state == GrantRequestState.PENDING

    with time_machine.travel(NOW, tick=False):
        with events(("RejectGrantRequest", "")), django_capture_on_commit_callbacks(execute=True):
            rejected = services.grant_request_decide(
                caller=april, request=request, approve=False, comment="Use the read-only key."
            )
    assert rejected.state == GrantRequestState.REJECTED and rejected.decided_at == NOW
    assert not Grant.objects.exists()
    assert [m.to for m in mail.outbox] == [["rita@example.com"]]
    assert "rejected" in mail.outbox[0].subject and "Use the read-only key." in mail.outbox[0].body

    with events(("ApproveGrantRequest", "KMSInvalidStateException")), pytest.raises(InvalidState):
        services.grant_request_decide(caller=bruno, request=request, approve=True, comment="")
    assert not Grant.objects.exists()


def test_it_undoes_the_approval_when_the_grant_cannot_be_created(
    asker: Caller, april: Caller, key_admin: Persona, key: Key, grantee: Principal
) -> None:
    request = ask(asker, key, grantee)
    before = snapshot(request)
    key_services.key_schedule_deletion(caller=key_admin.caller(), key=key, pending_window_days=7)
    with events(("ApproveGrantRequest", "KMSInvalidStateException")), pytest.raises(InvalidState):
        services.grant_request_decide(caller=april, request=request, approve=True, comment="")
    assert snapshot(request) == before


# --- withdrawing --------------------------------------------------------------------


def test_it_lets_only_the_requester_withdraw(
    asker: Caller, april: Caller, key: Key, grantee: Principal, outsider: Persona
) -> None:
    request = ask(asker, key, grantee)
    for other in (april, outsider.caller()):
        with events(("WithdrawGrantRequest", "AccessDeniedException")), pytest.raises(AccessDenied):
            services.grant_request_withdraw(caller=other, request=request)
    assert fresh(request).state == GrantRequestState.PENDING

    with time_machine.travel(NOW, tick=False), events(("WithdrawGrantRequest", "")):
        withdrawn = services.grant_request_withdraw(caller=asker, request=request)
    assert withdrawn.state == GrantRequestState.WITHDRAWN and withdrawn.decided_at == NOW
    assert list(withdrawn.decisions.values_list("verdict", "principal")) == [("withdraw", asker.principal_pk)]


def test_it_refuses_to_decide_or_withdraw_a_withdrawn_request(
    asker: Caller, april: Caller, key: Key, grantee: Principal
) -> None:
    request = ask(asker, key, grantee)
    services.grant_request_withdraw(caller=asker, request=request)
    before = snapshot(request)
    with events(("ApproveGrantRequest", "KMSInvalidStateException")) as audit, pytest.raises(InvalidState):
        services.grant_request_decide(caller=april, request=request, approve=True, comment="")
    assert "withdrawn" in audit[0].error_message
    with events(("WithdrawGrantRequest", "KMSInvalidStateException")), pytest.raises(InvalidState):
        services.grant_request_withdraw(caller=asker, request=request)
    assert snapshot(request) == before


# --- expiring -----------------------------------------------------------------------


def test_it_expires_requests_left_pending_past_the_deadline(
    asker: Caller, april: Caller, key: Key, grantee: Principal, settings: Any
) -> None:
    settings.KMSWEB_GRANT_REQUEST_TTL_DAYS = 7
    with time_machine.travel(NOW - timedelta(days=8), tick=False):
        old = ask(asker, key, grantee)
        old_decided = ask(asker, key, grantee)
        services.grant_request_decide(caller=april, request=old_decided, approve=False, comment="no")
    with time_machine.travel(NOW - timedelta(days=6), tick=False):
        recent = ask(asker, key, grantee)
    job = Caller.system("grant-requests-expire")

    with events(("ExpireGrantRequests", "")) as audit:
        assert services.grant_requests_expire(caller=job, now=NOW) == 1
    assert fresh(old).state == GrantRequestState.EXPIRED and fresh(old).decided_at == NOW
    assert fresh(old_decided).state == GrantRequestState.REJECTED
    assert fresh(recent).state == GrantRequestState.PENDING
    assert audit[0].additional_event_data["grantRequestIds"] == [old.pk]
    # Idempotent: a second run (or a second worker) changes nothing.
    assert services.grant_requests_expire(caller=job, now=NOW) == 0

    with events(("ApproveGrantRequest", "KMSInvalidStateException")), pytest.raises(InvalidState):
        services.grant_request_decide(caller=april, request=old, approve=True, comment="")
    assert not Grant.objects.exists()


def test_it_refuses_to_approve_a_request_past_its_deadline_before_the_job_ran(
    asker: Caller, april: Caller, key: Key, grantee: Principal, settings: Any
) -> None:
    settings.KMSWEB_GRANT_REQUEST_TTL_DAYS = 7
    with time_machine.travel(NOW - timedelta(days=7, seconds=1), tick=False):
        request = ask(asker, key, grantee)
    with time_machine.travel(NOW, tick=False):
        with events(("ApproveGrantRequest", "KMSInvalidStateException")) as audit, pytest.raises(InvalidState):
            services.grant_request_decide(caller=april, request=request, approve=True, comment="")
    assert "expired" in audit[0].error_message
    assert fresh(request).state == GrantRequestState.PENDING and not Grant.objects.exists()


def test_it_retires_the_approved_grant_when_its_duration_ends(
    asker: Caller, april: Caller, key: Key, grantee: Principal
) -> None:
    request = ask(asker, key, grantee, duration=timedelta(hours=1))
    with time_machine.travel(NOW, tick=False):
        grant = services.grant_request_decide(caller=april, request=request, approve=True, comment="").grant
    assert grant is not None
    job = Caller.system("grants-retire-expired")
    assert services.grants_retire_expired(caller=job, now=NOW + timedelta(minutes=59)) == 0
    assert Grant.objects.live(NOW + timedelta(minutes=59)).filter(pk=grant.pk).exists()
    assert services.grants_retire_expired(caller=job, now=NOW + timedelta(hours=1)) == 1
    grant.refresh_from_db()
    assert grant.retired_how == "expired"
    assert not Grant.objects.live(NOW + timedelta(hours=2)).filter(pk=grant.pk).exists()
    # The request keeps its history: approved, with the (now ended) grant.
    assert fresh(request).state == GrantRequestState.APPROVED and fresh(request).grant == grant


# --- reading and previewing ---------------------------------------------------------


def test_it_lets_the_requester_and_approvers_read_a_request(
    asker: Caller, april: Caller, key: Key, grantee: Principal, outsider: Persona
) -> None:
    request = ask(asker, key, grantee)
    for reader in (asker, april):
        with events(("DescribeGrantRequest", "")) as audit:
            assert services.grant_request_describe(caller=reader, request=request) == request
        assert audit[0].read_only
    with events(("DescribeGrantRequest", "AccessDeniedException")), pytest.raises(AccessDenied):
        services.grant_request_describe(caller=outsider.caller(), request=request)


def test_it_previews_what_the_grant_would_add(asker: Caller, key: Key, outsider: Persona) -> None:
    # A principal of another account can do nothing with the key today.
    request = ask(asker, key, outsider.principal, constraints=None)
    mark = last_event_id()
    preview = services.grant_request_preview(request=request)
    assert [(p.operation, p.allowed) for p in preview] == [("Decrypt", False), ("Encrypt", False)]
    assert all(p.reason.strip() for p in preview)  # the engine's explanation, for approvers
    assert last_event_id() == mark  # advice, not audited


def test_it_previews_what_an_identity_policy_already_allows(
    asker: Caller, key: Key, grantee: Principal, key_admin: Persona
) -> None:
    services.identity_policy_put(
        caller=Caller.system("tests", account_id=grantee.account_id),
        account=grantee.account,
        name="decrypt-anything",
        document=ALLOW_DECRYPT,
        principal=grantee,
    )
    request = ask(asker, key, grantee)
    preview = {p.operation: p.allowed for p in services.grant_request_preview(request=request)}
    assert preview == {"Decrypt": True, "Encrypt": False}


# --- the key's approval count ---------------------------------------------------------


def test_it_sets_a_keys_approval_count(asker: Caller, key: Key) -> None:
    caller = asker  # a key administrator
    with events(("UpdateGrantApprovals", "")):
        assert key_services.key_set_grant_approvals(caller=caller, key=key, required=2).grant_approvals_required == 2
    assert Key.objects.get(pk=key.pk).grant_approvals_required == 2
    for bad in (0, 3, True):
        with events(("UpdateGrantApprovals", "ValidationException")), pytest.raises(ValidationError):
            key_services.key_set_grant_approvals(caller=caller, key=key, required=bad)
    assert Key.objects.get(pk=key.pk).grant_approvals_required == 2


def test_it_refuses_an_approval_count_change_from_an_approver(april: Caller, key: Key) -> None:
    with events(("UpdateGrantApprovals", "AccessDeniedException")), pytest.raises(AccessDenied):
        key_services.key_set_grant_approvals(caller=april, key=key, required=1)


def test_it_refuses_an_approval_count_change_from_another_account(outsider: Persona, key: Key) -> None:
    with events(("UpdateGrantApprovals", "AccessDeniedException")), pytest.raises(AccessDenied):
        key_services.key_set_grant_approvals(caller=outsider.caller(), key=key, required=2)
    assert Key.objects.get(pk=key.pk).grant_approvals_required == 1
