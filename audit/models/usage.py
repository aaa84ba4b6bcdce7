"""Usage roll-ups: audit events counted per bucket and dimensions.

Written only by ``audit.services.usage.usage_rollup`` (set-based SQL); read
by the usage charts and the alarms.
"""

from __future__ import annotations

from django.db import models

MINUTE, HOUR, DAY = 60, 3600, 86400
RESOLUTIONS = (MINUTE, HOUR, DAY)


class Outcome(models.TextChoices):
    OK = "ok", "Succeeded"
    ERROR = "error", "Failed"
    DENIED = "denied", "Access denied"


class UsageRollup(models.Model):
    """How many usage events fell in one bucket with one set of dimensions.

    ``resolution`` is the bucket width in seconds (minute, hour or day) and
    ``bucket`` its UTC start. ``outcome`` is derived from ``error_code``
    (``AccessDeniedException`` is ``denied``); ``pending_deletion`` marks
    calls refused because their key is pending deletion (AWS's CloudTrail
    metric filter matches the error message ``* is pending deletion.``).
    Empty strings stand for "none" (an event about no key, or no principal).
    """

    resolution = models.PositiveIntegerField()
    bucket = models.DateTimeField()
    account_id = models.CharField(max_length=12, blank=True)
    key_id = models.CharField(max_length=36, blank=True)
    event_name = models.CharField(max_length=64)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    error_code = models.CharField(max_length=64, blank=True)
    pending_deletion = models.BooleanField(default=False)
    principal_arn = models.CharField(max_length=256, blank=True)
    count = models.BigIntegerField()

    class Meta:
        constraints = [
            # Also the only index: charts and alarms read one account's
            # buckets of one resolution over a time range (its prefix). A
            # second or third index doubled the roll-up job's time.
            models.UniqueConstraint(
                fields=[
                    "account_id",
                    "resolution",
                    "bucket",
                    "key_id",
                    "event_name",
                    "outcome",
                    "error_code",
                    "pending_deletion",
                    "principal_arn",
                ],
                name="usage_rollup_dimensions",
            )
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%dT%H:%M}/{self.resolution}s {self.event_name} {self.outcome}: {self.count}"


class UsageWatermark(models.Model):
    """The single row saying how far the roll-ups have counted.

    Every event with ``id <= last_event_id`` is in the roll-ups, and none
    above it. The roll-up job locks this row for its whole transaction, so
    two workers never count the same range twice.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rolled up to event {self.last_event_id}"


class KeyFirstUse(models.Model):
    """When a principal first used a key for cryptography (successfully).

    Filled by the roll-up job from the same range it counts; feeds the
    "principal using a key it never used before" alarm.
    """

    account_id = models.CharField(max_length=12, blank=True)
    key_id = models.CharField(max_length=36)
    principal_arn = models.CharField(max_length=256)
    first_used_at = models.DateTimeField()
    first_event_id = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key_id", "principal_arn"], name="key_first_use_pair")]
        indexes = [models.Index(fields=["account_id", "first_used_at"], name="key_first_use_time_idx")]

    def __str__(self) -> str:
        return f"{self.principal_arn} first used {self.key_id} at {self.first_used_at:%Y-%m-%dT%H:%M:%S}"
