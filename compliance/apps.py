from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    """Compliance rules, their evaluation job, findings and suppressions."""

    name = "compliance"
    default_auto_field = "django.db.models.BigAutoField"
