from django.apps import AppConfig


class KeysConfig(AppConfig):
    """Keys, their material, aliases and tags."""

    name = "keys"
    default_auto_field = "django.db.models.BigAutoField"
