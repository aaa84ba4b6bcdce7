from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    """Accounts, principals, access keys and (later) policies and grants."""

    name = "policies"
    default_auto_field = "django.db.models.BigAutoField"
