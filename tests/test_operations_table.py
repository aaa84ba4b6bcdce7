"""The operations table against AWS's KMS model, and the parts of kmsweb that read it."""

from __future__ import annotations

import botocore.session
import pytest

from audit.models import AuditEvent
from audit.services import REDACTED_MEMBERS, audit_rejected_request
from kmsweb.lib import operations
from kmsweb.lib.errors import ValidationError
from policies.services.grants import GRANT_OPERATIONS_BY_USAGE, SYMMETRIC_GRANT_OPERATIONS

MODEL = botocore.session.get_session().get_service_model("kms")


def _secret_members(operation: str) -> set[str]:
    """Members of an operation's input and output that are binary or marked sensitive in the model."""
    op = MODEL.operation_model(operation)
    found: set[str] = set()
    for shape in (op.input_shape, op.output_shape):
        if shape is None:
            continue
        for name, member in shape.members.items():
            if member.type_name == "blob" or member.metadata.get("sensitive"):
                found.add(name)
    return found


def test_it_has_a_row_for_every_operation_of_the_model_and_no_other() -> None:
    assert operations.API_OPERATIONS == set(MODEL.operation_names)
    assert {name for name, row in operations.OPERATIONS.items() if not row.api} == {"ReEncryptFrom", "ReEncryptTo"}


@pytest.mark.parametrize("operation", MODEL.operation_names)
def test_it_redacts_every_binary_or_sensitive_member(operation: str) -> None:
    assert _secret_members(operation) <= operations.OPERATIONS[operation].redacted
    assert _secret_members(operation) <= REDACTED_MEMBERS


def test_it_counts_as_cryptographic_exactly_the_operations_aws_tracks_for_last_usage() -> None:
    tracked = MODEL.shape_for("KeyLastUsageTrackingOperation").enum
    assert set(operations.CRYPTO) == set(tracked)


def test_it_allows_in_grants_exactly_aws_grant_operations() -> None:
    granted = {name for name, row in operations.OPERATIONS.items() if row.grant_for}
    assert granted == set(MODEL.shape_for("GrantOperation").enum)


def test_it_gives_each_key_kind_the_grant_operations_aws_lists() -> None:
    # AWS's "Grant operations" table, by kind of key.
    common = {"CreateGrant", "RetireGrant", "DescribeKey"}
    assert SYMMETRIC_GRANT_OPERATIONS == common | {
        "Encrypt",
        "Decrypt",
        "ReEncryptFrom",
        "ReEncryptTo",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
    }
    assert GRANT_OPERATIONS_BY_USAGE["SIGN_VERIFY"] == common | {"Sign", "Verify", "GetPublicKey"}
    assert GRANT_OPERATIONS_BY_USAGE["GENERATE_VERIFY_MAC"] == common | {"GenerateMac", "VerifyMac"}
    assert GRANT_OPERATIONS_BY_USAGE["KEY_AGREEMENT"] == common | {"DeriveSharedSecret", "GetPublicKey"}
    assert GRANT_OPERATIONS_BY_USAGE["ENCRYPT_DECRYPT"] == common | {
        "Encrypt",
        "Decrypt",
        "ReEncryptFrom",
        "ReEncryptTo",
        "GetPublicKey",
    }


def test_it_marks_only_calls_that_change_nothing_as_read_only() -> None:
    for name in ("Encrypt", "Decrypt", "DescribeKey", "ListKeys", "GetKeyPolicy", "Sign", "GenerateRandom"):
        assert operations.is_read_only(name), name
    for name in ("CreateKey", "PutKeyPolicy", "CreateGrant", "RetireGrant", "ScheduleKeyDeletion", "ImportKeyMaterial"):
        assert not operations.is_read_only(name), name
    assert not operations.is_read_only("NoSuchOperation")


@pytest.mark.django_db
def test_it_records_a_refused_read_only_call_as_read_only(key_admin) -> None:
    # A request refused before any service ran (bad input) still gets CloudTrail's readOnly
    # from the table: an auditor filtering on writes must not see refused reads.
    audit_rejected_request(caller=key_admin.caller(), event_name="Decrypt", error=ValidationError("bad"))
    audit_rejected_request(caller=key_admin.caller(), event_name="ScheduleKeyDeletion", error=ValidationError("bad"))
    recorded = dict(AuditEvent.objects.filter(error_code="ValidationException").values_list("event_name", "read_only"))
    assert recorded == {"Decrypt": True, "ScheduleKeyDeletion": False}
