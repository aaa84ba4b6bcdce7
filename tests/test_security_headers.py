"""Strict-Transport-Security: sent on answers served over HTTPS, never over plain HTTP.

HTTPS is the connection's own scheme, or the trusted TLS proxy's
``X-Forwarded-Proto`` once ``KMSWEB_BEHIND_TLS_PROXY`` names one; a client's
``X-Forwarded-Proto`` is not believed otherwise. The defaults come from the
environment, read in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from tests.secret_files import secret_files_env

HSTS = "Strict-Transport-Security"
ONE_YEAR = 365 * 86400
# Pages every client may fetch, a dashboard page (redirects to sign-in) and kmsweb's REST API.
PATHS = ["/login/", "/keys/", "/api/v1/grant-requests/1"]


@pytest.fixture
def hsts(settings: Any) -> Any:
    settings.SECURE_HSTS_SECONDS = ONE_YEAR
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = False
    return settings


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_it_sends_hsts_over_https(hsts: Any, path: str) -> None:
    response = Client().get(path, secure=True)
    assert response[HSTS] == f"max-age={ONE_YEAR}"


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_it_never_sends_hsts_over_plain_http(hsts: Any, path: str) -> None:
    response = Client().get(path, secure=False)
    assert HSTS not in response


@pytest.mark.django_db
def test_it_sends_hsts_behind_the_trusted_tls_proxy(hsts: Any) -> None:
    hsts.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert Client().get("/login/", HTTP_X_FORWARDED_PROTO="https")[HSTS] == f"max-age={ONE_YEAR}"
    assert HSTS not in Client().get("/login/", HTTP_X_FORWARDED_PROTO="http")


@pytest.mark.django_db
def test_it_does_not_believe_a_forwarded_proto_without_a_trusted_proxy(hsts: Any) -> None:
    hsts.SECURE_PROXY_SSL_HEADER = None
    assert HSTS not in Client().get("/login/", HTTP_X_FORWARDED_PROTO="https")


@pytest.mark.django_db
def test_it_adds_include_subdomains_when_asked(hsts: Any) -> None:
    hsts.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    assert Client().get("/login/", secure=True)[HSTS] == f"max-age={ONE_YEAR}; includeSubDomains"


CASES: list[tuple[dict[str, str], list[Any]]] = [
    ({}, [ONE_YEAR, False]),
    ({"KMSWEB_SECURE_COOKIES": "false"}, [0, False]),
    ({"KMSWEB_HSTS_SECONDS": "600", "KMSWEB_HSTS_INCLUDE_SUBDOMAINS": "true"}, [600, True]),
    ({"KMSWEB_SECURE_COOKIES": "false", "KMSWEB_HSTS_SECONDS": "60"}, [60, False]),
]
# Runs kmsweb/settings.py once per environment of argv[1], in one interpreter.
READ_SETTINGS = """
import importlib, json, os, sys
results = []
for env in json.loads(sys.argv[1]):
    for name in ("KMSWEB_SECURE_COOKIES", "KMSWEB_HSTS_SECONDS", "KMSWEB_HSTS_INCLUDE_SUBDOMAINS"):
        os.environ.pop(name, None)
    os.environ.update(env)
    module = importlib.reload(importlib.import_module("kmsweb.settings"))
    results.append([module.SECURE_HSTS_SECONDS, module.SECURE_HSTS_INCLUDE_SUBDOMAINS])
print(json.dumps(results))
"""


def test_it_reads_hsts_settings_from_the_environment() -> None:
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env.update(secret_files_env())
    # Fixed argv, no shell.
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", READ_SETTINGS, json.dumps([case for case, _ in CASES])],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [expected for _, expected in CASES]
