"""The audit trail: append-only events, the signed digests that seal them,
the signing keys, archives of expired ranges, and export jobs."""

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
    event_time = models.DateTimeField()
    event_version = models.CharField(max_length=8, default="1.08")
    event_source = models.CharField(max_length=64, default="kms.amazonaws.com")
    event_name = models.CharField(max_length=64)
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
    principal_arn = models.CharField(max_length=256, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Charts and "last used": one key's events over a time range.
            models.Index(fields=["key_id", "event_time"], name="audit_key_time_idx"),
            # Account-wide charts and denials.
            models.Index(fields=["recipient_account_id", "event_time"], name="audit_account_time_idx"),
            # The Audit page: newest first, keyset-paged on (event_time, id),
            # alone or behind one equality filter.
            models.Index(fields=["event_time", "id"], name="audit_time_id_idx"),
            models.Index(fields=["event_name", "event_time", "id"], name="audit_name_time_idx"),
            models.Index(fields=["principal_arn", "event_time", "id"], name="audit_principal_time_idx"),
            models.Index(fields=["source_ip", "event_time", "id"], name="audit_ip_time_idx"),
            # Failures are a small share of the trail: a partial index stays small.
            models.Index(
                fields=["error_code", "event_time", "id"],
                name="audit_error_time_idx",
                condition=~models.Q(error_code=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_time:%Y-%m-%dT%H:%M:%SZ} {self.event_name} {self.error_code or 'ok'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise RuntimeError("audit events are append-only")
        super().save(*args, **kwargs)


class SigningKey(models.Model):
    """An ECDSA P-256 key pair that signs digests and export manifests.

    The private key is stored encrypted under the platform owned
    ``audit-signing`` key; the public key stays published after rollover
    (``retired_at`` set) so that old digests and exports still verify.
    """

    fingerprint = models.CharField(max_length=64, unique=True)  # SHA-256 of the DER SubjectPublicKeyInfo, hex
    public_pem = models.TextField()
    private_key_ciphertext = models.BinaryField()
    created_at = models.DateTimeField()
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["retired_at"], condition=models.Q(retired_at__isnull=True), name="one_current_signing_key"
            )
        ]

    def __str__(self) -> str:
        return self.fingerprint


class AuditDigest(models.Model):
    """A signed seal over the events with ``previous.last_event_id < id <= last_event_id``.

    ``events_sha256`` is the SHA-256 over the SHA-256 of each event's
    canonical record, in id order; ``leaves`` keeps (id, record hash) pairs
    so that verification can name the event that changed. The signed document (see
    ``audit.canonical.digest_document``) is rebuilt from these columns, so
    changing any of them breaks the signature. Rows are never updated or
    deleted (a trigger enforces it on PostgreSQL), archived ranges included.
    """

    sequence = models.PositiveIntegerField(unique=True)
    first_event_id = models.BigIntegerField()
    last_event_id = models.BigIntegerField()
    oldest_event_time = models.DateTimeField()
    newest_event_time = models.DateTimeField()
    event_count = models.PositiveIntegerField()
    leaves = models.BinaryField()
    events_sha256 = models.CharField(max_length=64)
    previous_digest_sha256 = models.CharField(max_length=64, blank=True)
    previous_digest_signature = models.TextField(blank=True)
    digest_start_time = models.DateTimeField()
    digest_end_time = models.DateTimeField()
    key_fingerprint = models.CharField(max_length=64)
    digest_sha256 = models.CharField(max_length=64)
    signature = models.TextField()  # base64 DER ECDSA signature over the canonical document

    class Meta:
        ordering = ["sequence"]

    def __str__(self) -> str:
        return f"digest {self.sequence} (events {self.first_event_id}-{self.last_event_id})"


class AuditArchive(models.Model):
    """Sealed ranges moved out of the database by the retention job.

    Events up to ``last_event_id`` were written to ``path`` (an export
    bundle with its signed manifest) and then deleted; their digests stay,
    so the chain still verifies from the first digest to the last.
    """

    first_sequence = models.PositiveIntegerField()
    last_sequence = models.PositiveIntegerField(unique=True)
    last_event_id = models.BigIntegerField()
    event_count = models.PositiveIntegerField()
    oldest_event_time = models.DateTimeField()
    newest_event_time = models.DateTimeField()
    path = models.CharField(max_length=1024)
    manifest_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["last_sequence"]

    def __str__(self) -> str:
        return f"archive of digests {self.first_sequence}-{self.last_sequence}"


class ExportState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class AuditExport(models.Model):
    """A dashboard export job: a filtered range written as a signed bundle.

    The worker claims a queued row (conditional update), writes the bundle
    under ``KMSWEB_AUDIT_EXPORT_DIR/<id>/``, updates ``progress`` as it
    goes and zips the bundle for download.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account_id = models.CharField(max_length=12)
    requested_by = models.CharField(max_length=256)
    format = models.CharField(max_length=16)
    filter = models.JSONField(default=dict)
    state = models.CharField(max_length=8, choices=ExportState.choices, default=ExportState.QUEUED)
    progress = models.PositiveBigIntegerField(default=0)
    total = models.PositiveBigIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"export {self.id} ({self.state})"

    @property
    def percent(self) -> int:
        if self.state == ExportState.DONE:
            return 100
        return min(99, self.progress * 100 // self.total) if self.total else 0


class JobOutcome(models.TextChoices):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


class JobRun(models.Model):
    """One run of a background job (beat or ``run_job``), for the Jobs page.

    Written only by ``audit.services.jobs.job_run``: a row is created when
    the job starts (``running``) and finished with its outcome, its counts
    (what the job did: ``{"rotated": 3}``) or its error.
    """

    name = models.CharField(max_length=64)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=8, choices=JobOutcome.choices, default=JobOutcome.RUNNING)
    error = models.TextField(blank=True)
    counts = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["name", "-started_at"], name="jobrun_name_started_idx")]

    def __str__(self) -> str:
        return f"{self.name} at {self.started_at:%Y-%m-%d %H:%M:%S} ({self.outcome})"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
