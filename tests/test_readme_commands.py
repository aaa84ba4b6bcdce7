"""README's ``manage.py`` lines work as written beside ``make run``: from a
clean environment (no secrets exported, no DATABASE_URL), with only the
files ``make run`` leaves under var/."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from django.conf import settings

PREFIX = ".venv/bin/python manage.py "
PASSWORD = "correct horse battery staple"


def readme_commands() -> list[str]:
    """Every line of a fenced block in README.md that runs manage.py."""
    readme = (settings.BASE_DIR / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", readme, re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith(PREFIX)]


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Fixed argv from README.md (this repository's file), no shell.
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)  # noqa: S603


def test_it_runs_the_readmes_manage_py_lines_with_nothing_exported(tmp_path: Path) -> None:
    commands = readme_commands()
    assert len(commands) >= 5, commands
    var = tmp_path / "var"
    # Only what a shell has, plus where this test's var/ is (make run's is the repository's var/).
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env["KMSWEB_VAR_DIR"] = str(var)
    manage = str(settings.BASE_DIR / "manage.py")
    python = sys.executable
    (tmp_path / "pw.txt").write_text(PASSWORD + "\n", encoding="utf-8")
    # What make run does before it serves: secrets, schema, the admin.
    secrets = _run([python, "-m", "kmsweb.devsecrets", str(var)], settings.BASE_DIR, env)
    assert secrets.returncode == 0, secrets.stderr[-3000:]
    for argv in (
        [python, manage, "migrate", "--noinput"],
        [python, manage, "bootstrap", "--password-file", "pw.txt"],
        [python, manage, "ensure_demo_key"],
    ):
        done = _run(argv, tmp_path, env)
        assert done.returncode == 0, (argv, done.stderr[-3000:])

    for line in commands:
        args = shlex.split(line[len(PREFIX) :], comments=True)
        done = _run([python, manage, *args], tmp_path, env)
        assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-3000:])
        assert "Traceback" not in done.stderr, (line, done.stderr[-3000:])


def test_settings_without_the_secret_files_refuse_to_start(tmp_path: Path) -> None:
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env["KMSWEB_VAR_DIR"] = str(tmp_path / "empty")
    done = _run([sys.executable, str(settings.BASE_DIR / "manage.py"), "check"], tmp_path, env)
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE must be set" in done.stderr
