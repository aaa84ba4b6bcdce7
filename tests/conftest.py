"""Shared fixtures: personas, callers, and boto3 clients against a live server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import pytest
from botocore.config import Config
from django.conf import settings
from django.db import connection

from keys import services as key_services
from keys.models import Key
from keys.services.platform import platform_cache_clear
from kmsweb.lib.caller import Caller
from policies.models import Account, Principal
from policies.services import FULL_ACCESS_POLICY, access_key_create, identity_policy_put
from tests.factories import AccountFactory, PrincipalFactory

REGION = "us-east-1"
OTHER_ACCOUNT = "444455556666"

# Fixtures shared across the test folders, defined outside a conftest; pytest
# honours pytest_plugins only in the root conftest.
pytest_plugins = ["tests.dashboard_fixtures"]

REDIS_DATABASES = 16  # Redis's default `databases`


def worker_redis_url(url: str, worker: str) -> str:
    """REDIS_URL for the pytest-xdist worker ``worker`` ("gw0", "gw1", ...).

    Each worker counts down from the URL's database (CI's /15 gives 15, 14),
    so workers never share rate-limit windows, Celery queues or pidbox
    replies, and the default database 0 is reached last.
    """
    index = int(worker.removeprefix("gw"))
    if index >= REDIS_DATABASES:
        raise pytest.UsageError(f"{REDIS_DATABASES} Redis databases are not enough for xdist worker {worker}")
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(base - index) % REDIS_DATABASES}"))


def pytest_configure(config: pytest.Config) -> None:
    # pytest-django loaded the settings before this conftest: change them, and
    # the environment that child processes (gunicorn nodes, Celery) inherit.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or not settings.REDIS_URL:
        return
    url = worker_redis_url(settings.REDIS_URL, worker)
    os.environ["REDIS_URL"] = url
    settings.REDIS_URL = url
    settings.CELERY_BROKER_URL = url
    from kmsweb import celery_app

    if celery_app.configured:
        celery_app.conf.broker_url = url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip PostgreSQL/Redis tests where those are not configured, except in CI.

    With KMSWEB_REQUIRE_SERVICES=true (set by .ci/run) a missing service is a
    failure, so CI can never go green by skipping them.
    """
    require = os.environ.get("KMSWEB_REQUIRE_SERVICES") == "true"
    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    has_redis = bool(settings.REDIS_URL)
    for item in items:
        for marker, available, what in (
            ("postgres", on_postgres, "DATABASE_URL=postgres://…"),
            ("redis", has_redis, "REDIS_URL"),
        ):
            if item.get_closest_marker(marker) and not available:
                if require:
                    raise pytest.UsageError(f"{item.nodeid} needs {what}, and KMSWEB_REQUIRE_SERVICES=true")
                item.add_marker(pytest.mark.skip(reason=f"needs {what}"))


@pytest.fixture(scope="session", autouse=True)
def _live_servers_run_kmswebs_handler() -> Iterator[None]:
    """Live servers serve through kmsweb's own WSGI handler, as gunicorn does.

    Django's LiveServerThread builds a plain ``WSGIHandler``; the API's calls
    would then go through Django's request cycle (``AwsApiMiddleware``)
    instead of the shorter path production takes (``kmsweb.api.wsgi``).
    """
    import django.test.testcases as testcases

    from tests.live_server import CountingHandler, CountingServer  # counting requests in flight

    original = testcases.WSGIHandler, testcases.LiveServerThread.server_class
    testcases.WSGIHandler = CountingHandler
    testcases.LiveServerThread.server_class = CountingServer
    yield
    testcases.WSGIHandler, testcases.LiveServerThread.server_class = original


@pytest.fixture(autouse=True)
def _audit_anchor(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Each test's database is new: so is its audit anchor (never the repository's var/).
    settings.KMSWEB_AUDIT_ANCHOR_FILE = tmp_path_factory.mktemp("anchor") / "audit_anchor.log"


@pytest.fixture(autouse=True)
def _api_caches_on(settings: Any) -> Iterator[None]:
    """The API's per-process caches are on, as in production, whatever the environment says.

    Sixty seconds, so that no test passes because an entry expired: a change
    must reach the live server through its generation (kmsweb.generations).
    Each test starts with empty caches (its database is new).
    """
    settings.KMSWEB_AUTH_CACHE_SECONDS = 60
    forget_api_caches()
    yield
    forget_api_caches()


def forget_api_caches() -> None:
    """Empty the API's per-process caches."""
    from keys.selectors import KEY_CACHE
    from policies.authorization import GRANT_CACHE, IDENTITY_POLICY_CACHE
    from policies.services.principals import ACCESS_KEY_CACHE

    for cache in (KEY_CACHE, ACCESS_KEY_CACHE, IDENTITY_POLICY_CACHE, GRANT_CACHE):
        cache.invalidate()


@pytest.fixture(autouse=True)
def _fresh_platform_cache() -> Iterator[None]:
    # Platform key material is cached per process; each test's database is new.
    from audit.context_processors import sealing_cache_clear

    platform_cache_clear()
    sealing_cache_clear()
    yield
    platform_cache_clear()
    sealing_cache_clear()


@dataclass(frozen=True)
class Persona:
    """A principal with an access key, and a Caller as the API would build it."""

    principal: Principal
    access_key_id: str
    secret: str

    @property
    def account_id(self) -> str:
        return self.principal.account_id

    def caller(self, region: str = REGION, **overrides: Any) -> Caller:
        values: dict[str, Any] = {
            "principal_arn": self.principal.arn,
            "account_id": self.principal.account_id,
            "region": region,
            "origin": "api",
            "principal_type": self.principal.type,
            "principal_name": self.principal.name,
            "principal_pk": self.principal.pk,
            "access_key_id": self.access_key_id,
            "source_ip": "127.0.0.1",
            "user_agent": "pytest",
        }
        values.update(overrides)
        return Caller(**values)


def _persona(account_id: str, name: str, policy: str | None = FULL_ACCESS_POLICY) -> Persona:
    """A principal with an access key and, by default, an inline kms:* policy
    (the default key policy delegates to identity policies, as in AWS)."""
    account = AccountFactory(id=account_id)
    principal = PrincipalFactory(account=account, name=name)
    system = Caller.system("tests", account_id=account.id)
    if policy is not None:
        identity_policy_put(caller=system, account=account, name="FullKmsAccess", document=policy, principal=principal)
    key, secret = access_key_create(caller=system, principal=principal)
    return Persona(principal=principal, access_key_id=key.access_key_id, secret=secret)


@pytest.fixture
def key_admin(db: None) -> Persona:
    """A principal of the default account (full rights until policies land)."""
    return _persona(settings.KMSWEB_ACCOUNT_ID, "key-admin")


@pytest.fixture
def outsider(db: None) -> Persona:
    """A principal of another account (kms:* in its own account)."""
    return _persona(OTHER_ACCOUNT, "outsider")


@pytest.fixture
def make_persona(db: None) -> Callable[..., Persona]:
    """Principals with chosen identity policies: make_persona("bob", policy=None)."""

    def make(name: str, *, account_id: str | None = None, policy: str | None = None) -> Persona:
        return _persona(account_id or settings.KMSWEB_ACCOUNT_ID, name, policy)

    return make


@pytest.fixture
def account(key_admin: Persona) -> Account:
    return key_admin.principal.account


@pytest.fixture
def make_key(key_admin: Persona) -> Callable[..., Key]:
    """Create a customer managed key through the service, as key_admin."""

    def make(persona: Persona | None = None, **kwargs: Any) -> Key:
        who = persona or key_admin
        return key_services.key_create(caller=who.caller(), **kwargs)

    return make


@pytest.fixture
def kms_client(live_server: Any) -> Callable[..., Any]:
    """A factory of boto3 KMS clients pointed at the live server."""

    def make(persona: Persona, *, region: str = REGION, validate: bool = True, **config: Any) -> Any:
        return boto3.client(
            "kms",
            endpoint_url=live_server.url,
            region_name=region,
            aws_access_key_id=persona.access_key_id,
            aws_secret_access_key=persona.secret,
            config=Config(retries={"total_max_attempts": 1}, parameter_validation=validate, **config),
        )

    return make


@pytest.fixture
def kms(kms_client: Callable[..., Any], key_admin: Persona) -> Any:
    """key_admin's boto3 client."""
    return kms_client(key_admin)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"
