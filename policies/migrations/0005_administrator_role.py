"""The administrator role (principals, policies, access keys) as a group."""

from django.db import migrations


def create_role(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name="administrator")


class Migration(migrations.Migration):
    dependencies = [("policies", "0004_authorization")]

    operations = [migrations.RunPython(create_role, migrations.RunPython.noop)]
