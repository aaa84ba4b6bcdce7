"""The Celery application: workers and beat run kmsweb's background jobs."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")

app = Celery("kmsweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
