"""Reading settings from the environment (12-factor).

Every setting of kmsweb comes through these helpers, so that a typo such as
``DJANGO_DEBUG=ture`` fails at start-up instead of being read as false.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path


class ImproperlyConfiguredEnv(RuntimeError):
    """An environment variable is present but cannot be understood."""


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value == "true":
        return True
    if value == "false":
        return False
    raise ImproperlyConfiguredEnv(f"{name} must be 'true' or 'false', not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"{name} must be an integer, not {value!r}") from exc


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def env_secret_file(name: str, default_file: Path | None = None) -> str | None:
    """The file named by ``NAME_FILE``; else ``default_file`` if that file exists.

    The default is where ``make run`` generates the file (``var/``), so
    ``manage.py`` finds it without exports; it is never created here, and
    without the file there is no secret.
    """
    path = env_str(f"{name}_FILE")
    if path is not None:
        return path
    if default_file is not None and default_file.is_file():
        return str(default_file)
    return None


def env_secret(name: str, default_file: Path | None = None) -> str | None:
    """Return ``NAME`` or the contents of the file named by ``NAME_FILE`` (or
    of ``default_file``, if it exists: see ``env_secret_file``).

    Secrets have no defaults in code: absent all of them, the caller decides
    whether that is fatal.
    """
    value = env_str(name)
    if value is not None:
        return value
    path = env_secret_file(name, default_file)
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ImproperlyConfiguredEnv(f"{name}_FILE={path!r} cannot be read: {exc}") from exc


def env_job_intervals(name: str, known: list[str]) -> dict[str, float]:
    """``NAME=JOB=SECONDS,...``: jobs to run every SECONDS instead of their schedule.

    Only names in ``known`` (beat's entries) are accepted, with a positive
    number of seconds; anything else fails at start-up.
    """
    intervals: dict[str, float] = {}
    for item in env_list(name):
        job, _, seconds = item.partition("=")
        try:
            every = float(seconds)
        except ValueError:
            every = 0.0
        if job not in known or not every > 0:
            raise ImproperlyConfiguredEnv(
                f"{name}: {item!r} is not JOB=SECONDS with SECONDS > 0 and JOB one of {', '.join(known)}"
            )
        intervals[job] = every
    return intervals


def env_group_roles(name: str, known_roles: Collection[str]) -> dict[str, tuple[str, ...]]:
    """``"group=role,group=role"``: which dashboard roles each identity-provider group gives.

    A group may be named more than once to give several roles. Unknown
    roles fail at start-up, so a typo cannot silently give no access.
    """
    mapping: dict[str, list[str]] = {}
    for item in env_list(name):
        group, sep, role = item.rpartition("=")
        group, role = group.strip(), role.strip()
        if not sep or not group or not role:
            raise ImproperlyConfiguredEnv(f"{name}: write group=role, not {item!r}")
        if role not in known_roles:
            raise ImproperlyConfiguredEnv(f"{name}: unknown role {role!r}; roles are {', '.join(known_roles)}")
        mapping.setdefault(group, [])
        if role not in mapping[group]:
            mapping[group].append(role)
    return {group: tuple(roles) for group, roles in mapping.items()}


def env_rate_limits(name: str, classes: Collection[str], default: dict[str, int]) -> dict[str, int]:
    """``NAME=CLASS=N,...``: requests per second for each quota class; ``off`` for none.

    Classes not named keep ``default``'s value; N = 0 lifts that class's
    limit. Unknown classes and negative or non-integer N fail at start-up.
    """
    value = os.environ.get(name)
    if value is not None and value.strip().lower() == "off":
        return {}
    limits = dict(default)
    for item in env_list(name):
        quota, _, count = item.partition("=")
        quota = quota.strip()
        if quota not in classes or not count.strip().isdigit():
            raise ImproperlyConfiguredEnv(
                f"{name}: {item!r} is not CLASS=N with N a whole number of requests per second "
                f"and CLASS one of {', '.join(classes)} (or write off)"
            )
        limits[quota] = int(count)
    return {quota: n for quota, n in limits.items() if n > 0}
