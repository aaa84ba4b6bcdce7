"""The key pages, server side: roles, CSRF, HTMX, the table's URL state, bad input, charts, headers.

Every user signs in through the real views (password, then a TOTP code
computed from the enrolled secret); see ``tests/dashboard_fixtures.py``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.context_processors import sealing_cache_clear
from audit.models import AuditEvent
from keys import services
from keys.models import Alias, Key, KeyManager, KeyState, Tag
from keys.services.common import default_key_policy
from keys.services.material import material_create
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser

DENIED = "AccessDeniedException"
HX = {"HTTP_HX_REQUEST": "true"}
UUID_LINK = re.compile(r'href="/keys/([0-9a-f-]{36})/"')
NEW_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Root",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
)


# --- helpers ---------------------------------------------------------------


def html(response: Any) -> str:
    return response.content.decode()


def snapshot(key: Key) -> dict[str, Any]:
    """Everything a dashboard action could change about a key."""
    key = Key.objects.get(pk=key.pk)
    return {
        "fields": {
            f.attname: getattr(key, f.attname) for f in Key._meta.concrete_fields if f.attname != "current_material_id"
        },
        "current_material": key.current_material_id,
        "aliases": sorted(Alias.objects.filter(key=key).values_list("name", flat=True)),
        "tags": sorted(Tag.objects.filter(key=key).values_list("tag_key", "tag_value")),
        "materials": list(key.materials.order_by("version").values_list("version", flat=True)),
    }


def table_ids(response: Any) -> list[str]:
    """The key ids of the table's rows, in order."""
    return UUID_LINK.findall(html(response))


def mutating_urls(key: Key) -> list[str]:
    base = f"/keys/{key.id}/"
    return [
        base + suffix
        for suffix in (
            "enable/",
            "disable/",
            "rotate/",
            "rotation/",
            "schedule-deletion/",
            "cancel-deletion/",
            "aliases/add/",
            "aliases/remove/",
            "tags/add/",
            "tags/remove/",
            "policy/",
            "policy/default-view/",
            "description/",
        )
    ]


@dataclass
class Action:
    """One mutating dashboard action: how to post it and what it must change."""

    name: str
    path: str  # relative to /keys/<id>/, or absolute when it starts with "/"
    event: str
    data: Callable[[Key], dict[str, str]] = lambda key: {}
    prepare: Callable[[Persona, Key], None] = lambda persona, key: None
    changed: Callable[[Key], bool] = lambda key: True
    response_event: str = "keyChanged"
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, key: Key) -> str:
        return self.path if self.path.startswith("/") else f"/keys/{key.id}/{self.path}"


def _disable(persona: Persona, key: Key) -> None:
    services.key_disable(caller=persona.caller(), key=key)


def _schedule(persona: Persona, key: Key) -> None:
    services.key_schedule_deletion(caller=persona.caller(), key=key, pending_window_days=7)


def _alias(persona: Persona, key: Key) -> None:
    services.alias_create(caller=persona.caller(), name="alias/old-name", key=key)


def _tag(persona: Persona, key: Key) -> None:
    services.key_tag(caller=persona.caller(), key=key, tags=[{"TagKey": "env", "TagValue": "prod"}])


def _fresh(key: Key) -> Key:
    return Key.objects.get(pk=key.pk)


def _created_in_dashboard(key: Key) -> bool:
    return Key.objects.filter(description="made in the dashboard", manager=KeyManager.CUSTOMER).count() == 1


ACTIONS = [
    Action("enable", "enable/", "EnableKey", prepare=_disable, changed=lambda k: _fresh(k).state == KeyState.ENABLED),
    Action("disable", "disable/", "DisableKey", changed=lambda k: _fresh(k).state == KeyState.DISABLED),
    Action(
        "rotate",
        "rotate/",
        "RotateKeyOnDemand",
        changed=lambda k: _fresh(k).current_material.version == 2 and k.materials.count() == 2,
        response_event="keyRotated",
    ),
    Action(
        "rotation",
        "rotation/",
        "EnableKeyRotation",
        data=lambda k: {"enabled": "on", "rotation_period_days": "180"},
        changed=lambda k: _fresh(k).rotation_enabled and _fresh(k).rotation_period_days == 180,
    ),
    Action(
        "schedule-deletion",
        "schedule-deletion/",
        "ScheduleKeyDeletion",
        data=lambda k: {"pending_window_days": "7", "confirm": str(k.id)},
        changed=lambda k: _fresh(k).state == KeyState.PENDING_DELETION and _fresh(k).pending_window_days == 7,
    ),
    Action(
        "cancel-deletion",
        "cancel-deletion/",
        "CancelKeyDeletion",
        prepare=_schedule,
        changed=lambda k: _fresh(k).state == KeyState.DISABLED and _fresh(k).deletion_date is None,
    ),
    Action(
        "alias-add",
        "aliases/add/",
        "CreateAlias",
        data=lambda k: {"alias": "payroll/db"},
        changed=lambda k: list(k.aliases.values_list("name", flat=True)) == ["alias/payroll/db"],
    ),
    Action(
        "alias-remove",
        "aliases/remove/",
        "DeleteAlias",
        data=lambda k: {"alias": "alias/old-name"},
        prepare=_alias,
        changed=lambda k: not k.aliases.exists(),
    ),
    Action(
        "tag-add",
        "tags/add/",
        "TagResource",
        data=lambda k: {"tag_key": "team", "tag_value": "payments"},
        changed=lambda k: list(k.tags.values_list("tag_key", "tag_value")) == [("team", "payments")],
    ),
    Action(
        "tag-remove",
        "tags/remove/",
        "UntagResource",
        data=lambda k: {"tag_key": "env"},
        prepare=_tag,
        changed=lambda k: not k.tags.exists(),
    ),
    Action(
        "policy",
        "policy/",
        "PutKeyPolicy",
        data=lambda k: {"policy": NEW_POLICY},
        changed=lambda k: _fresh(k).policy == NEW_POLICY,
    ),
    Action(
        "description",
        "description/",
        "UpdateKeyDescription",
        data=lambda k: {"description": "new words"},
        changed=lambda k: _fresh(k).description == "new words",
    ),
    Action(
        "create",
        "/keys/new/",
        "CreateKey",
        data=lambda k: {
            "description": "made in the dashboard",
            "alias": "",
            "tags": "team=payments",
            "rotation_enabled": "on",
            "rotation_period_days": "365",
        },
        changed=_created_in_dashboard,
    ),
]


@pytest.fixture
def key(make_key: Callable[..., Key]) -> Key:
    return make_key(description="payroll database")


@pytest.fixture
def viewer_client(viewer_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(viewer_user)


@pytest.fixture
def admin_client(key_admin_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(key_admin_user)


def aws_managed_key(account_id: str) -> Key:
    """A service managed key, made the way a service integration would (no CreateKey)."""
    now = timezone.now()
    key = Key.objects.create(
        account_id=account_id,
        region="us-east-1",
        description="Default key that protects my S3 objects",
        manager=KeyManager.AWS,
        state=KeyState.ENABLED,
        policy=default_key_policy(account_id),
        created_at=now,
    )
    key.current_material = material_create(key=key, version=1, now=now)
    key.save(update_fields=["current_material"])
    Alias.objects.create(
        account_id=account_id, region="us-east-1", name="alias/aws/s3", key=key, created_at=now, updated_at=now
    )
    return key


# --- the permission matrix ------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "approver", "auditor"])
def test_it_shows_no_mutating_action_to_a_read_only_role(
    role: str,
    make_dashboard_user: Callable[..., DashboardUser],
    signed_in: Callable[..., Client],
    make_key: Callable[..., Key],
    key_admin: Persona,
) -> None:
    enabled = make_key(description="enabled")
    _alias(key_admin, enabled)
    _tag(key_admin, enabled)
    disabled = make_key(description="disabled")
    _disable(key_admin, disabled)
    pending = make_key(description="pending")
    _schedule(key_admin, pending)
    client = signed_in(make_dashboard_user("reader", role))

    for key in (enabled, disabled, pending):
        page = html(client.get(f"/keys/{key.id}/"))
        assert str(key.id) in page
        for url in mutating_urls(key):
            assert url not in page, f"{role} sees {url}"
        assert "<textarea" not in page  # the policy is shown, not editable
        assert '<pre class="json">' in page
    assert 'id="keys-create"' not in html(client.get("/keys/"))
    assert "/keys/new/" not in html(client.get("/"))


def test_it_shows_every_action_to_a_key_admin(
    admin_client: Client, make_key: Callable[..., Key], key_admin: Persona
) -> None:
    enabled = make_key()
    _alias(key_admin, enabled)
    _tag(key_admin, enabled)
    page = html(admin_client.get(f"/keys/{enabled.id}/"))
    expected = {"disable/", "rotate/", "rotation/", "schedule-deletion/", "aliases/add/", "aliases/remove/"}
    expected |= {"tags/add/", "tags/remove/", "policy/", "description/"}
    for suffix in expected:
        assert f"/keys/{enabled.id}/{suffix}" in page, suffix
    disabled = make_key()
    _disable(key_admin, disabled)
    assert f"/keys/{disabled.id}/enable/" in html(admin_client.get(f"/keys/{disabled.id}/"))
    pending = make_key()
    _schedule(key_admin, pending)
    assert f"/keys/{pending.id}/cancel-deletion/" in html(admin_client.get(f"/keys/{pending.id}/"))
    assert 'id="keys-create"' in html(admin_client.get("/keys/"))
    assert "/keys/new/" in html(admin_client.get("/"))


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.name)
def test_it_refuses_and_audits_a_forged_post_from_a_viewer(
    action: Action,
    viewer_client: Client,
    viewer_user: DashboardUser,
    key: Key,
    key_admin: Persona,
) -> None:
    action.prepare(key_admin, key)
    before = snapshot(key)
    keys_before = Key.objects.count()

    response = viewer_client.post(action.url(key), action.data(key), **HX)

    # htmx 2 swaps only 2xx answers: the refusal is a 200 fragment for #flash.
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#flash"
    body = html(response)
    assert "<html" not in body
    assert f"{DENIED}: User: {viewer_user.arn} is not authorized to perform: kms:" in body
    assert snapshot(key) == before
    assert Key.objects.count() == keys_before
    denial = AuditEvent.objects.get(event_name=action.event, error_code=DENIED)
    assert denial.origin == "dashboard"
    assert denial.principal_arn == viewer_user.arn
    assert denial.user_identity["sessionContext"]["attributes"]["mfaAuthenticated"] == "true"
    if action.name != "create":
        assert denial.key_id == str(key.id)
    assert not AuditEvent.objects.filter(event_name=action.event, error_code="", principal_arn=viewer_user.arn).exists()


def test_it_shows_a_refusal_on_the_page_for_a_plain_post(
    viewer_client: Client,
    viewer_user: DashboardUser,
    key: Key,
) -> None:
    response = viewer_client.post(f"/keys/{key.id}/disable/", HTTP_REFERER=f"/keys/{key.id}/", follow=True)

    assert response.redirect_chain == [(f"/keys/{key.id}/", 302)]
    assert f"{DENIED}: User: {viewer_user.arn} is not authorized to perform: kms:DisableKey" in html(response)
    assert _fresh(key).state == KeyState.ENABLED


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.name)
def test_it_lets_a_key_admin_do_each_action_audited_as_dashboard(
    action: Action,
    admin_client: Client,
    key_admin_user: DashboardUser,
    key: Key,
    key_admin: Persona,
) -> None:
    action.prepare(key_admin, key)

    response = admin_client.post(action.url(key), action.data(key), **HX)

    assert response.status_code == 200, html(response)[:2000]
    assert action.changed(key)
    if action.name == "create":
        created = Key.objects.get(description="made in the dashboard")
        assert response["HX-Redirect"] == f"/keys/{created.id}/"
        audited_key = created
    else:
        body = html(response)
        assert "<html" not in body and 'id="key-body"' in body
        assert action.response_event in response["HX-Trigger"]
        audited_key = key
    event = AuditEvent.objects.get(event_name=action.event, principal_arn=key_admin_user.arn)
    assert event.error_code == ""
    assert event.origin == "dashboard"
    assert event.key_id == str(audited_key.id)
    assert event.user_identity["arn"] == key_admin_user.arn
    assert event.user_identity["sessionContext"]["attributes"]["mfaAuthenticated"] == "true"


def test_it_creates_a_key_with_alias_tags_and_rotation_from_the_form(
    admin_client: Client,
    key_admin_user: DashboardUser,
) -> None:
    response = admin_client.post(
        "/keys/new/",
        {
            "description": "orders",
            "alias": "orders/main",
            "tags": "team=orders\ncost-center=42\n",
            "rotation_enabled": "on",
            "rotation_period_days": "90",
        },
    )
    key = Key.objects.get(description="orders")
    assert response.status_code == 302 and response["Location"] == f"/keys/{key.id}/"
    assert list(key.aliases.values_list("name", flat=True)) == ["alias/orders/main"]
    assert sorted(key.tags.values_list("tag_key", "tag_value")) == [("cost-center", "42"), ("team", "orders")]
    assert key.rotation_enabled and key.rotation_period_days == 90
    names = set(AuditEvent.objects.filter(key_id=str(key.id), error_code="").values_list("event_name", flat=True))
    assert {"CreateKey", "CreateAlias", "EnableKeyRotation"} <= names
    page = html(admin_client.get(response["Location"]))
    assert f"Created key {key.id}." in page


def test_it_shows_no_mutating_action_on_a_service_managed_key(
    admin_client: Client, key_admin_user: DashboardUser
) -> None:
    key = aws_managed_key(key_admin_user.principal.account_id)

    page = html(admin_client.get(f"/keys/{key.id}/"))

    assert "Service managed (AWS)" in page
    assert "alias/aws/s3" in page
    for url in mutating_urls(key):
        assert url not in page
    assert "<textarea" not in page
    listing = html(admin_client.get("/keys/?kind=aws"))
    assert str(key.id) in listing


def test_it_refuses_a_forged_post_on_a_service_managed_key(admin_client: Client, key_admin_user: DashboardUser) -> None:
    key = aws_managed_key(key_admin_user.principal.account_id)
    before = snapshot(key)

    for url, data in (
        (f"/keys/{key.id}/disable/", {}),
        (f"/keys/{key.id}/policy/", {"policy": NEW_POLICY}),
        (f"/keys/{key.id}/schedule-deletion/", {"pending_window_days": "7", "confirm": str(key.id)}),
        (f"/keys/{key.id}/aliases/add/", {"alias": "mine"}),
    ):
        response = admin_client.post(url, data, **HX)
        assert response.status_code == 200
        assert response["HX-Retarget"] == "#flash"
        assert "UnsupportedOperationException" in html(response)
    assert snapshot(key) == before


# --- CSRF ------------------------------------------------------------------------------


def test_it_refuses_a_post_without_a_csrf_token(
    key_admin_user: DashboardUser,
    signed_in: Callable[..., Client],
    key: Key,
) -> None:
    client = signed_in(key_admin_user, enforce_csrf_checks=True)

    response = client.post(f"/keys/{key.id}/disable/", **HX)

    assert response.status_code == 403
    assert _fresh(key).state == KeyState.ENABLED
    assert not AuditEvent.objects.filter(event_name="DisableKey").exists()
    # The same request with the token (as htmx sends it, from <body hx-headers>) goes through.
    token = client.cookies["csrftoken"].value
    response = client.post(f"/keys/{key.id}/disable/", HTTP_X_CSRFTOKEN=token, **HX)
    assert response.status_code == 200
    assert _fresh(key).state == KeyState.DISABLED


def test_it_refuses_a_sign_in_without_a_csrf_token(key_admin_user: DashboardUser) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": key_admin_user.username, "password": key_admin_user.password})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_it_puts_the_csrf_token_on_every_htmx_request(admin_client: Client, key: Key) -> None:
    page = html(admin_client.get(f"/keys/{key.id}/"))
    match = re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"([A-Za-z0-9]+)\"\}'>", page)
    assert match, "the body carries the token for htmx"


# --- HTMX --------------------------------------------------------------------------------


def test_it_answers_htmx_with_the_table_partial_and_a_browser_with_the_page(admin_client: Client, key: Key) -> None:
    partial = admin_client.get("/keys/", **HX)
    page = admin_client.get("/keys/")

    assert "<html" not in html(partial)
    assert html(partial).lstrip().startswith("<table")
    assert str(key.id) in html(partial)
    assert html(page).startswith("<!doctype html>") and 'id="keys-table"' in html(page)
    assert str(key.id) in html(page)
    assert "HX-Request" in partial["Vary"] and "HX-Request" in page["Vary"]


def test_it_answers_a_boosted_navigation_with_the_whole_page(admin_client: Client) -> None:
    response = admin_client.get("/keys/", HTTP_HX_REQUEST="true", HTTP_HX_BOOSTED="true")
    assert "<html" in html(response)


def test_it_redirects_a_plain_post_to_the_key_page(admin_client: Client, key: Key) -> None:
    response = admin_client.post(f"/keys/{key.id}/disable/")
    # Post/redirect/get: reloading the page must not repeat the action.
    assert response.status_code == 302
    assert response["Location"] == f"/keys/{key.id}/"
    page = admin_client.get(response["Location"])
    assert 'data-state="Disabled"' in html(page)


def test_it_asks_htmx_to_reload_after_the_session_ends(admin_client: Client) -> None:
    admin_client.logout()
    response = admin_client.get("/keys/", **HX)
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/login/?next=/keys/"


# --- the table's URL state ----------------------------------------------------------------


@pytest.fixture
def sixty_keys(key_admin: Persona) -> list[Key]:
    """60 keys a minute apart: even ones "alpha-NN", odd ones "beta-NN";
    every third tagged team=red (others team=blue); the first ten disabled."""
    caller = key_admin.caller()
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    keys = []
    for i in range(60):
        with time_machine.travel(start + timedelta(minutes=i), tick=False):
            keys.append(
                services.key_create(
                    caller=caller,
                    description=f"{'alpha' if i % 2 == 0 else 'beta'}-{i:02d}",
                    tags=[{"TagKey": "team", "TagValue": "red" if i % 3 == 0 else "blue"}],
                )
            )
    for key in keys[:10]:
        services.key_disable(caller=caller, key=key)
    services.alias_create(caller=caller, name="alias/needle/haystack", key=keys[42])
    return keys


def ids(keys: list[Key]) -> list[str]:
    return [str(k.id) for k in keys]


def test_it_pages_newest_first_by_default(admin_client: Client, sixty_keys: list[Key]) -> None:
    newest_first = ids(sixty_keys[::-1])

    first = admin_client.get("/keys/", **HX)
    third = admin_client.get("/keys/?page=3", **HX)

    assert table_ids(first) == newest_first[:25]
    assert "1–25 of 60" in html(first) and "Page 1 of 3" in html(first)
    assert table_ids(third) == newest_first[50:]
    assert "51–60 of 60" in html(third)
    assert 'href="?page=2"' in html(third)  # "Previous" keeps the state


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("q=beta", lambda ks: [k for k in ks if k.description.startswith("beta")]),
        ("q=ALPHA-1", lambda ks: [k for k in ks if k.description.startswith("alpha-1")]),
        ("state=Disabled", lambda ks: ks[:10]),
        ("state=Enabled&q=beta", lambda ks: [k for k in ks[10:] if k.description.startswith("beta")]),
        ("tag=team%3Dred", lambda ks: ks[::3]),
        ("tag=team", lambda ks: ks),
        ("tag=nosuchtag", lambda ks: []),
        ("q=needle", lambda ks: [ks[42]]),
    ],
)
def test_it_filters_by_the_url(
    query: str, expected: Callable[[list[Key]], list[Key]], admin_client: Client, sixty_keys: list[Key]
) -> None:
    want = ids(expected(sixty_keys))[::-1]  # newest first

    response = admin_client.get(f"/keys/?{query}&per_page=100", **HX)

    assert table_ids(response) == want
    assert f"of {len(want)}" in html(response)
    if not want:
        assert "No key matches." in html(response)


def test_it_finds_a_key_by_its_id(admin_client: Client, sixty_keys: list[Key]) -> None:
    target = sixty_keys[7]
    assert table_ids(admin_client.get(f"/keys/?q={target.id}", **HX)) == [str(target.id)]


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("created", lambda ks: ks),
        ("-created", lambda ks: ks[::-1]),
        ("description", lambda ks: sorted(ks, key=lambda k: k.description)),
        ("-description", lambda ks: sorted(ks, key=lambda k: k.description, reverse=True)),
        ("state", lambda ks: sorted(ks, key=lambda k: (k.state, str(k.id)))),
        ("id", lambda ks: sorted(ks, key=lambda k: str(k.id))),
        ("-id", lambda ks: sorted(ks, key=lambda k: str(k.id), reverse=True)),
    ],
)
def test_it_sorts_by_the_url(
    sort: str, order: Callable[[list[Key]], list[Key]], admin_client: Client, sixty_keys: list[Key]
) -> None:
    want = ids(order([_fresh(k) for k in sixty_keys]))

    page1 = table_ids(admin_client.get(f"/keys/?sort={sort}", **HX))
    page2 = table_ids(admin_client.get(f"/keys/?sort={sort}&page=2", **HX))

    assert page1 + page2 == want[:50]


@pytest.mark.parametrize("descending", [False, True])
def test_it_sorts_by_alias_with_unnamed_keys_last(
    descending: bool, admin_client: Client, sixty_keys: list[Key], key_admin: Persona
) -> None:
    services.alias_create(caller=key_admin.caller(), name="alias/apple", key=sixty_keys[5])
    services.alias_create(caller=key_admin.caller(), name="alias/zebra", key=sixty_keys[17])
    named = [sixty_keys[5], sixty_keys[42], sixty_keys[17]]  # apple, needle/haystack, zebra
    unnamed = sorted((k for k in sixty_keys if k not in named), key=lambda k: str(k.id), reverse=descending)
    want = ids((named[::-1] if descending else named) + unnamed)

    got = table_ids(admin_client.get(f"/keys/?sort={'-' if descending else ''}alias&per_page=100", **HX))

    assert got == want


def test_it_keeps_the_whole_state_in_its_links(admin_client: Client, sixty_keys: list[Key]) -> None:
    response = admin_client.get("/keys/?q=a&state=Enabled&tag=team&sort=description", **HX)
    body = html(response)
    assert "1–25 of 50" in body
    # The pager and the column headers carry every filter.
    assert 'href="?q=a&amp;state=Enabled&amp;tag=team&amp;sort=description&amp;page=2"' in body
    assert 'href="?q=a&amp;state=Enabled&amp;tag=team&amp;sort=-description"' in body
    # A full page load of the same URL shows the same rows, with the filter form filled in.
    page = html(admin_client.get("/keys/?q=a&state=Enabled&tag=team&sort=description"))
    assert UUID_LINK.findall(page) == table_ids(response)
    assert 'name="q" value="a"' in page
    assert '<option value="Enabled" selected>' in page
    assert 'name="tag" value="team"' in page


@pytest.mark.parametrize(
    "query",
    ["page=abc", "page=-4", "state=Bogus", "sort=password", "per_page=7", "kind=x", "q=%00", "tag=%00", "q=+"],
)
def test_it_falls_back_to_defaults_for_malformed_state(query: str, admin_client: Client, sixty_keys: list[Key]) -> None:
    # NUL characters are dropped: PostgreSQL refuses them in text parameters.
    response = admin_client.get(f"/keys/?{query}", **HX)
    assert response.status_code == 200
    assert table_ids(response) == ids(sixty_keys[::-1])[:25]


def test_it_shows_the_last_page_for_a_page_past_the_end(admin_client: Client, sixty_keys: list[Key]) -> None:
    body = html(admin_client.get("/keys/?page=999", **HX))
    assert UUID_LINK.findall(body) == ids(sixty_keys[::-1])[50:]
    assert "51–60 of 60" in body
    assert "Page 3 of 3" in body
    assert 'href="?page=2" hx-get="?page=2"' in body  # "Previous" goes to the page before the one shown


def test_it_renders_the_list_in_a_bounded_number_of_queries(
    admin_client: Client, sixty_keys: list[Key], django_assert_max_num_queries: Any
) -> None:
    # Session, user, OTP device, principal, groups; tab counts (2); count, page,
    # aliases (prefetch), last used; the session save (3 with its savepoint);
    # and on the full page only, the sidebar's grant request count and the
    # alarm banner's alarms in ALARM, and the sealing banner's status (shared for seconds).
    counts = {}
    for per_page in (25, 100):
        for headers in ({}, HX):
            sealing_cache_clear()  # each full page reads the sealing status afresh
            with django_assert_max_num_queries(17), CaptureQueriesContext(connection) as ctx:
                response = admin_client.get(f"/keys/?per_page={per_page}&tag=team", **headers)
            assert response.status_code == 200
            counts[(per_page, bool(headers))] = len(ctx.captured_queries)
    assert counts[(25, True)] == counts[(100, True)], counts
    assert counts[(25, False)] == counts[(100, False)] == counts[(25, True)] + 3, counts


def test_it_shows_the_owned_tab_without_key_ids(admin_client: Client, key: Key) -> None:
    owned = Key.objects.filter(manager=KeyManager.OWNED)
    assert owned.exists()  # signing in made the TOTP platform key
    body = html(admin_client.get("/keys/?kind=owned"))
    assert "totp-secrets" in body
    for owned_key in owned:
        assert str(owned_key.id) not in body
    assert str(key.id) not in body


# --- missing keys ----------------------------------------------------------------------


def test_it_answers_another_accounts_key_with_a_not_found_page(
    admin_client: Client, make_key: Callable[..., Key], outsider: Persona
) -> None:
    theirs = make_key(outsider, description="not yours")

    response = admin_client.get(f"/keys/{theirs.id}/")

    assert response.status_code == 404
    body = html(response)
    assert "Key not found" in body and str(theirs.id) in body
    assert "does not exist" in body
    assert "not yours" not in body


def test_it_refuses_an_action_on_another_accounts_key(
    admin_client: Client, make_key: Callable[..., Key], outsider: Persona
) -> None:
    theirs = make_key(outsider)
    before = snapshot(theirs)
    for url in mutating_urls(theirs):
        response = admin_client.post(url, {"confirm": str(theirs.id), "pending_window_days": "7"}, **HX)
        assert response.status_code == 200, url
        assert "NotFoundException" in html(response), url
    assert snapshot(theirs) == before
    response = admin_client.get(f"/usage/data/?key={theirs.id}")
    # The chart endpoint answers JSON, so the chart script can show why.
    assert response.status_code == 400 and response.json()["error"] == "NotFoundException"


@pytest.mark.parametrize("key_id", ["not-a-uuid", "1234", "alias-demo", "%27%3Cscript%3E"])
def test_it_answers_a_malformed_key_id_inline(key_id: str, admin_client: Client) -> None:
    response = admin_client.get(f"/keys/{key_id}/")

    assert response.status_code == 404
    body = html(response)
    assert "Key not found" in body and "Invalid key id" in body
    assert "<script>" not in body.split("</head>")[1]
    response = admin_client.post(f"/keys/{key_id}/disable/", **HX)
    assert response.status_code == 200 and "Invalid key id" in html(response)


def test_it_answers_an_unknown_key_id_with_a_not_found_page(admin_client: Client) -> None:
    response = admin_client.get(f"/keys/{uuid.uuid4()}/")
    assert response.status_code == 404
    assert "does not exist" in html(response)


# --- bad input: an inline message, the input kept, nothing changed --------------------------


def post_bad(client: Client, key: Key, path: str, data: dict[str, str]) -> tuple[str, dict[str, Any]]:
    before = snapshot(key)
    response = client.post(f"/keys/{key.id}/{path}", data, **HX)
    assert response.status_code == 200
    body = html(response)
    assert "<html" not in body and 'id="key-body"' in body
    assert snapshot(key) == before
    return body, before


def test_it_refuses_invalid_policy_json_inline(admin_client: Client, key: Key) -> None:
    typed = '{"Statement": [ {"Effect": "Allow",, } ]'
    body, _ = post_bad(admin_client, key, "policy/", {"policy": typed})
    assert "The policy is not valid JSON. Line 1, column 36: a name is expected here, in double quotes" in body
    assert "Expecting" not in body  # the parser's own wording stays out
    assert "{&quot;Statement&quot;: [ {&quot;Effect&quot;: &quot;Allow&quot;,, } ]</textarea>" in body
    body, _ = post_bad(admin_client, key, "policy/", {"policy": '["no statement"]'})
    assert "A key policy is a JSON object with a Statement." in body


def test_it_names_the_line_and_what_is_missing_in_a_multi_line_policy(admin_client: Client, key: Key) -> None:
    typed = '{\n  "Version": "2012-10-17"\n  "Statement": []\n}'
    body, _ = post_bad(admin_client, key, "policy/", {"policy": typed})
    assert "Line 3, column 3: a comma is missing between two items. The line reads: &quot;Statement&quot;: []" in body


def test_it_says_the_policy_is_saved_next_to_the_save_button(admin_client: Client, key: Key) -> None:
    policy = default_key_policy(key.account_id)
    body = html(admin_client.post(f"/keys/{key.id}/policy/", {"policy": policy}, **HX))
    form = body.split('id="key-policy-form"')[1].split("</form>")[0]
    assert (
        'Save policy</button><span class="saved" id="key-policy-saved" role="status">Key policy saved.</span>' in form
    )


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("disable/", "Key disabled"),
        ("rotate/", "Key rotated"),
        ("ENABLE", "Key enabled"),
        ("CANCEL", "Deletion cancelled"),
    ],
)
def test_it_says_what_an_action_did_next_to_the_actions(
    path: str, said: str, admin_client: Client, key: Key, key_admin: Persona
) -> None:
    if path == "ENABLE":
        services.key_disable(caller=key_admin.caller(), key=key)
        path = "enable/"
    if path == "CANCEL":
        _schedule(key_admin, key)
        path = "cancel-deletion/"

    body = html(admin_client.post(f"/keys/{key.id}/{path}", **HX))

    config = body.split('id="key-config"')[1].split('id="key-actions"')[0]
    assert said in config and 'id="key-done" role="status"' in config


@pytest.mark.parametrize("days", ["6", "31", "-1", "seven"])
def test_it_refuses_a_deletion_window_out_of_range_inline(days: str, admin_client: Client, key: Key) -> None:
    body, _ = post_bad(admin_client, key, "schedule-deletion/", {"pending_window_days": days, "confirm": str(key.id)})
    assert re.search(r"Ensure this value is (greater|less) than or equal to (7|30)\.|Enter a whole number\.", body)
    assert f'value="{days}"' in body
    assert f'name="confirm" value="{key.id}"' in body
    assert '<details class="confirm" open>' in body  # the dialog stays open
    assert not AuditEvent.objects.filter(event_name="ScheduleKeyDeletion").exists()


def test_it_refuses_a_wrong_confirmation_inline(admin_client: Client, key: Key) -> None:
    body, _ = post_bad(admin_client, key, "schedule-deletion/", {"pending_window_days": "7", "confirm": "delete it"})
    assert "That is not this key&#x27;s id." in body
    assert 'name="confirm" value="delete it"' in body


def test_it_refuses_an_alias_that_exists_inline(
    admin_client: Client, make_key: Callable[..., Key], key_admin: Persona
) -> None:
    other = make_key()
    services.alias_create(caller=key_admin.caller(), name="alias/taken", key=other)
    key = make_key()

    body, _ = post_bad(admin_client, key, "aliases/add/", {"alias": "taken"})

    assert "already exists" in body
    assert 'name="alias" value="taken"' in body
    assert Alias.objects.get(name="alias/taken").key_id == other.id


@pytest.mark.parametrize("typed", ["aws/s3", "alias/aws/mine"])
def test_it_refuses_a_reserved_alias_inline(typed: str, admin_client: Client, key: Key) -> None:
    body, _ = post_bad(admin_client, key, "aliases/add/", {"alias": typed})
    assert "reserved" in body
    assert f'name="alias" value="{typed}"' in body


@pytest.mark.parametrize("typed", ["has space", "ümlaut", "x" * 251])
def test_it_refuses_a_malformed_alias_inline(typed: str, admin_client: Client, key: Key) -> None:
    body, _ = post_bad(admin_client, key, "aliases/add/", {"alias": typed})
    assert "Use letters, digits" in body or "at most 256 characters" in body


def test_it_refuses_a_tag_key_that_is_too_long_inline(admin_client: Client, key: Key) -> None:
    typed = "k" * 129
    body, _ = post_bad(admin_client, key, "tags/add/", {"tag_key": typed, "tag_value": "v"})
    assert "Ensure this value has at most 128 characters (it has 129)." in body
    assert f'value="{typed}"' in body


def test_it_refuses_a_reserved_tag_key_inline(admin_client: Client, key: Key) -> None:
    body, _ = post_bad(admin_client, key, "tags/add/", {"tag_key": "aws:owner", "tag_value": "me"})
    assert "reserved" in body and 'value="aws:owner"' in body


@pytest.mark.parametrize("period", ["30", "9999", ""])
def test_it_refuses_a_rotation_period_out_of_range_inline(period: str, admin_client: Client, key: Key) -> None:
    body, _ = post_bad(admin_client, key, "rotation/", {"enabled": "on", "rotation_period_days": period})
    assert "Ensure this value is" in body or "Give a period of 90 to 2560 days." in body


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("=no-key", "Line 1: a tag needs a key (key=value)."),
        ("team=a\n" + "k" * 129 + "=v", "Line 2: tag key is longer than 128 characters."),
        ("aws:created-by=me", "Line 1: tag keys beginning with &#x27;aws:&#x27; are reserved."),
        ("\n".join(f"t{i}=v" for i in range(51)), "A key can have at most 50 tags."),
    ],
)
def test_it_refuses_bad_tags_on_the_create_form(tags: str, message: str, admin_client: Client) -> None:
    before = Key.objects.count()

    response = admin_client.post(
        "/keys/new/",
        {"description": "typed text", "tags": tags, "rotation_enabled": "on", "rotation_period_days": "365"},
    )

    assert response.status_code == 200
    body = html(response)
    assert message in body
    assert 'value="typed text"' in body
    assert Key.objects.count() == before


def test_it_creates_no_key_when_the_alias_is_taken(
    admin_client: Client, make_key: Callable[..., Key], key_admin: Persona
) -> None:
    services.alias_create(caller=key_admin.caller(), name="alias/orders", key=make_key())
    before = Key.objects.count()

    response = admin_client.post(
        "/keys/new/",
        {"description": "second orders key", "alias": "orders", "tags": "team=x", "rotation_period_days": "365"},
    )

    assert response.status_code == 200
    body = html(response)
    assert "already exists" in body
    assert 'value="second orders key"' in body and 'value="orders"' in body and "team=x</textarea>" in body
    assert Key.objects.count() == before
    assert not Tag.objects.filter(tag_key="team", tag_value="x").exists()
    failed = AuditEvent.objects.get(event_name="CreateKey", origin="dashboard")
    assert failed.error_code == "AlreadyExistsException"


def test_it_refuses_a_reserved_alias_on_the_create_form(admin_client: Client) -> None:
    before = Key.objects.count()
    response = admin_client.post("/keys/new/", {"alias": "aws/ebs", "rotation_period_days": "365"})
    assert "reserved" in html(response)
    assert Key.objects.count() == before


# --- usage charts ------------------------------------------------------------------------


def series(data: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {ds["label"]: (ds["kind"], sum(ds["data"])) for ds in data["datasets"]}


def test_it_charts_requests_per_operation_with_errors_and_denials(
    admin_client: Client,
    viewer_client: Client,
    make_key: Callable[..., Key],
    key_admin: Persona,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    caller = key_admin.caller()
    with time_machine.travel(now - timedelta(hours=3), tick=False):
        key = make_key()
        other = make_key()
        blob = services.key_encrypt(caller=caller, key=other, plaintext=b"x").ciphertext
    with time_machine.travel(now - timedelta(minutes=5), tick=False):
        for _ in range(3):
            ciphertext = services.key_encrypt(caller=caller, key=key, plaintext=b"secret").ciphertext
        for _ in range(2):
            services.key_decrypt(caller=caller, ciphertext=ciphertext)
        with pytest.raises(Exception, match="key ID in the request"):
            services.key_decrypt(caller=caller, ciphertext=blob, key=key)
    viewer_client.post(f"/keys/{key.id}/disable/", **HX)  # denied, now

    data = admin_client.get(f"/usage/data/?key={key.id}&range=day").json()

    assert data["range"] == "day"
    assert len(data["labels"]) == 24
    assert series(data) == {
        "CreateKey": ("operation", 1),
        "Encrypt": ("operation", 3),
        "Decrypt": ("operation", 2),
        "Errors": ("error", 1),
        "Access denied": ("denied", 1),
    }
    assert data["total"] == 8
    # The buckets: the key's creation three hours back, the rest in the last hour.
    create = next(ds for ds in data["datasets"] if ds["label"] == "CreateKey")["data"]
    encrypt = next(ds for ds in data["datasets"] if ds["label"] == "Encrypt")["data"]
    assert create.index(1) < encrypt.index(3)
    assert sum(encrypt[-2:]) == 3
    # The last hour, per minute: only the recent events.
    hour = admin_client.get(f"/usage/data/?key={key.id}&range=hour").json()
    assert len(hour["labels"]) == 60
    assert "CreateKey" not in series(hour)
    assert series(hour)["Encrypt"] == ("operation", 3)


def test_it_charts_the_whole_account_and_ignores_other_accounts(
    admin_client: Client, make_key: Callable[..., Key], outsider: Persona, key_admin: Persona
) -> None:
    mine = make_key()
    for _ in range(5):
        services.key_encrypt(caller=key_admin.caller(), key=mine, plaintext=b"a")
    theirs = make_key(outsider)
    for _ in range(4):
        services.key_encrypt(caller=outsider.caller(), key=theirs, plaintext=b"b")

    data = admin_client.get("/usage/data/?range=month").json()

    assert data["range"] == "month" and len(data["labels"]) == 30
    # KMS requests count; sign-ins and the dashboard's own page reads do not.
    # The six busiest operations get a series each, the rest one "Other".
    assert series(data)["Encrypt"] == ("operation", 5)
    assert "ConsoleLogin" not in series(data)
    admin_client.get(f"/keys/{mine.id}/")  # a DescribeKey by the dashboard
    again = admin_client.get("/usage/data/?range=month").json()
    assert series(again) == series(data)
    operations = [ds for ds in data["datasets"] if ds["kind"] == "operation"]
    assert len(operations) <= 7 and (len(operations) < 7 or operations[-1]["label"] == "Other")


def test_it_falls_back_to_a_day_for_an_unknown_range(admin_client: Client) -> None:
    data = admin_client.get("/usage/data/?range=forever").json()
    assert data["range"] == "day"
    assert len(data["labels"]) == 24
    assert [ds["kind"] for ds in data["datasets"]][-2:] == ["error", "denied"]


def test_it_needs_a_signed_in_user_for_chart_data() -> None:
    response = Client().get("/usage/data/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_it_renders_the_chart_canvases(admin_client: Client, key: Key) -> None:
    assert f'data-url="/usage/data/?key={key.id}"' in html(admin_client.get(f"/keys/{key.id}/"))
    assert 'id="overview-chart" data-url="/usage/data/"' in html(admin_client.get("/"))
    assert "<canvas" in html(admin_client.get("/usage/"))


def test_it_shows_recent_denials_and_pending_deletions_on_the_overview(
    admin_client: Client,
    viewer_client: Client,
    viewer_user: DashboardUser,
    key: Key,
    key_admin: Persona,
) -> None:

    viewer_client.post(f"/keys/{key.id}/rotate/", **HX)
    _schedule(key_admin, key)

    body = html(admin_client.get("/"))

    denials = body.split('id="overview-denials"')[1]
    assert "RotateKeyOnDemand" in denials and viewer_user.arn in denials
    pending = body.split('id="overview-pending-deletion"')[1].split('id="overview-without-rotation"')[0]
    assert str(key.id) in pending
    assert _fresh(key).deletion_date.strftime("%Y-%m-%d") in pending


def test_it_counts_only_rotatable_keys_as_without_rotation(admin_client: Client, make_key: Callable[..., Key]) -> None:
    symmetric = make_key(description="no rotation yet", alias="alias/orders")
    make_key(description="rotates", rotation_period_days=365)
    for spec, usage in (
        ("RSA_2048", "SIGN_VERIFY"),
        ("ECC_NIST_P256", "SIGN_VERIFY"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
    ):
        make_key(description=spec, key_spec=spec, key_usage=usage)

    body = html(admin_client.get("/"))

    counts = body.split('id="overview-counts"')[1].split('id="overview-chart-panel"')[0]
    assert re.search(r"Without rotation</div><div class=\"n\">1<", counts), counts
    listed = body.split('id="overview-without-rotation"')[1].split('id="overview-denials"')[0]
    assert "RSA_2048" not in listed and "HMAC_256" not in listed
    # Named by alias first, the id on a muted line under it.
    assert re.search(
        rf'<a class="key-name" href="/keys/{symmetric.id}/">alias/orders</a>'
        rf'<span class="key-id mono muted">{symmetric.id}</span>',
        listed,
    )


# --- headers and cookies ------------------------------------------------------------------


def csp(response: Any) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.mark.parametrize("path", ["/", "/keys/", "/keys/new/", "/usage/", "KEY"])
def test_it_sends_strict_security_headers(path: str, admin_client: Client, key: Key) -> None:
    response = admin_client.get(f"/keys/{key.id}/" if path == "KEY" else path)

    assert response.status_code == 200
    policy = csp(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    # The pages themselves have nothing the policy would block.
    body = html(response)
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", body), "inline <script>"
    assert not re.search(r"\sstyle=\"", body), "inline style attribute"
    assert not re.search(r"\son[a-z]+=", body), "inline event handler"


def test_it_sets_http_only_secure_session_cookies(key_admin_user: DashboardUser) -> None:
    client = Client()
    response = client.post("/login/", {"username": key_admin_user.username, "password": key_admin_user.password})
    session = response.cookies["sessionid"]
    assert session["httponly"] is True
    assert session["secure"] is True
    assert session["samesite"] == "Lax"
    page = Client().get("/login/")
    assert page.cookies["csrftoken"]["secure"] is True
    assert page["X-Frame-Options"] == "DENY"
    assert csp(page)["script-src"] == ["'self'"]


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("description/", {"description": "a\x00b"}),
        ("policy/", {"policy": '{"Statement": [], "Sid": "\x00"}'}),
        ("aliases/add/", {"alias": "a\x00b"}),
        ("aliases/remove/", {"alias": "alias/a\x00b"}),
        ("tags/add/", {"tag_key": "a\x00b", "tag_value": "v"}),
        ("tags/remove/", {"tag_key": "a\x00b"}),
        ("schedule-deletion/", {"pending_window_days": "7", "confirm": "\x00"}),
    ],
)
def test_it_answers_nul_characters_without_an_error(
    path: str, data: dict[str, str], admin_client: Client, key: Key
) -> None:
    # PostgreSQL refuses NUL in text: each must stop at validation, not reach the database.
    before = snapshot(key)
    response = admin_client.post(f"/keys/{key.id}/{path}", data, **HX)
    assert response.status_code == 200
    assert snapshot(key) == before


def test_it_answers_nul_characters_on_the_create_form(admin_client: Client) -> None:
    before = Key.objects.count()
    response = admin_client.post(
        "/keys/new/", {"description": "a\x00b", "tags": "t=\x00", "rotation_period_days": "365"}
    )
    assert response.status_code == 200 and "Null characters are not allowed." in html(response)
    assert Key.objects.count() == before


def test_it_shows_a_service_key_made_on_first_use_read_only_with_its_service(
    admin_client: Client, key_admin_user: DashboardUser, key_admin: Persona
) -> None:
    from keys.services.service_keys import service_key_get_or_create
    from policies.models import Principal, PrincipalType

    Principal.objects.create(account_id=key_admin.account_id, name="backup", type=PrincipalType.SERVICE)
    key = service_key_get_or_create(caller=key_admin.caller(), alias_name="alias/aws/backup")
    assert key is not None
    before = snapshot(key)

    page = html(admin_client.get(f"/keys/{key.id}/"))

    assert re.search(r'id="key-service">\s*backup', page)
    assert "alias/aws/backup" in page and "kms:ViaService" in page
    for url in mutating_urls(key):
        assert url not in page
    listing = html(admin_client.get("/keys/?kind=aws"))
    assert str(key.id) in listing
    assert str(key.id) not in html(admin_client.get("/keys/"))  # the customer tab
    response = admin_client.post(f"/keys/{key.id}/disable/", {}, **HX)
    assert response["HX-Retarget"] == "#flash"
    assert "AccessDeniedException" in html(response)
    assert snapshot(key) == before
    assert AuditEvent.objects.filter(event_name="DisableKey", key_id=str(key.id)).get().error_code == (
        "AccessDeniedException"
    )


def test_it_serves_a_favicon_to_anyone() -> None:
    response = Client().get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] in {"image/x-icon", "image/vnd.microsoft.icon"}
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO header


def test_it_suggests_keys_by_alias_description_or_id_for_the_type_ahead(
    admin_client: Client, make_key: Callable[..., Key], outsider: Persona
) -> None:
    payroll = make_key(description="payroll database", alias="alias/payroll")
    billing = make_key(description="billing: payroll exports")
    make_key(persona=outsider, description="payroll elsewhere", alias="alias/payroll-other")

    body = html(admin_client.get("/keys/suggest/?key=payroll", **HX))

    values = re.findall(r'<option value="([^"]+)">', body)
    assert values == ["alias/payroll", str(billing.id)]  # aliases first; another account's keys never
    assert f"payroll database · {payroll.id}" in body
    assert re.findall(r'<option value="([^"]+)">', html(admin_client.get(f"/keys/suggest/?key_id={payroll.id}"))) == [
        "alias/payroll"
    ]
    assert html(admin_client.get("/keys/suggest/?key=")).strip() == ""
