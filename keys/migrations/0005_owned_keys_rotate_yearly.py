"""Platform owned keys made before they rotated yearly get the same schedule
new ones get: rotation on, 365 days, next rotation a year after their last
rotation (or creation). Without this the rotation job would never pick them up."""

from datetime import timedelta

from django.db import migrations
from django.db.models import Q

ROTATION_DAYS = 365


def schedule_owned_keys(apps, schema_editor):
    Key = apps.get_model("keys", "Key")
    unscheduled = Key.objects.filter(manager="OWNED", deleted_at__isnull=True).filter(
        Q(next_rotation_at__isnull=True) | Q(rotation_enabled=False)
    )
    for key in unscheduled:
        since = key.last_rotated_at or key.created_at
        key.rotation_enabled = True
        key.rotation_period_days = ROTATION_DAYS
        key.next_rotation_at = since + timedelta(days=ROTATION_DAYS)
        key.save(update_fields=["rotation_enabled", "rotation_period_days", "next_rotation_at"])


class Migration(migrations.Migration):
    dependencies = [("keys", "0004_imported_material")]

    operations = [migrations.RunPython(schedule_owned_keys, migrations.RunPython.noop)]
