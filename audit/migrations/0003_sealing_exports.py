"""Digests, signing keys, archives and export jobs; the Audit page's indexes;
on PostgreSQL, triggers that keep events and digests append-only."""

from django.db import migrations, models
import uuid

APPEND_ONLY = """
CREATE OR REPLACE FUNCTION kmsweb_audit_append_only() RETURNS trigger AS $$
BEGIN
    -- The retention job deletes archived ranges with this session setting on.
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_auditevent'
       AND current_setting('kmsweb.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION kmsweb_audit_append_only();
CREATE TRIGGER audit_digest_append_only BEFORE UPDATE OR DELETE ON audit_auditdigest
    FOR EACH ROW EXECUTE FUNCTION kmsweb_audit_append_only();
"""
DROP_APPEND_ONLY = """
DROP TRIGGER IF EXISTS audit_event_append_only ON audit_auditevent;
DROP TRIGGER IF EXISTS audit_digest_append_only ON audit_auditdigest;
DROP FUNCTION IF EXISTS kmsweb_audit_append_only();
"""


def add_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPEND_ONLY, params=None)


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_APPEND_ONLY, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0002_search_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditArchive",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("first_sequence", models.PositiveIntegerField()),
                ("last_sequence", models.PositiveIntegerField(unique=True)),
                ("last_event_id", models.BigIntegerField()),
                ("event_count", models.PositiveIntegerField()),
                ("oldest_event_time", models.DateTimeField()),
                ("newest_event_time", models.DateTimeField()),
                ("path", models.CharField(max_length=1024)),
                ("manifest_sha256", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField()),
            ],
            options={"ordering": ["last_sequence"]},
        ),
        migrations.CreateModel(
            name="AuditDigest",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("sequence", models.PositiveIntegerField(unique=True)),
                ("first_event_id", models.BigIntegerField()),
                ("last_event_id", models.BigIntegerField()),
                ("oldest_event_time", models.DateTimeField()),
                ("newest_event_time", models.DateTimeField()),
                ("event_count", models.PositiveIntegerField()),
                ("leaves", models.BinaryField()),
                ("events_sha256", models.CharField(max_length=64)),
                ("previous_digest_sha256", models.CharField(blank=True, max_length=64)),
                ("previous_digest_signature", models.TextField(blank=True)),
                ("digest_start_time", models.DateTimeField()),
                ("digest_end_time", models.DateTimeField()),
                ("key_fingerprint", models.CharField(max_length=64)),
                ("digest_sha256", models.CharField(max_length=64)),
                ("signature", models.TextField()),
            ],
            options={"ordering": ["sequence"]},
        ),
        migrations.CreateModel(
            name="AuditExport",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("account_id", models.CharField(max_length=12)),
                ("requested_by", models.CharField(max_length=256)),
                ("format", models.CharField(max_length=16)),
                ("filter", models.JSONField(default=dict)),
                (
                    "state",
                    models.CharField(
                        choices=[("queued", "Queued"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")],
                        default="queued",
                        max_length=8,
                    ),
                ),
                ("progress", models.PositiveBigIntegerField(default=0)),
                ("total", models.PositiveBigIntegerField(default=0)),
                ("error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField()),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"ordering": ["-created_at"]},
        ),
        migrations.CreateModel(
            name="SigningKey",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("fingerprint", models.CharField(max_length=64, unique=True)),
                ("public_pem", models.TextField()),
                ("private_key_ciphertext", models.BinaryField()),
                ("created_at", models.DateTimeField()),
                ("retired_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["created_at", "id"],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("retired_at__isnull", True)),
                        fields=("retired_at",),
                        name="one_current_signing_key",
                    )
                ],
            },
        ),
        migrations.AlterField(model_name="auditevent", name="event_name", field=models.CharField(max_length=64)),
        migrations.AlterField(model_name="auditevent", name="event_time", field=models.DateTimeField()),
        migrations.AlterField(
            model_name="auditevent", name="principal_arn", field=models.CharField(blank=True, max_length=256)
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["event_time", "id"], name="audit_time_id_idx"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["event_name", "event_time", "id"], name="audit_name_time_idx"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["principal_arn", "event_time", "id"], name="audit_principal_time_idx"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["source_ip", "event_time", "id"], name="audit_ip_time_idx"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                condition=models.Q(("error_code", ""), _negated=True),
                fields=["error_code", "event_time", "id"],
                name="audit_error_time_idx",
            ),
        ),
        migrations.RunPython(add_triggers, drop_triggers),
    ]
