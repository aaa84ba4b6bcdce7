"""WSGI entry point (gunicorn kmsweb.wsgi).

Django's handler, with KMS API calls answered ahead of its request cycle
(``kmsweb.api.wsgi``).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
django.setup(set_prefix=False)

from kmsweb.api.wsgi import KmswebWSGIHandler  # noqa: E402 - needs the apps loaded

application = KmswebWSGIHandler()
