"""The audit trail: one append-only row per operation, CloudTrail-shaped."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models


class AuditEvent(models.Model):
    """One API call, dashboard action or system job, successful or not.

    Rows are append-only: ``save()`` refuses to update an existing row (the
    audit issue adds database triggers on PostgreSQL). Plaintexts, data keys,
    ciphertext blobs and secrets never reach these fields.
    """

    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event_time = models.DateTimeField(db_index=True)
    event_version = models.CharField(max_length=8, default="1.08")
    event_source = models.CharField(max_length=64, default="kms.amazonaws.com")
    event_name = models.CharField(max_length=64, db_index=True)
    event_type = models.CharField(max_length=32, default="AwsApiCall")
    aws_region = models.CharField(max_length=32, blank=True)
    source_ip = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    user_identity = models.JSONField(default=dict)
    request_parameters = models.JSONField(null=True, blank=True)
    response_elements = models.JSONField(null=True, blank=True)
    additional_event_data = models.JSONField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    read_only = models.BooleanField(default=False)
    resources = models.JSONField(default=list)
    management_event = models.BooleanField(default=True)
    event_category = models.CharField(max_length=16, default="Management")
    recipient_account_id = models.CharField(max_length=12, blank=True)
    origin = models.CharField(max_length=10)
    # Denormalised for search: the key the event is about and who acted.
    key_id = models.CharField(max_length=36, blank=True)
    principal_arn = models.CharField(max_length=256, blank=True, db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Charts and "last used": one key's events over a time range.
            models.Index(fields=["key_id", "event_time"], name="audit_key_time_idx"),
            # Account-wide charts and denials.
            models.Index(fields=["recipient_account_id", "event_time"], name="audit_account_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_time:%Y-%m-%dT%H:%M:%SZ} {self.event_name} {self.error_code or 'ok'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise RuntimeError("audit events are append-only")
        super().save(*args, **kwargs)
