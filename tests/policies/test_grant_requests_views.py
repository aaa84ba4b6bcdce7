"""The grant request pages, server side: who sees and does what, HTMX fragments, CSRF, inline errors.

Users sign in through the real views (password, then TOTP); see
``tests/dashboard_fixtures.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from keys.models import Key
from kmsweb.lib.caller import Caller
from policies import services
from policies.models import Grant, GrantRequest, GrantRequestState, Principal
from tests.conftest import REGION, Persona
from tests.dashboard_fixtures import DashboardUser
from tests.factories import PrincipalFactory

pytestmark = pytest.mark.django_db

DENIED = "AccessDeniedException"
HX = {"HTTP_HX_REQUEST": "true"}


def html(response: Any) -> str:
    return response.content.decode()


def caller_of(who: DashboardUser, *roles: str) -> Caller:
    p = who.principal
    return Caller(
        principal_arn=p.arn,
        account_id=p.account_id,
        region=REGION,
        origin="dashboard",
        principal_type=p.type,
        principal_name=p.name,
        principal_pk=p.pk,
        mfa_present=True,
        roles=roles,
    )


@pytest.fixture
def key(make_key: Callable[..., Key]) -> Key:
    return make_key(description="invoices")


@pytest.fixture
def grantee(key_admin: Persona) -> Principal:
    return PrincipalFactory(account=key_admin.principal.account, name="billing-app", type="role")


@pytest.fixture
def admin_client(key_admin_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(key_admin_user)


@pytest.fixture
def approver_client(approver_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(approver_user)


@pytest.fixture
def viewer_client(viewer_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(viewer_user)


def ask(who: DashboardUser, key: Key, grantee: Principal, role: str = "key-admin", **overrides: Any) -> GrantRequest:
    values: dict[str, Any] = {
        "grantee_principal": grantee.arn,
        "operations": ["Decrypt"],
        "constraints": None,
        "justification": "Month-end close (FIN-12).",
        "duration": timedelta(hours=4),
    }
    values.update(overrides)
    return services.grant_request_create(caller=caller_of(who, role), key=key, **values)


def form_data(key: Key, grantee: Principal, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": str(key.id),
        "grantee_principal": grantee.arn,
        "operations": ["Decrypt", "GenerateDataKey"],
        "constraint": "EncryptionContextSubset",
        "encryption_context": "app=billing\nenv=prod",
        "justification": "Billing service reads invoices (CHG-1).",
        "duration": "12",
        "duration_unit": "hours",
    }
    data.update(overrides)
    return data


# --- the sidebar and the key page -------------------------------------------------------


def test_it_links_the_inbox_from_the_sidebar_with_a_rendered_badge(
    admin_client: Client, key_admin_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    ask(key_admin_user, key, grantee)
    page = html(admin_client.get("/keys/"))
    assert 'id="nav-grant-requests"' in page and 'href="/grant-requests/"' in page
    badge = re.search(r'<span class="count" id="nav-grant-requests-count"([^>]*)>(\d*)</span>', page)
    assert badge and badge.group(2) == "1" and 'data-waiting="1"' in badge.group(1)
    # Rendered with the page and refreshed after a change on it; never polled,
    # since polling would keep an idle session alive.
    assert 'hx-trigger="grantRequestChanged from:body"' in badge.group(1)
    assert "every" not in badge.group(1) and "load" not in badge.group(1)
    # Fragments do not carry it.
    assert "nav-grant-requests-count" not in html(admin_client.get("/keys/", **HX))


def test_it_counts_what_waits_for_each_user_in_the_badge(
    admin_client: Client,
    approver_client: Client,
    viewer_client: Client,
    key_admin_user: DashboardUser,
    approver_user: DashboardUser,
    key: Key,
    grantee: Principal,
) -> None:
    ask(key_admin_user, key, grantee)
    ask(key_admin_user, key, grantee)
    decided = ask(key_admin_user, key, grantee)
    services.grant_request_decide(
        caller=caller_of(approver_user, "approver"), request=decided, approve=False, comment="no"
    )

    def waiting(client: Client) -> str:
        body = html(client.get("/grant-requests/badge/", **HX))
        assert "<html" not in body
        match = re.search(r'data-waiting="(\d+)"', body)
        assert match
        return match.group(1)

    assert waiting(approver_client) == "2"  # pending requests it may decide
    assert waiting(admin_client) == "2"  # its own pending requests
    assert waiting(viewer_client) == "0"


@pytest.mark.parametrize(
    ("role", "sees_link", "sees_form"),
    [("viewer", True, False), ("key-admin", True, True), ("approver", False, False), ("auditor", False, False)],
)
def test_it_shows_the_grant_request_controls_on_the_key_page_by_role(
    make_dashboard_user: Callable[..., DashboardUser],
    signed_in: Callable[..., Client],
    key: Key,
    role: str,
    sees_link: bool,
    sees_form: bool,
) -> None:
    page = html(signed_in(make_dashboard_user("someone", role)).get(f"/keys/{key.id}/"))
    assert 'id="key-grant-approvals" data-required="1"' in page
    assert (f'href="/grant-requests/new/?key={key.id}"' in page) is sees_link
    assert (f"/keys/{key.id}/grant-approvals/" in page) is sees_form
    if not sees_form:
        assert "1 distinct approver" in page


def test_it_sets_a_keys_approval_count_from_the_key_page(admin_client: Client, key: Key) -> None:
    response = admin_client.post(f"/keys/{key.id}/grant-approvals/", {"required": "2"}, **HX)
    assert response.status_code == 200
    assert "<html" not in html(response) and 'data-required="2"' in html(response)
    assert "keyChanged" in json.loads(response["HX-Trigger"])
    assert Key.objects.get(pk=key.pk).grant_approvals_required == 2

    response = admin_client.post(f"/keys/{key.id}/grant-approvals/", {"required": "3"}, **HX)
    assert response.status_code == 200
    assert "Select a valid choice" in html(response)
    assert Key.objects.get(pk=key.pk).grant_approvals_required == 2


def test_it_refuses_and_audits_an_approval_count_change_by_a_viewer(
    viewer_client: Client, viewer_user: DashboardUser, key: Key
) -> None:
    response = viewer_client.post(f"/keys/{key.id}/grant-approvals/", {"required": "2"}, **HX)
    assert response.status_code == 200 and response["HX-Retarget"] == "#flash"
    assert f"{DENIED}: User: {viewer_user.arn} is not authorized to perform: kmsweb:UpdateGrantApprovals" in html(
        response
    )
    assert Key.objects.get(pk=key.pk).grant_approvals_required == 1
    assert AuditEvent.objects.filter(event_name="UpdateGrantApprovals", error_code=DENIED).count() == 1


def test_it_lists_the_keys_live_grants(
    admin_client: Client, key_admin_user: DashboardUser, approver_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    assert "This key has no grants." in html(admin_client.get(f"/keys/{key.id}/"))
    request = ask(key_admin_user, key, grantee)
    grant = services.grant_request_decide(
        caller=caller_of(approver_user, "approver"), request=request, approve=True, comment=""
    ).grant
    assert grant is not None
    page = html(admin_client.get(f"/keys/{key.id}/"))
    assert f'data-grant-id="{grant.grant_id}"' in page
    assert grantee.arn in page and approver_user.arn in page


# --- asking ------------------------------------------------------------------------------


def test_it_asks_for_a_grant_from_the_form(
    admin_client: Client, key_admin_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    page = html(admin_client.get(f"/grant-requests/new/?key={key.id}"))
    assert 'id="grant-request-form"' in page and 'name="csrfmiddlewaretoken"' in page

    response = admin_client.post(f"/grant-requests/new/?key={key.id}", form_data(key, grantee))

    request = GrantRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/grant-requests/{request.pk}/"
    assert request.requester == key_admin_user.principal
    assert request.operations == ["Decrypt", "GenerateDataKey"]
    assert request.constraints == {"EncryptionContextSubset": {"app": "billing", "env": "prod"}}
    assert request.duration == timedelta(hours=12)
    detail = html(admin_client.get(response["Location"]))
    assert f"Grant request #{request.pk} sent to the approvers." in detail


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"grantee_principal": "arn:aws:iam::111122223333:role/nobody"}, "grantee_principal", "existing principal"),
        ({"grantee_principal": "not an arn"}, "grantee_principal", "not a valid principal ARN"),
        ({"duration": "91", "duration_unit": "days"}, "duration", "between 1 hour and 90 days"),
        ({"operations": ["DescribeKey"]}, None, "not allowed for the operations DescribeKey"),
        ({"encryption_context": ""}, "encryption_context", "at least one key=value"),
        ({"encryption_context": "no-equals-sign"}, "encryption_context", "write key=value"),
        ({"operations": []}, "operations", "This field is required"),
        ({"justification": ""}, "justification", "This field is required"),
    ],
)
def test_it_shows_errors_inline_and_keeps_the_input(
    admin_client: Client, key: Key, grantee: Principal, change: dict[str, Any], field: str | None, message: str
) -> None:
    data = form_data(key, grantee, **change)
    response = admin_client.post(f"/grant-requests/new/?key={key.id}", data)
    assert response.status_code == 200
    page = html(response)
    assert message in page
    assert not GrantRequest.objects.exists()
    # What the user typed is still there.
    assert "Billing service reads invoices (CHG-1)." in page or change.get("justification") == ""
    if change.get("grantee_principal"):
        assert f'value="{change["grantee_principal"]}"' in page
    if field:
        error_block = page.split(f'name="{field}"', 1)[1] if field != "operations" else page
        assert message in error_block


def test_it_refuses_the_form_to_a_role_that_may_not_ask(
    approver_client: Client, approver_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    response = approver_client.get(f"/grant-requests/new/?key={key.id}")
    assert response.status_code == 403 and "cannot request grants" in html(response)

    response = approver_client.post(f"/grant-requests/new/?key={key.id}", form_data(key, grantee), **HX)
    assert response["HX-Retarget"] == "#flash"
    assert f"{approver_user.arn} is not authorized to perform: kmsweb:RequestGrant" in html(response)
    assert not GrantRequest.objects.exists()
    assert AuditEvent.objects.filter(event_name="CreateGrantRequest", error_code=DENIED).count() == 1


def test_it_answers_an_unknown_key_with_a_not_found_page(admin_client: Client) -> None:
    for key_ref in ("nope", "0b3c2c5e-0000-4000-8000-000000000000"):
        response = admin_client.get(f"/grant-requests/new/?key={key_ref}")
        assert response.status_code == 404


# --- the inbox ---------------------------------------------------------------------------


@pytest.fixture
def history(
    key_admin_user: DashboardUser,
    viewer_user: DashboardUser,
    approver_user: DashboardUser,
    key: Key,
    grantee: Principal,
) -> dict[str, GrantRequest]:
    """One request in every state, by two requesters."""
    approver = caller_of(approver_user, "approver")
    made = {
        "pending": ask(key_admin_user, key, grantee),
        "viewer-pending": ask(viewer_user, key, grantee, role="viewer"),
        "approved": ask(key_admin_user, key, grantee),
        "rejected": ask(key_admin_user, key, grantee),
        "withdrawn": ask(key_admin_user, key, grantee),
    }
    services.grant_request_decide(caller=approver, request=made["approved"], approve=True, comment="")
    services.grant_request_decide(caller=approver, request=made["rejected"], approve=False, comment="no")
    services.grant_request_withdraw(caller=caller_of(key_admin_user, "key-admin"), request=made["withdrawn"])
    asked_long_ago = made["pending"].created_at - timedelta(days=30)
    GrantRequest.objects.filter(pk=made["pending"].pk).update(created_at=asked_long_ago)
    made["expired"] = made.pop("pending")
    services.grant_requests_expire(caller=Caller.system("tests"), now=asked_long_ago + timedelta(days=8))
    made["pending"] = ask(key_admin_user, key, grantee)
    return made


def row_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-request-id="(\d+)"', page)]


def test_it_shows_an_approver_every_request_with_counts_per_state(
    approver_client: Client, history: dict[str, GrantRequest]
) -> None:
    page = html(approver_client.get("/grant-requests/"))
    assert "<html" in page
    counts = dict(re.findall(r'data-state="(\w+)">\w+<span class="count">(\d+)</span>', page))
    assert counts == {"pending": "2", "approved": "1", "rejected": "1", "withdrawn": "1", "expired": "1", "all": "6"}
    assert sorted(row_ids(page)) == sorted([history["pending"].pk, history["viewer-pending"].pk])
    for state in ("approved", "rejected", "withdrawn", "expired"):
        # Decided requests stay visible under their state.
        assert row_ids(html(approver_client.get(f"/grant-requests/?state={state}"))) == [history[state].pk]


def test_it_shows_anyone_else_only_their_own_requests(
    viewer_client: Client, history: dict[str, GrantRequest], outsider: Persona
) -> None:
    page = html(viewer_client.get("/grant-requests/?state=all"))
    assert row_ids(page) == [history["viewer-pending"].pk]
    assert 'id="grant-requests-mine"' not in page  # "only mine" is an approver's filter


def test_it_filters_the_inbox_with_htmx_and_keeps_the_state_in_the_url(
    approver_client: Client, history: dict[str, GrantRequest], key_admin_user: DashboardUser
) -> None:
    response = approver_client.get("/grant-requests/?state=all&mine=1", **HX)
    body = html(response)
    assert response.status_code == 200 and "<html" not in body
    assert body.startswith('<div id="grant-requests-inbox">')
    assert row_ids(body) == []  # the approver asked for nothing
    assert 'hx-push-url="true"' in body and 'href="?state=approved&amp;mine=1"' in body
    assert "HX-Request" in response["Vary"]
    body = html(approver_client.get(f"/grant-requests/?state=all&key={history['pending'].key_id}", **HX))
    assert len(row_ids(body)) == 6
    # Garbage in the query string falls back to the defaults.
    assert approver_client.get("/grant-requests/?state=<script>&page=x&key=zzz").status_code == 200


def test_it_renders_the_inbox_in_a_bounded_number_of_queries(
    approver_client: Client,
    key_admin_user: DashboardUser,
    key: Key,
    grantee: Principal,
    django_assert_max_num_queries: Any,
) -> None:
    counts = []
    # A first request fills the per-process caches (the approver's identity
    # policies), which the two measured ones then share.
    approver_client.get("/grant-requests/?state=all", **HX)
    for total in (3, 20):
        while GrantRequest.objects.count() < total:
            ask(key_admin_user, key, grantee)
        with django_assert_max_num_queries(16), CaptureQueriesContext(connection) as ctx:
            response = approver_client.get("/grant-requests/?state=all", **HX)
        assert len(row_ids(html(response))) == total
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts


# --- a request's page --------------------------------------------------------------------


def test_it_shows_an_approver_the_preview_and_the_decision_form(
    approver_client: Client, key_admin_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    request = ask(key_admin_user, key, grantee)
    page = html(approver_client.get(f"/grant-requests/{request.pk}/"))
    assert 'id="grant-request-preview"' in page and 'data-operation="Decrypt"' in page
    assert 'id="grant-request-approve"' in page and 'id="grant-request-reject"' in page
    assert 'id="grant-request-withdraw"' not in page
    assert "Month-end close (FIN-12)." in page
    assert AuditEvent.objects.filter(event_name="DescribeGrantRequest", error_code="").count() == 1


def test_it_shows_the_requester_a_withdraw_button_and_no_decision(
    admin_client: Client, key_admin_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    request = ask(key_admin_user, key, grantee)
    page = html(admin_client.get(f"/grant-requests/{request.pk}/"))
    assert 'id="grant-request-withdraw"' in page
    assert 'id="grant-request-approve"' not in page and "You asked for this grant" in page


def test_it_hides_a_request_from_those_who_may_not_see_it(
    viewer_client: Client, key_admin_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    request = ask(key_admin_user, key, grantee)
    response = viewer_client.get(f"/grant-requests/{request.pk}/")
    assert response.status_code == 404 and f"Grant request {request.pk} does not exist." in html(response)
    assert viewer_client.get("/grant-requests/999999/").status_code == 404


def test_it_approves_with_htmx_and_announces_the_change(
    approver_client: Client, approver_user: DashboardUser, key_admin_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    request = ask(key_admin_user, key, grantee)
    response = approver_client.post(
        f"/grant-requests/{request.pk}/decide/", {"verdict": "approve", "comment": "Ticket checked."}, **HX
    )
    body = html(response)
    assert response.status_code == 200 and "<html" not in body
    assert body.startswith('<div id="grant-request-body"')
    assert "grantRequestChanged" in json.loads(response["HX-Trigger"])
    assert 'data-state="approved"' in body and 'data-kind="grant-created"' in body
    assert "Ticket checked." in body
    grant = GrantRequest.objects.get(pk=request.pk).grant
    assert grant is not None and grant.created_by == approver_user.arn
    assert grant.grant_id in body


def test_it_keeps_a_rejection_without_a_comment_inline(
    approver_client: Client, key_admin_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    request = ask(key_admin_user, key, grantee)
    response = approver_client.post(f"/grant-requests/{request.pk}/decide/", {"verdict": "reject", "comment": ""}, **HX)
    assert response.status_code == 200
    assert "HX-Trigger" not in response
    assert "Comment must not be empty." in html(response)
    assert GrantRequest.objects.get(pk=request.pk).state == GrantRequestState.PENDING


def test_it_redirects_after_a_plain_post(
    approver_client: Client, key_admin_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    request = ask(key_admin_user, key, grantee)
    response = approver_client.post(f"/grant-requests/{request.pk}/decide/", {"verdict": "reject", "comment": "No."})
    assert response.status_code == 302 and response["Location"] == f"/grant-requests/{request.pk}/"
    assert GrantRequest.objects.get(pk=request.pk).state == GrantRequestState.REJECTED


@pytest.mark.parametrize("requester_role", ["key-admin", "approver"])
def test_it_refuses_and_audits_a_forged_decision_by_the_requester(
    make_dashboard_user: Callable[..., DashboardUser],
    signed_in: Callable[..., Client],
    key: Key,
    grantee: Principal,
    requester_role: str,
) -> None:
    roles = ("approver", "viewer") if requester_role == "approver" else (requester_role,)
    requester = make_dashboard_user("rita", *roles)
    request = ask(requester, key, grantee, role="viewer" if requester_role == "approver" else requester_role)
    client = signed_in(requester)
    if requester_role == "approver":
        assert 'id="grant-request-approve"' not in html(client.get(f"/grant-requests/{request.pk}/"))

    response = client.post(f"/grant-requests/{request.pk}/decide/", {"verdict": "approve", "comment": ""}, **HX)

    assert response.status_code == 200 and response["HX-Retarget"] == "#flash"
    assert DENIED in html(response)
    assert GrantRequest.objects.get(pk=request.pk).state == GrantRequestState.PENDING
    assert not Grant.objects.exists()
    denial = AuditEvent.objects.get(event_name="ApproveGrantRequest", error_code=DENIED)
    assert denial.principal_arn == requester.arn and denial.origin == "dashboard"


def test_it_withdraws_with_htmx_and_refuses_anyone_else(
    admin_client: Client,
    approver_client: Client,
    key_admin_user: DashboardUser,
    key: Key,
    grantee: Principal,
) -> None:
    request = ask(key_admin_user, key, grantee)
    response = approver_client.post(f"/grant-requests/{request.pk}/withdraw/", **HX)
    assert response["HX-Retarget"] == "#flash" and DENIED in html(response)
    assert GrantRequest.objects.get(pk=request.pk).state == GrantRequestState.PENDING

    response = admin_client.post(f"/grant-requests/{request.pk}/withdraw/", **HX)
    assert response.status_code == 200 and "grantRequestChanged" in json.loads(response["HX-Trigger"])
    assert 'data-state="withdrawn"' in html(response) and 'data-kind="withdraw"' in html(response)
    assert GrantRequest.objects.get(pk=request.pk).state == GrantRequestState.WITHDRAWN


def test_it_needs_the_csrf_token_to_decide(
    approver_user: DashboardUser,
    signed_in: Callable[..., Client],
    key_admin_user: DashboardUser,
    key: Key,
    grantee: Principal,
) -> None:
    request = ask(key_admin_user, key, grantee)
    client = signed_in(approver_user, enforce_csrf_checks=True)
    url = f"/grant-requests/{request.pk}/decide/"
    assert client.post(url, {"verdict": "approve"}, **HX).status_code == 403
    assert GrantRequest.objects.get(pk=request.pk).state == GrantRequestState.PENDING
    assert not AuditEvent.objects.filter(event_name="ApproveGrantRequest").exists()
    token = client.cookies["csrftoken"].value
    assert client.post(url, {"verdict": "approve"}, HTTP_X_CSRFTOKEN=token, **HX).status_code == 200
    assert GrantRequest.objects.get(pk=request.pk).state == GrantRequestState.APPROVED


def test_it_answers_get_on_the_mutating_urls_with_405(
    approver_client: Client, key_admin_user: DashboardUser, key: Key, grantee: Principal
) -> None:
    request = ask(key_admin_user, key, grantee)
    for suffix in ("decide/", "withdraw/"):
        assert approver_client.get(f"/grant-requests/{request.pk}/{suffix}").status_code == 405
