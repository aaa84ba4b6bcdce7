"""Writing the audit trail. ``audit_record`` is the only writer of AuditEvent.

Services call :func:`audited` around their work: on success the event is
written inside the same transaction as the change; on failure the change
rolls back and the event (with the error) is written in its own transaction,
so a refused or failed call is always on record and a rolled-back change
never is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connections, models, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from audit.models import AuditEvent
from audit.services.writer import group_writer
from kmsweb.generations import generations_check_sql, generations_unverified, generations_verify
from kmsweb.lib import operations
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InternalError, KmsError

if TYPE_CHECKING:
    from keys.models import Key

logger = logging.getLogger(__name__)

KMS_SOURCE = "kms.amazonaws.com"

# Request and response members that carry secrets or ciphertext: never
# recorded, whatever a service passes in (CloudTrail omits them too). The KMS
# operations' own come from the operations table; the rest are kmsweb's own
# calls' (access keys, MFA, passwords, grant tokens).
REDACTED_MEMBERS = operations.REDACTED | {
    "SecretAccessKey",
    "Secret",
    "Password",
    "Token",
    "SessionToken",
    "TokenCode",
}


def storable(value: Any) -> Any:
    """``value`` with every U+0000 written as the six characters ``\\u0000``.

    PostgreSQL's text and jsonb cannot hold NUL, yet AWS accepts it in an
    encryption context; escaping keeps such a call on the record instead of
    failing the INSERT of its audit event.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000") if "\x00" in value else value
    if isinstance(value, Mapping):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


@lru_cache(maxsize=1024)
def _camel(name: str) -> str:
    return name[:1].lower() + name[1:] if name else name


def redact(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """CloudTrail-style lowerCamelCase copy of ``params`` without secret members."""
    if params is None:
        return None
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name in REDACTED_MEMBERS or isinstance(value, bytes | bytearray | memoryview):
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Mapping) and name not in (
            "EncryptionContext",
            "SourceEncryptionContext",
            "DestinationEncryptionContext",
        ):
            value = redact(value)
        elif isinstance(value, list):
            value = [redact(v) if isinstance(v, Mapping) else v for v in value]
        out[_camel(name)] = value
    return out


def user_identity(caller: Caller) -> dict[str, Any]:
    """CloudTrail's userIdentity block for a caller."""
    return _user_identity(*_identity_fields(caller))


def _identity_fields(caller: Caller) -> tuple[Any, ...]:
    """What of a caller its userIdentity block shows (and the key it is memoized by)."""
    return (
        caller.is_system,
        caller.principal_type,
        caller.principal_name,
        caller.principal_arn,
        caller.account_id,
        caller.mfa_present,
        caller.access_key_id,
        caller.via_service,
        caller.invoked_by_arn,
        caller.session_created_at,
        caller.role_session_name,
    )


def _user_identity(
    is_system: bool,
    principal_type: str,
    principal_name: str,
    principal_arn: str,
    account_id: str,
    mfa_present: bool,
    access_key_id: str | None,
    via_service: str | None,
    invoked_by_arn: str | None,
    session_created_at: datetime | None = None,
    role_session_name: str = "",
) -> dict[str, Any]:
    if is_system:
        return {"type": "AWSService", "invokedBy": "kmsweb", "principalId": principal_name}
    kind = {"user": "IAMUser", "role": "AssumedRole", "service": "AWSService"}.get(principal_type, "Unknown")
    identity: dict[str, Any] = {
        "type": kind,
        "principalId": principal_name,
        "arn": principal_arn,
        "accountId": account_id,
        "sessionContext": {"attributes": {"mfaAuthenticated": "true" if mfa_present else "false"}},
    }
    if session_created_at is not None:
        # Temporary credentials (STS), in CloudTrail's shape: a role session
        # is an AssumedRole named by its session ARN, issued by the role.
        identity["sessionContext"]["attributes"]["creationDate"] = session_created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if principal_type == "role" and role_session_name:
            identity["arn"] = f"arn:aws:sts::{account_id}:assumed-role/{principal_name}/{role_session_name}"
            identity["principalId"] = f"{principal_name}:{role_session_name}"
            identity["sessionContext"]["sessionIssuer"] = {
                "type": "Role",
                "principalId": principal_name,
                "arn": principal_arn,
                "accountId": account_id,
                "userName": principal_name,
            }
    if access_key_id:
        identity["accessKeyId"] = access_key_id
    if principal_type == "user":
        identity["userName"] = principal_name
    if via_service:
        # CloudTrail's invokedBy names the service that called on the user's
        # behalf; kmsweb adds which registered service principal signed.
        service = via_service.split(".", 1)[0]
        identity["invokedBy"] = f"{service}.amazonaws.com"
        if invoked_by_arn:
            identity["invokedByArn"] = invoked_by_arn
    return identity


class JsonText(str):
    """A JSON column's value already written as JSON text (see ``_insert``)."""

    __slots__ = ()


_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _storable_json(value: Any) -> JsonText | None:
    """``storable(value)`` written as JSON, scanning for NUL only in the text.

    JSON writes U+0000 as ``\\u0000``: text without that sequence has no NUL
    to escape. Text with it (a NUL, or only a backslash before ``u0000``) is
    written again from ``storable(value)``.
    """
    if value is None:
        return None
    text = _dumps(value)
    if "\\u0000" in text:
        text = _dumps(storable(value))
    return JsonText(text)


@lru_cache(maxsize=4096)
def _user_identity_json(*fields: Any) -> JsonText:
    # The same principal and access key make the same block on every call: it
    # is built and written as JSON once per process, not once per event.
    return JsonText(_dumps(storable(_user_identity(*fields))))


@lru_cache(maxsize=4096)
def _key_resource_json(account_id: str, arn: str) -> JsonText:
    return JsonText(_dumps([{"accountId": account_id, "type": "AWS::KMS::Key", "ARN": arn}]))


def audit_record(
    *,
    caller: Caller,
    event_name: str,
    request_parameters: Mapping[str, Any] | None = None,
    response_elements: Mapping[str, Any] | None = None,
    additional_event_data: Mapping[str, Any] | None = None,
    error: KmsError | None = None,
    keys: Sequence[Key] = (),
    key_arns: Sequence[str] = (),
    read_only: bool | None = None,
    event_time: datetime | None = None,
    event_source: str = KMS_SOURCE,
    grouped: bool = False,
) -> int | None:
    """Insert one audit event and return its id. One INSERT, no locks; the caller owns the transaction.

    ``read_only`` defaults to CloudTrail's readOnly for a KMS event name (the operations table).

    ``grouped``: the event may commit together with other calls' events
    (``audit.services.writer``) when the caller is in no transaction; it
    has then committed on return, and no id is returned.
    """
    if read_only is None:
        read_only = event_source == KMS_SOURCE and operations.is_read_only(event_name)
    resources: Any
    if len(keys) == 1 and not key_arns:
        resources = _key_resource_json(keys[0].account_id or "", keys[0].arn)
    else:
        resources = [{"accountId": k.account_id or "", "type": "AWS::KMS::Key", "ARN": k.arn} for k in keys]
        resources += [{"type": "AWS::KMS::Key", "ARN": arn} for arn in key_arns]
    values = {
        "event_time": event_time or timezone.now(),
        "event_name": event_name,
        "event_source": event_source,
        "event_type": "AwsServiceEvent" if caller.is_system else "AwsApiCall",
        "aws_region": caller.region,
        "source_ip": caller.source_ip or ("kmsweb" if caller.is_system else ""),
        "user_agent": storable((caller.user_agent or "")[:512]),
        "user_identity": _user_identity_json(*_identity_fields(caller)),
        "request_parameters": _storable_json(redact(request_parameters)),
        "response_elements": _storable_json(redact(response_elements)),
        "additional_event_data": _storable_json(dict(additional_event_data)) if additional_event_data else None,
        "error_code": error.code if error else "",
        "error_message": storable(error.message) if error else "",
        "request_id": caller.request_id,
        "read_only": read_only,
        "resources": resources,
        "recipient_account_id": caller.account_id,
        "origin": caller.origin,
        "key_id": str(keys[0].id) if keys else (key_arns[0].rsplit("/", 1)[-1] if key_arns else ""),
        "principal_arn": caller.principal_arn,
    }
    unverified = generations_unverified()
    if grouped and _may_group():
        group_writer(router.db_for_write(AuditEvent)).commit(values, verify=unverified)
        return None
    if unverified is not None:
        # The call assumed the cache generations: check them before its event
        # is written (in its transaction, when it has one).
        generations_verify(unverified)
    return _insert(values)


def _may_group() -> bool:
    """Whether this thread may hand its event to the group writer.

    Not inside a transaction (the event belongs to it), nor on a connection
    shared between threads (a test server's in-memory SQLite), and not when
    ``KMSWEB_AUDIT_GROUP_COMMIT`` is off.
    """
    if not settings.KMSWEB_AUDIT_GROUP_COMMIT:
        return False
    connection = connections[router.db_for_write(AuditEvent)]
    return not connection.in_atomic_block and not connection.allow_thread_sharing


# The model's columns, in a fixed order (the primary key is the database's).
_COLUMNS = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
_INSERT_SQL: dict[str, tuple[str, bool]] = {}
# A psycopg prepare_threshold no query reaches by repetition.
_PREPARE_WHEN_ASKED = 2**31 - 1


# Columns whose Python value is what the driver takes as it is.
_PLAIN = (models.CharField, models.TextField, models.BooleanField, models.IntegerField)


def _json_param(value: Any, connection: BaseDatabaseWrapper) -> str | None:
    """A JSON column's parameter: its JSON text (None: SQL NULL, as the ORM stores it).

    PostgreSQL (jsonb, from an untyped text parameter) and SQLite (text) both
    take the text as it is: Django's JSONField hands them JSON text too.
    """
    if value is None or isinstance(value, JsonText):
        return value
    return _dumps(value)


@dataclass(frozen=True, slots=True)
class _Column:
    attname: str
    # The field's default (a callable one, like event_id's uuid4, is called per row).
    default: Callable[[], Any]
    # How the value becomes the driver's parameter; None: as it is.
    adapt: Callable[[Any, BaseDatabaseWrapper], Any] | None


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


@lru_cache(maxsize=8)
def _plan(vendor: str) -> tuple[_Column, ...]:
    """How each column's value is passed on ``vendor``.

    JSON as its text. On PostgreSQL, datetimes and UUIDs go to psycopg as
    they are (what their fields' ``get_db_prep_save`` return there);
    elsewhere through that method. Text, numbers and booleans as they are.
    """
    plan = []
    for f in _COLUMNS:
        adapt: Callable[[Any, BaseDatabaseWrapper], Any] | None = None
        if isinstance(f, models.JSONField):
            adapt = _json_param
        elif not isinstance(f, _PLAIN) and vendor != "postgresql":
            adapt = f.get_db_prep_save
        default = f.default if f.has_default() and callable(f.default) else _constant(f.get_default())
        plan.append(_Column(f.attname, default, adapt))
    return tuple(plan)


def _insert_into(connection: BaseDatabaseWrapper) -> str:
    """``INSERT INTO <table> (<the columns of _COLUMNS>)``, quoted for this database.

    Only the model's own quoted names are formatted into the audit
    statements; values are always parameters.
    """
    quote = connection.ops.quote_name
    names = ", ".join(quote(str(f.column)) for f in _COLUMNS)
    return f"INSERT INTO {quote(AuditEvent._meta.db_table)} ({names})"


def _insert_sql(connection: BaseDatabaseWrapper) -> tuple[str, bool]:
    """The INSERT for one event on this database, built once per vendor, and
    whether it returns the new id."""
    cached = _INSERT_SQL.get(connection.vendor)
    if cached is None:
        returning = connection.features.can_return_columns_from_insert
        pk = connection.ops.quote_name(str(AuditEvent._meta.pk.column))
        sql = "{} VALUES ({}){}".format(  # noqa: S608 - the model's own names
            _insert_into(connection),
            ", ".join(["%s"] * len(_COLUMNS)),
            f" RETURNING {pk}" if returning else "",
        )
        cached = _INSERT_SQL[connection.vendor] = (sql, returning)
    return cached


def _insert(values: dict[str, Any]) -> int:
    """``AuditEvent(**values).save(force_insert=True)`` without the ORM's per-call work.

    Every API call writes one event: compiling the same 23-column INSERT
    each time was a fifth of a request's CPU, and building the model
    instance and passing every value through its field's
    ``get_db_prep_save`` another tenth. Columns not given take the field's
    default; each value becomes its parameter as :func:`_plan` says (the
    same values ``save()`` would pass; a test compares the rows). A JSON
    value may come already written (:class:`JsonText`). There are no save
    signals on audit events to skip.
    """
    connection = connections[router.db_for_write(AuditEvent)]
    sql, returning = _insert_sql(connection)
    params = _row_params(values, connection)
    if connection.vendor == "postgresql":
        ids = _execute_direct(connection, sql, params)
        if not ids:
            raise InternalError("The audit INSERT returned no id.")
        return int(ids[0])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0] if returning else cursor.lastrowid


def _row_params(values: dict[str, Any], connection: BaseDatabaseWrapper) -> list[Any]:
    params = []
    for column in _plan(connection.vendor):
        value = values[column.attname] if column.attname in values else column.default()
        params.append(value if column.adapt is None else column.adapt(value, connection))
    return params


def insert_many(
    rows: Sequence[dict[str, Any]], *, using: str, checks: Sequence[str | None] | None = None
) -> set[Any] | None:
    """Insert several events (each as ``_insert`` takes it) with one statement (atomic on its own in autocommit).

    PostgreSQL: one multi-row INSERT with PostgreSQL's own ``$n``
    placeholders (``_rows_statement``), prepared once per connection and
    batch size, and one round trip (``COPY`` takes two, and its statement
    is parsed each time). Elsewhere one multi-row INSERT. Used by the group
    writer (``audit.services.writer``); returns no ids.

    ``checks`` (PostgreSQL only): per event, the cache generations its call
    assumed (``kmsweb.generations.vector_text``), or None. When any is
    given, an event is written only if its generations are those of the
    table when the statement runs, and the answer is the ``event_id`` of
    every event written.
    """
    connection = connections[using]
    params = [_row_params(values, connection) for values in rows]
    checked = checks is not None and any(c is not None for c in checks)
    if connection.vendor == "postgresql":
        sql = _rows_statement(connection, len(params), checked=checked)
        if checked:
            assert checks is not None  # checked says so
            flat = [p for row, check in zip(params, checks, strict=True) for p in (*row, check)]
            return set(_execute_direct(connection, sql, flat, raw=True))
        _execute_direct(connection, sql, [p for row in params for p in row], raw=True)
        return None
    if checked:
        raise RuntimeError("only PostgreSQL checks the cache generations of a batch")
    one = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    with connection.cursor() as cursor:
        cursor.execute(
            f"{_insert_into(connection)} VALUES {', '.join([one] * len(params))}",  # noqa: S608
            [p for row in params for p in row],
        )
    return None


# The PostgreSQL statements of the audit writers, built once per database vendor (and batch size).
_STATEMENTS: dict[tuple[str, str, int], str] = {}


def _checked_one_statement(connection: BaseDatabaseWrapper) -> str:
    """The INSERT of a single event, with plain ``%s`` parameters, its
    assumed cache generations last, written only if they hold, returning
    its ``event_id``."""
    key = (connection.vendor, "checked_one", 1)
    sql = _STATEMENTS.get(key)
    if sql is None:
        values = ", ".join(f"%s::{f.db_type(connection)}" for f in _COLUMNS)
        now = generations_check_sql()
        sql = f"{_insert_into(connection)} SELECT {values} WHERE %s::text = {now} RETURNING event_id"  # noqa: S608
        _STATEMENTS[key] = sql
    return sql


def _rows_statement(connection: BaseDatabaseWrapper, rows: int, *, checked: bool) -> str:
    """The INSERT of ``rows`` events, one ``VALUES`` row each, with PostgreSQL's ``$n`` placeholders.

    Each event's parameters are its columns in ``_COLUMNS`` order, and when
    ``checked`` the cache generations its call assumed (NULL: nothing to
    check): the statement then writes only the events whose generations
    hold, read once in its snapshot (taken after every call of the batch
    started and made its lookups), and returns the ``event_id`` of every
    event it wrote.

    ``$n`` placeholders and a raw cursor (``_direct_cursor(raw=True)``)
    because psycopg parses a ``%s`` query of more than 50 parameters anew
    at every call; and one parameter per value, not one array per column,
    because psycopg builds text arrays in Python, escaping each JSON value
    with a regular expression: for a batch of four events that was a
    quarter of the process's CPU per call.
    """
    key = (connection.vendor, "checked_rows" if checked else "rows", rows)
    sql = _STATEMENTS.get(key)
    if sql is None:
        types = [*(str(f.db_type(connection)) for f in _COLUMNS), *(["text"] if checked else [])]
        width = len(types)
        values = ", ".join(
            "(" + ", ".join(f"${row * width + i + 1}::{t}" for i, t in enumerate(types)) + ")" for row in range(rows)
        )
        if checked:
            columns = ", ".join(f"c{i}" for i in range(len(_COLUMNS)))
            sql = (
                f"{_insert_into(connection)} SELECT {columns} "  # noqa: S608 - the model's own names
                f"FROM (VALUES {values}) AS e({columns}, assumed) "
                f"WHERE e.assumed IS NULL OR e.assumed = {generations_check_sql()} RETURNING event_id"
            )
        else:
            sql = f"{_insert_into(connection)} VALUES {values}"  # noqa: S608 - the model's own names
        _STATEMENTS[key] = sql
    return sql


def insert_checked(values: dict[str, Any], assumed: str) -> bool:
    """Insert one event (as ``_insert`` takes it) only if the cache generations are ``assumed`` (PostgreSQL).

    Answers whether it wrote the event.
    """
    connection = connections[router.db_for_write(AuditEvent)]
    sql = _checked_one_statement(connection)
    return bool(_execute_direct(connection, sql, [*_row_params(values, connection), assumed]))


def _direct_cursor(connection: BaseDatabaseWrapper, *, raw: bool = False) -> Any:
    """The connection's plain psycopg cursor for the audit INSERTs (see ``_execute_direct``).

    ``raw``: a ``psycopg.RawCursor``, for statements with ``$n`` placeholders.
    """
    import psycopg  # only reached on PostgreSQL

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    pg = connection.connection
    if settings.KMSWEB_DB_PREPARED_STATEMENTS and pg.prepare_threshold is None:
        # Django turns psycopg's preparation off (None): allow it for queries
        # that ask (prepare=True), without ever preparing the ORM's on its own.
        pg.prepare_threshold = _PREPARE_WHEN_ASKED
    # One plain cursor per driver connection, kept on Django's wrapper and
    # reused by every INSERT until the connection is replaced.
    attribute = "_kmsweb_audit_raw_cursor" if raw else "_kmsweb_audit_cursor"
    cursor = getattr(connection, attribute, None)
    if cursor is None or cursor.connection is not pg or cursor.closed:
        cursor = psycopg.RawCursor(pg) if raw else psycopg.Cursor(pg)
        setattr(connection, attribute, cursor)  # one per connection, beside Django's
    return cursor


def _execute_direct(connection: BaseDatabaseWrapper, sql: str, params: list[Any], *, raw: bool = False) -> list[Any]:
    """Run an audit INSERT on a plain psycopg cursor, past Django's cursor wrapper; the first
    column of the rows it returns (none without ``RETURNING``).

    Still inside Django's connection handling — health check, connection
    setup, database error wrapping and the open transaction — but without
    the wrapper's per-call bookkeeping, and with the values bound by the
    server instead of quoted into the SQL text by the client (Django's
    psycopg cursors bind client-side). Together about 15% of an Encrypt's
    CPU. Prepared once per connection unless ``KMSWEB_DB_PREPARED_STATEMENTS``
    is off (for a pooler that cannot carry prepared statements): the server
    then skips parsing and planning the 23-column INSERT on every call.
    Query logging (``connection.queries``) does not list it.
    """
    cursor = _direct_cursor(connection, raw=raw)
    with connection.wrap_database_errors:
        cursor.execute(sql, params, prepare=settings.KMSWEB_DB_PREPARED_STATEMENTS)
        return [row[0] for row in cursor.fetchall()] if cursor.description is not None else []


@dataclass
class Operation:
    """What a service learns while it works, for its audit event."""

    caller: Caller
    event_name: str
    request_parameters: dict[str, Any] | None
    read_only: bool
    keys: list[Key] = field(default_factory=list)
    key_arns: list[str] = field(default_factory=list)
    response_elements: dict[str, Any] | None = None
    additional_event_data: dict[str, Any] = field(default_factory=dict)
    event_source: str = KMS_SOURCE

    def record(self, error: KmsError | None, *, grouped: bool = False) -> None:
        audit_record(
            caller=self.caller,
            event_name=self.event_name,
            request_parameters=self.request_parameters,
            response_elements=self.response_elements,
            additional_event_data=self.additional_event_data or None,
            error=error,
            keys=self.keys,
            key_arns=self.key_arns,
            read_only=self.read_only,
            event_source=self.event_source,
            grouped=grouped,
        )


@contextmanager
def audited(
    caller: Caller,
    event_name: str,
    *,
    request_parameters: Mapping[str, Any] | None = None,
    read_only: bool | None = None,
    event_source: str = KMS_SOURCE,
    atomic: bool = True,
) -> Iterator[Operation]:
    """Run a service's work in a transaction that ends with its audit event.

    On a ``KmsError`` the work rolls back and the failure is recorded in a
    transaction of its own before the error propagates. Any other exception
    is a bug: it is logged, recorded and re-raised as ``InternalError``.

    Read-only calls (Encrypt, Decrypt, Describe…: ``read_only`` defaults to
    the operations table's readOnly for a KMS event) run outside a
    transaction and record their event with a single autocommitted INSERT.

    ``atomic=False`` is for long work that changes no rows it must commit
    with its event (an export writing files, reporting progress as it
    goes): the work runs outside a transaction and the event is recorded
    once it is done.
    """
    if read_only is None:
        read_only = event_source == KMS_SOURCE and operations.is_read_only(event_name)
    op = Operation(
        caller,
        event_name,
        dict(request_parameters) if request_parameters else None,
        read_only,
        event_source=event_source,
    )
    try:
        if atomic and not read_only:
            with transaction.atomic():
                yield op
                op.record(None)
        else:
            # A read-only call changes nothing but its event: it commits
            # with the events of concurrent calls (audit.services.writer),
            # or alone in autocommit inside no transaction.
            yield op
            op.record(None, grouped=read_only)
    except KmsError as exc:
        if exc.audited:
            # The audit store refused the event (AuditWriteFailed): nothing to record.
            raise
        if exc.decision is not None:
            op.additional_event_data["decision"] = exc.decision
        with transaction.atomic():
            op.record(exc)
        exc.audited = True
        raise
    except Exception as exc:
        logger.exception("unexpected failure in %s (request %s)", event_name, caller.request_id)
        internal = InternalError("An internal error occurred.")
        with transaction.atomic():
            op.record(internal)
        internal.audited = True
        raise internal from exc


def audit_internal_error(*, caller: Caller, event_name: str, request_id: str) -> InternalError:
    """The ``InternalError`` to answer for the exception being handled: logged, and audited if the trail can take it.

    For an entry point's last resort (the KMS API, the REST API): what went
    wrong inside kmsweb is logged with its traceback; its event is recorded
    unless the audit store is what failed.
    """
    logger.exception("internal error serving %s (request %s)", event_name, request_id)
    error = InternalError("An internal error occurred.")
    try:
        audit_rejected_request(caller=caller, event_name=event_name, error=error)
    except Exception:
        logger.exception("could not audit internal error (request %s)", request_id)
    return error


def audit_rejected_request(
    *,
    caller: Caller,
    event_name: str,
    error: KmsError,
    request_parameters: Mapping[str, Any] | None = None,
    event_source: str = KMS_SOURCE,
) -> None:
    """Record a request refused outside a service (bad signature, bad input, unknown key).

    Errors that a service already recorded carry ``audited = True`` and are
    not recorded twice.
    """
    if error.audited:
        return
    extra = {"decision": error.decision} if error.decision is not None else None
    with transaction.atomic():
        audit_record(
            caller=caller,
            event_name=event_name,
            error=error,
            request_parameters=request_parameters,
            additional_event_data=extra,
            event_source=event_source,
        )
    error.audited = True
