"""The secrets this test process runs with, as the environment of a child process names them."""

from __future__ import annotations

import os

from django.conf import settings


def secret_files_env() -> dict[str, str]:
    """``DJANGO_SECRET_KEY_FILE`` and ``KMSWEB_ROOT_KEY_FILE`` (or the keys themselves) for a subprocess.

    The files come from the environment when it names them, else from the
    var/ directory the settings found them in (``make test`` exports only
    ``KMSWEB_VAR_DIR``), so a child given another var/ still has them.
    """
    env = {name: os.environ[name] for name in ("DJANGO_SECRET_KEY", "KMSWEB_ROOT_KEY") if name in os.environ}
    for name, default in (
        ("DJANGO_SECRET_KEY_FILE", settings.VAR_DIR / "django_secret_key"),
        ("KMSWEB_ROOT_KEY_FILE", settings.VAR_DIR / "root_key"),
    ):
        if name in os.environ:
            env[name] = os.environ[name]
        elif default.exists():
            env[name] = str(default)
    return env
