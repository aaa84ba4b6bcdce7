"""WSGI entry point (gunicorn kmsweb.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
application = get_wsgi_application()
