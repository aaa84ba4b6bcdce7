"""factory_boy factories for rows that need no crypto.

Keys and access keys are made through their services (their material and
secrets must be wrapped for real), see the fixtures in conftest.py.
"""

from __future__ import annotations

import factory

from policies.models import Account, Principal, PrincipalType


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account
        django_get_or_create = ("id",)

    id = factory.Sequence(lambda n: f"{222200000000 + n:012d}")
    name = factory.Sequence(lambda n: f"account-{n}")


class PrincipalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Principal

    account = factory.SubFactory(AccountFactory)
    name = factory.Sequence(lambda n: f"user{n}")
    type = PrincipalType.USER
