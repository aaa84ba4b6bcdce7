"""AWS's default view of a key policy: parsing, writing, and the dashboard form."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from keys import services
from keys.models import Key
from keys.policy_view import (
    ADMIN_SID,
    GRANT_SID,
    USE_SID,
    DefaultView,
    default_view_of,
    policy_from_default_view,
)
from keys.services.common import default_key_policy
from policies.authorization import authorize
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser
from tests.keys.test_views import HX, html, post_bad, snapshot

ACCOUNT = "111122223333"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:role/bob"


def test_the_default_key_policy_is_an_empty_default_view() -> None:
    assert default_view_of(default_key_policy(ACCOUNT), ACCOUNT) == DefaultView([], [], [])


@pytest.mark.parametrize("usage", ["ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT"])
def test_a_written_policy_reads_back_as_the_same_lists(usage: str) -> None:
    view = DefaultView(administrators=[ALICE], users=[ALICE, BOB], other_accounts=["444455556666"])
    text = policy_from_default_view(view, account_id=ACCOUNT, key_usage=usage)
    assert default_view_of(text, ACCOUNT) == view
    statements = {s["Sid"]: s for s in json.loads(text)["Statement"]}
    assert statements[USE_SID]["Principal"]["AWS"] == [ALICE, BOB, "arn:aws:iam::444455556666:root"]
    assert statements[GRANT_SID]["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    assert "kms:Decrypt" not in statements[ADMIN_SID]["Action"]
    assert ("kms:Decrypt" in statements[USE_SID]["Action"]) == (usage == "ENCRYPT_DECRYPT")
    assert ("kms:Sign" in statements[USE_SID]["Action"]) == (usage == "SIGN_VERIFY")


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ROOT = {
    "Sid": "Enable IAM User Permissions",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
    "Action": "kms:*",
    "Resource": "*",
}


@pytest.mark.parametrize(
    ("why", "text"),
    [
        ("not JSON", "{"),
        ("a statement of its own", _doc(ROOT, {"Sid": "Mine", "Effect": "Allow", "Principal": "*", "Action": "kms:*"})),
        ("no root statement", _doc({**ROOT, "Sid": ADMIN_SID})),
        ("a Deny under a known Sid", _doc(ROOT, {**ROOT, "Sid": ADMIN_SID, "Effect": "Deny"})),
        ("the root narrowed", _doc({**ROOT, "Action": "kms:Describe*"})),
        ("a service principal", _doc(ROOT, {**ROOT, "Sid": USE_SID, "Principal": {"Service": "s3.amazonaws.com"}})),
        (
            "users and grant statements disagree",
            _doc(
                ROOT,
                {**ROOT, "Sid": USE_SID, "Principal": {"AWS": ALICE}},
                {**ROOT, "Sid": GRANT_SID, "Principal": {"AWS": BOB}},
            ),
        ),
        ("a Sid twice", _doc(ROOT, ROOT)),
    ],
)
def test_a_policy_the_view_cannot_show_is_json_only(why: str, text: str) -> None:
    assert default_view_of(text, ACCOUNT) is None, why


# --- the dashboard form -------------------------------------------------------------------


@pytest.fixture
def admin_client(key_admin_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(key_admin_user)


@pytest.fixture
def key(make_key: Callable[..., Key]) -> Key:
    return make_key(description="payroll database")


def test_it_saves_the_default_view_and_the_engine_honours_it(
    admin_client: Client, key: Key, make_persona: Callable[..., Persona]
) -> None:
    user = make_persona("app-user", policy=None)
    admin = make_persona("key-keeper", policy=None)
    page = html(admin_client.get(f"/keys/{key.id}/"))
    assert user.principal.arn in page.split('id="key-policy-default-form"')[1]

    body = html(
        admin_client.post(
            f"/keys/{key.id}/policy/default-view/",
            {"administrators": [admin.principal.arn], "users": [user.principal.arn], "other_accounts": "444455556666"},
            **HX,
        )
    )

    assert 'id="key-policy-default-saved"' in body
    key.refresh_from_db()
    assert default_view_of(key.policy, key.account_id) == DefaultView(
        [admin.principal.arn], [user.principal.arn], ["444455556666"]
    )
    # The user may now encrypt through the key policy alone; the administrator may not.
    authorize(caller=user.caller(), action="kms:Encrypt", key=key)
    authorize(caller=admin.caller(), action="kms:PutKeyPolicy", key=key)
    with pytest.raises(Exception, match="AccessDenied|not authorized"):
        authorize(caller=admin.caller(), action="kms:Decrypt", key=key)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"other_accounts": "12345"}, "“12345” is not an account ID: an account ID is 12 digits."),
        ({"other_accounts": "111122223333"}, "is this account: choose its principals as key users instead."),
        ({"users": ["arn:aws:iam::111122223333:user/nobody"]}, "Select a valid choice."),
    ],
)
def test_it_refuses_bad_lists_inline_and_saves_nothing(
    admin_client: Client, key: Key, data: dict[str, Any], said: str
) -> None:
    body, _ = post_bad(admin_client, key, "policy/default-view/", data)
    assert said in body.split('id="key-policy-default-form"')[1].split("</form>")[0]


def test_a_custom_policy_has_no_default_view_and_refuses_one(
    admin_client: Client, key: Key, key_admin: Persona
) -> None:
    custom = _doc(
        {**ROOT, "Principal": {"AWS": f"arn:aws:iam::{key.account_id}:root"}},
        {"Sid": "Auditors", "Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kms:Describe*", "Resource": "*"},
    )
    services.key_put_policy(caller=key_admin.caller(), key=key, policy=custom)

    page = html(admin_client.get(f"/keys/{key.id}/"))
    assert 'id="key-policy-custom"' in page and 'id="key-policy-default-form"' not in page

    before = snapshot(key)
    body = html(admin_client.post(f"/keys/{key.id}/policy/default-view/", {"other_accounts": ""}, **HX))
    assert "has statements of its own, which the default view cannot show" in body
    assert snapshot(key) == before


def test_it_marks_the_json_error_for_the_editor(admin_client: Client, key: Key) -> None:
    body, _ = post_bad(admin_client, key, "policy/", {"policy": '{\n  "Version": "2012-10-17"\n  "Statement": []\n}'})
    textarea = body.split('id="key-policy-form"')[1].split("<textarea")[1].split(">")[0]
    assert 'data-error-line="3"' in textarea and 'data-error-column="3"' in textarea
    assert 'aria-invalid="true"' in textarea and "data-policy-editor" in textarea


def test_the_heading_names_the_key_by_its_alias(admin_client: Client, key: Key, key_admin: Persona) -> None:
    services.alias_create(caller=key_admin.caller(), name="alias/payroll", key=key)
    page = html(admin_client.get(f"/keys/{key.id}/"))
    assert '<h1 id="key-title">alias/payroll</h1>' in page
    assert f'id="key-title-id">{key.id}' in page
