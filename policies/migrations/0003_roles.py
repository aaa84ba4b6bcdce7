"""The dashboard's roles as Django groups."""

from django.db import migrations

ROLES = ("viewer", "key-admin", "approver", "auditor")


def create_roles(apps, schema_editor):
    group = apps.get_model("auth", "Group")
    for name in ROLES:
        group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [("policies", "0002_totp_device"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
