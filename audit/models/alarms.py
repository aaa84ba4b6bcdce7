"""Alarms on the usage roll-ups (CloudWatch's model), their history, and the
notifications their transitions send."""

from __future__ import annotations

from django.db import models


class AlarmMetric(models.TextChoices):
    REQUESTS = "requests", "Operation count"
    ERRORS = "errors", "Error count (all failed calls)"
    DENIALS = "denials", "Access denials"
    # Event-driven kinds: counted from the roll-ups like the others, but
    # what they count is an event worth a notification on its own.
    PENDING_DELETION_USE = "pending_deletion_use", "Use of a key pending deletion"
    KEY_STATE_CHANGES = "key_state_changes", "Keys disabled or scheduled for deletion"
    NEW_PRINCIPAL_USE = "new_principal_use", "A principal using a key for the first time"
    # Set by the compliance evaluation, not from the roll-ups (no datapoints here).
    COMPLIANCE_FINDINGS = "compliance_findings", "New high or critical compliance findings"


class Comparison(models.TextChoices):
    GE = "GreaterThanOrEqualToThreshold", ">="
    GT = "GreaterThanThreshold", ">"
    LT = "LessThanThreshold", "<"
    LE = "LessThanOrEqualToThreshold", "<="


class MissingData(models.TextChoices):
    MISSING = "missing", "missing (INSUFFICIENT_DATA when all are missing)"
    IGNORE = "ignore", "ignore (keep the current state)"
    BREACHING = "breaching", "breaching"
    NOT_BREACHING = "notBreaching", "not breaching"


class AlarmState(models.TextChoices):
    OK = "OK", "OK"
    ALARM = "ALARM", "In alarm"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA", "Insufficient data"


class Alarm(models.Model):
    """An alarm watching one metric of one account's usage.

    The metric is the Sum of the roll-up counts matching ``metric`` and the
    optional filters (blank = any) over each ``period``; the alarm goes to
    ALARM when ``datapoints_to_alarm`` of the last ``evaluation_periods``
    datapoints breach ``comparison threshold``. A period without matching
    events has no datapoint: ``treat_missing_data`` decides what that means.
    ``builtin`` names the built-in alarm this row is (blank for users'
    alarms); built-ins are editable and only key administrators delete them.
    The webhook secret is stored encrypted under the platform owned
    ``webhook-secrets`` key.
    """

    account_id = models.CharField(max_length=12)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    builtin = models.CharField(max_length=64, blank=True)
    metric = models.CharField(max_length=32, choices=AlarmMetric.choices)
    key_id = models.CharField(max_length=36, blank=True)
    operation = models.CharField(max_length=64, blank=True)
    principal_arn = models.CharField(max_length=256, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    statistic = models.CharField(max_length=8, default="Sum")
    period = models.PositiveIntegerField(default=300)
    comparison = models.CharField(max_length=40, choices=Comparison.choices, default=Comparison.GE)
    threshold = models.FloatField(default=1)
    evaluation_periods = models.PositiveSmallIntegerField(default=1)
    datapoints_to_alarm = models.PositiveSmallIntegerField(default=1)
    treat_missing_data = models.CharField(max_length=16, choices=MissingData.choices, default=MissingData.MISSING)
    actions_enabled = models.BooleanField(default=True)
    emails = models.JSONField(default=list, blank=True)
    webhook_url = models.CharField(max_length=2048, blank=True)
    webhook_secret_ciphertext = models.BinaryField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=AlarmState.choices, default=AlarmState.INSUFFICIENT_DATA)
    state_reason = models.TextField(default="Unchecked: Initial alarm creation")
    state_reason_data = models.JSONField(default=dict, blank=True)
    state_updated_at = models.DateTimeField()
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=256, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["account_id", "name"], name="alarm_name_per_account"),
            models.UniqueConstraint(
                fields=["account_id", "builtin"], condition=~models.Q(builtin=""), name="one_builtin_per_account"
            ),
        ]
        indexes = [models.Index(fields=["account_id", "state"], name="alarm_account_state_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    @property
    def comparison_symbol(self) -> str:
        return Comparison(self.comparison).label

    @property
    def has_webhook(self) -> bool:
        return bool(self.webhook_url)


class AlarmSetup(models.Model):
    """Marks an account whose built-in alarms were created (once: deleted ones stay deleted)."""

    account_id = models.CharField(max_length=12, primary_key=True)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"built-in alarms of {self.account_id}"


class AlarmHistory(models.Model):
    """One state transition of an alarm, with CloudWatch-style reason text."""

    alarm = models.ForeignKey(Alarm, on_delete=models.CASCADE, related_name="history")
    timestamp = models.DateTimeField()
    old_state = models.CharField(max_length=20, choices=AlarmState.choices)
    new_state = models.CharField(max_length=20, choices=AlarmState.choices)
    reason = models.TextField()
    reason_data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [models.Index(fields=["alarm", "-timestamp"], name="alarm_history_time_idx")]

    def __str__(self) -> str:
        return f"{self.alarm_id}: {self.old_state} -> {self.new_state} at {self.timestamp:%Y-%m-%dT%H:%M:%S}"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RETRYING = "retrying", "Retrying"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class Notification(models.Model):
    """One transition's message to one channel (an email or a webhook POST).

    ``payload`` is what is sent (no secrets); the delivery task claims the row,
    tries, and records each try as a ``DeliveryAttempt``.
    """

    alarm = models.ForeignKey(Alarm, on_delete=models.CASCADE, related_name="notifications")
    transition = models.ForeignKey(AlarmHistory, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    target = models.CharField(max_length=2048)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.channel} to {self.target} ({self.status})"


class DeliveryAttempt(models.Model):
    """One try at delivering a notification: how it went and how long it took."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    attempted_at = models.DateTimeField()
    ok = models.BooleanField()
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField()

    class Meta:
        ordering = ["notification_id", "number"]
        constraints = [models.UniqueConstraint(fields=["notification", "number"], name="one_attempt_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} of notification {self.notification_id}: {'ok' if self.ok else 'failed'}"
