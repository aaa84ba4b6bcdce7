"""kmsweb: a self-hosted, AWS-KMS-compatible key management service."""

from kmsweb.celery import app as celery_app

__all__ = ["celery_app"]
