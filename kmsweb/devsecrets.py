"""Create the secrets ``make run`` and ``make test`` need, once, under var/.

Run as ``python -m kmsweb.devsecrets DIR``. Existing files are kept:
a root key that changed would orphan every key it wrapped.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from keys.crypto.rootkey import generate_root_key


def ensure_secrets(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    secret_key = directory / "django_secret_key"
    if not secret_key.exists():
        fd = os.open(secret_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(50) + "\n")
    root_key = directory / "root_key"
    if not root_key.exists():
        generate_root_key(root_key)


if __name__ == "__main__":
    ensure_secrets(Path(sys.argv[1] if len(sys.argv) > 1 else "var"))
