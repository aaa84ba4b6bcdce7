"""Alarms: create, update, delete, the built-in alarms, and reading them.

Each service authorizes through the role policies (``kmsweb:*Alarm*``
actions), acts, and records one audit event with ``event_source``
``kmsweb.alarms``. The webhook secret is encrypted under the platform owned
``webhook-secrets`` key and never reaches an audit payload, a log or a
template.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from audit.alarm_rules import AlarmSpec, check_alarm
from audit.models import Alarm, AlarmHistory, AlarmMetric, AlarmSetup, AlarmState, Comparison, MissingData
from audit.services.recording import audited
from kmsweb.lib import clock
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, AlreadyExists, NotFound, ValidationError
from kmsweb.lib.operations import API_OPERATIONS
from policies.authorization import authorize

EVENT_SOURCE = "kmsweb.alarms"
WEBHOOK_PURPOSE = "webhook-secrets"


def secret_context(alarm_id: int) -> dict[str, str]:
    """The encryption context binding a webhook secret to its alarm."""
    return {"kmsweb:alarm": str(alarm_id)}


def webhook_secret(alarm: Alarm) -> bytes:
    """The alarm's webhook signing secret, decrypted (for the delivery task only)."""
    from keys.services.platform import platform_decrypt

    if not alarm.webhook_secret_ciphertext:
        raise ValidationError("This alarm has no webhook secret.")
    return platform_decrypt(
        purpose=WEBHOOK_PURPOSE, blob=bytes(alarm.webhook_secret_ciphertext), context=secret_context(alarm.pk)
    )


def _store_secret(alarm: Alarm, secret: str) -> None:
    from keys.services.platform import platform_encrypt

    alarm.webhook_secret_ciphertext = platform_encrypt(
        purpose=WEBHOOK_PURPOSE, plaintext=secret.encode(), context=secret_context(alarm.pk)
    )


def _checked(spec: AlarmSpec, *, account_id: str, creating: bool, has_secret: bool) -> None:
    from keys.models import Key

    errors = check_alarm(spec, creating=creating, has_secret=has_secret, known_operations=API_OPERATIONS)
    checkable = spec.key_id and "key_id" not in errors
    if checkable and not Key.objects.filter(account_id=account_id, id=spec.key_id).exists():
        errors["key_id"] = f"No key {spec.key_id} in this account."
    if errors:
        raise ValidationError(" ".join(f"{name}: {message}" for name, message in sorted(errors.items())))


def _apply(alarm: Alarm, spec: AlarmSpec) -> None:
    for name in (
        "name",
        "description",
        "metric",
        "key_id",
        "operation",
        "principal_arn",
        "error_code",
        "period",
        "comparison",
        "threshold",
        "evaluation_periods",
        "datapoints_to_alarm",
        "treat_missing_data",
        "actions_enabled",
        "emails",
        "webhook_url",
    ):
        setattr(alarm, name, getattr(spec, name))
    alarm.name = alarm.name.strip()
    if not alarm.webhook_url:
        alarm.webhook_secret_ciphertext = None


def alarm_create(*, caller: Caller, spec: AlarmSpec, builtin: str = "") -> Alarm:
    """Create an alarm in the caller's account (``kmsweb:CreateAlarm``), state INSUFFICIENT_DATA.

    Raises ``ValidationError`` for a bad spec and ``AlreadyExists`` for a
    name the account already uses. Records CreateAlarm.
    """
    with audited(caller, "CreateAlarm", request_parameters=spec.public(), event_source=EVENT_SOURCE) as op:
        authorize(caller=caller, action="kmsweb:CreateAlarm")
        _checked(spec, account_id=caller.account_id, creating=True, has_secret=False)
        now = clock.now()
        alarm = Alarm(
            account_id=caller.account_id,
            builtin=builtin,
            created_at=now,
            updated_at=now,
            state_updated_at=now,
            created_by=caller.principal_arn,
        )
        _apply(alarm, spec)
        try:
            with transaction.atomic():
                alarm.save()
        except IntegrityError:
            raise AlreadyExists(f"An alarm named '{alarm.name}' already exists.") from None
        if spec.webhook_url and spec.webhook_secret is not None:
            _store_secret(alarm, spec.webhook_secret)
            alarm.save(update_fields=["webhook_secret_ciphertext"])
        op.response_elements = {"AlarmId": alarm.pk, "AlarmName": alarm.name}
    return alarm


def alarm_update(*, caller: Caller, alarm: Alarm, spec: AlarmSpec) -> Alarm:
    """Change an alarm (``kmsweb:UpdateAlarm``); its state stays until the next evaluation.

    A ``None`` webhook secret keeps the stored one. Records UpdateAlarm.
    """
    params = {"AlarmId": alarm.pk, **spec.public()}
    with audited(caller, "UpdateAlarm", request_parameters=params, event_source=EVENT_SOURCE) as op:
        authorize(caller=caller, action="kmsweb:UpdateAlarm")
        locked = Alarm.objects.select_for_update().filter(pk=alarm.pk, account_id=caller.account_id).first()
        if locked is None:
            raise NotFound(f"Alarm {alarm.pk} does not exist.")
        _checked(spec, account_id=caller.account_id, creating=False, has_secret=bool(locked.webhook_secret_ciphertext))
        _apply(locked, spec)
        if spec.webhook_url and spec.webhook_secret is not None:
            _store_secret(locked, spec.webhook_secret)
        locked.updated_at = clock.now()
        try:
            with transaction.atomic():
                locked.save()
        except IntegrityError:
            raise AlreadyExists(f"An alarm named '{locked.name}' already exists.") from None
        op.response_elements = {"AlarmId": locked.pk, "AlarmName": locked.name}
    return locked


def alarm_delete(*, caller: Caller, alarm: Alarm) -> None:
    """Delete an alarm (``kmsweb:DeleteAlarm``) with its history and deliveries.

    A built-in alarm also needs ``kmsweb:DeleteBuiltInAlarm`` (the key
    administrator role). Records DeleteAlarm.
    """
    params = {"AlarmId": alarm.pk, "AlarmName": alarm.name, "BuiltIn": alarm.builtin or None}
    with audited(caller, "DeleteAlarm", request_parameters=params, event_source=EVENT_SOURCE):
        authorize(caller=caller, action="kmsweb:DeleteAlarm")
        if alarm.builtin:
            authorize(caller=caller, action="kmsweb:DeleteBuiltInAlarm")
        deleted, _ = Alarm.objects.filter(pk=alarm.pk, account_id=caller.account_id).delete()
        if not deleted:
            raise NotFound(f"Alarm {alarm.pk} does not exist.")


ACK_COMMENT_MAX = 1000


def alarm_acknowledge(*, caller: Caller, alarm: Alarm, comment: str) -> AlarmHistory:
    """Acknowledge the alarm's latest trip to ALARM (``kmsweb:AcknowledgeAlarm``).

    The acknowledgement is a history row (state unchanged, ``reason_data``
    ``{"acknowledged": {"by", "comment"}}``), so who, when and why stay in
    the alarm's history; the banner stops naming the alarm once it is back
    to OK and acknowledged. Refused (``ValidationError``) when the alarm has
    never been in ALARM or its latest trip is already acknowledged.
    Records AcknowledgeAlarm.
    """
    comment = comment.strip()
    params = {"AlarmId": alarm.pk, "AlarmName": alarm.name, "Comment": comment}
    with audited(caller, "AcknowledgeAlarm", request_parameters=params, event_source=EVENT_SOURCE) as op:
        authorize(caller=caller, action="kmsweb:AcknowledgeAlarm")
        if len(comment) > ACK_COMMENT_MAX:
            raise ValidationError(f"A comment is at most {ACK_COMMENT_MAX} characters.")
        locked = Alarm.objects.select_for_update().filter(pk=alarm.pk, account_id=caller.account_id).first()
        if locked is None:
            raise NotFound(f"Alarm {alarm.pk} does not exist.")
        if alarm_attention(locked) is None:
            raise ValidationError("This alarm has no unacknowledged trip to ALARM.")
        entry = AlarmHistory.objects.create(
            alarm=locked,
            timestamp=clock.now(),
            old_state=locked.state,
            new_state=locked.state,
            reason=f"Acknowledged by {caller.principal_arn}" + (f": {comment}" if comment else "."),
            reason_data={"acknowledged": {"by": caller.principal_arn, "comment": comment}},
        )
        op.response_elements = {"AlarmId": locked.pk, "AcknowledgedAt": entry.timestamp.isoformat()}
    return entry


def alarm_attention(alarm: Alarm) -> AlarmHistory | None:
    """The alarm's latest trip to ALARM if nobody has acknowledged it since, else None.

    An alarm that went to ALARM and back to OK between two looks at the
    dashboard still needs someone to look: it stays on the banner until
    acknowledged.
    """
    latest = alarm.history.filter(new_state=AlarmState.ALARM).exclude(old_state=AlarmState.ALARM).first()
    if latest is None:
        return None
    acknowledged = alarm.history.filter(timestamp__gte=latest.timestamp, reason_data__has_key="acknowledged")
    return None if acknowledged.exclude(pk=latest.pk).exists() else latest


# -- Reading ------------------------------------------------------------------------------------


def alarms_describe(*, caller: Caller, state: str = "", query: str = "") -> list[Alarm]:
    """The caller's account's alarms (``kmsweb:DescribeAlarms``), optionally by state or name."""
    params = {"StateValue": state or None, "AlarmNamePrefix": query or None}
    with audited(caller, "DescribeAlarms", request_parameters=params, read_only=True, event_source=EVENT_SOURCE):
        authorize(caller=caller, action="kmsweb:DescribeAlarms")
        qs = alarms_of(caller.account_id)
        if state:
            qs = qs.filter(state=state)
        if query:
            qs = qs.filter(name__icontains=query)
        return list(qs)


def alarm_get_for(*, caller: Caller, alarm_id: int | str) -> Alarm:
    """One alarm of the caller's account (``kmsweb:DescribeAlarms``); ``NotFound`` otherwise."""
    with audited(
        caller,
        "DescribeAlarms",
        request_parameters={"AlarmId": str(alarm_id)},
        read_only=True,
        event_source=EVENT_SOURCE,
    ):
        authorize(caller=caller, action="kmsweb:DescribeAlarms")
        try:
            pk = int(alarm_id)
        except (TypeError, ValueError):
            raise NotFound(f"Alarm {alarm_id} does not exist.") from None
        alarm = alarms_of(caller.account_id).filter(pk=pk).first()
        if alarm is None:
            raise NotFound(f"Alarm {alarm_id} does not exist.")
        return alarm


def alarms_of(account_id: str) -> QuerySet[Alarm]:
    return Alarm.objects.filter(account_id=account_id).defer("webhook_secret_ciphertext")


def alarms_in_alarm(*, account_id: str) -> list[str]:
    """Names of the account's alarms in ALARM (the dashboard banner; one query)."""
    return list(Alarm.objects.filter(account_id=account_id, state=AlarmState.ALARM).values_list("name", flat=True))


def may(caller: Caller, action: str) -> bool:
    """Whether ``caller`` may do ``action`` (for showing buttons; the services decide)."""
    try:
        authorize(caller=caller, action=action)
    except AccessDenied:
        return False
    return True


# -- Built-in alarms ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltIn:
    slug: str
    spec: AlarmSpec


BUILTINS = (
    # AWS recommends an alarm on any use of a key pending deletion: its
    # CloudTrail metric filter matches errorMessage "* is pending deletion."
    # and alarms on Sum >= 1. Such a use means something still depends on it.
    BuiltIn(
        "pending-deletion-use",
        AlarmSpec(
            name="Use of a key pending deletion",
            description="A request used a KMS key that is scheduled for deletion: something still depends on it. "
            "Cancel the deletion if the key is still needed.",
            metric=AlarmMetric.PENDING_DELETION_USE,
            period=60,
            comparison=Comparison.GE,
            threshold=1,
            treat_missing_data=MissingData.NOT_BREACHING,
        ),
    ),
    BuiltIn(
        "access-denied-spike",
        AlarmSpec(
            name="Spike in access denials",
            description="Ten or more requests were denied within five minutes.",
            metric=AlarmMetric.DENIALS,
            period=300,
            comparison=Comparison.GE,
            threshold=10,
            treat_missing_data=MissingData.NOT_BREACHING,
        ),
    ),
    BuiltIn(
        "key-disabled-or-deletion-scheduled",
        AlarmSpec(
            name="Key disabled or scheduled for deletion",
            description="A key was disabled or scheduled for deletion (DisableKey, ScheduleKeyDeletion).",
            metric=AlarmMetric.KEY_STATE_CHANGES,
            period=60,
            comparison=Comparison.GE,
            threshold=1,
            treat_missing_data=MissingData.NOT_BREACHING,
        ),
    ),
    BuiltIn(
        "new-principal-key-use",
        AlarmSpec(
            name="Principal using a key for the first time",
            description="A principal used a key for cryptography that it had never used before.",
            metric=AlarmMetric.NEW_PRINCIPAL_USE,
            period=60,
            comparison=Comparison.GE,
            threshold=1,
            treat_missing_data=MissingData.NOT_BREACHING,
        ),
    ),
)


def alarms_ensure_builtin(*, account_ids: list[str] | None = None) -> int:
    """Create the built-in alarms of accounts that never had them; returns how many alarms.

    ``account_ids`` None means every account without an ``AlarmSetup`` row
    (what ``evaluate_alarms`` and ``bootstrap`` run, so a new account has
    its built-ins within a minute). Each alarm is recorded as CreateAlarm by
    the system. The ``AlarmSetup`` row is written once, so a built-in that a
    key administrator deleted stays deleted.
    """
    from policies.models import Account

    done = AlarmSetup.objects.values_list("account_id", flat=True)
    pending = Account.objects.exclude(id__in=done)
    if account_ids is not None:
        pending = pending.filter(id__in=account_ids)
    made = 0
    for account_id in pending.values_list("id", flat=True):
        caller = Caller.system("builtin-alarms", account_id=account_id)
        with transaction.atomic():
            setup, created = AlarmSetup.objects.select_for_update().get_or_create(
                account_id=account_id, defaults={"created_at": clock.now()}
            )
            if not created:
                continue  # another worker did it
            taken = set(alarms_of(account_id).values_list("name", flat=True))
            for builtin in BUILTINS:
                spec = builtin.spec
                if spec.name in taken:
                    spec = AlarmSpec(**{**spec.__dict__, "name": f"{spec.name} (built-in)"})
                alarm_create(caller=caller, spec=spec, builtin=builtin.slug)
                made += 1
    return made
