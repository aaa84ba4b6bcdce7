from django.db import migrations, models

NAMES = ("keys", "credentials", "identity", "grants")


def seed(apps, schema_editor):  # type: ignore[no-untyped-def]
    CacheGeneration = apps.get_model("kmsweb", "CacheGeneration")
    CacheGeneration.objects.bulk_create([CacheGeneration(name=name, value=0) for name in NAMES])


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="CacheGeneration",
            fields=[
                ("name", models.CharField(max_length=32, primary_key=True, serialize=False)),
                ("value", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
