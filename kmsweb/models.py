"""kmsweb's own bookkeeping tables (the domain's live in keys, policies and audit)."""

from __future__ import annotations

from django.db import models


class CacheGeneration(models.Model):
    """A counter per cached table, bumped in the transaction of every change to it.

    Web processes cache keys, credentials, identity policies and grants for
    the API's hot path; each request reads these counters once and uses a
    cached entry only if it was loaded under the same counter
    (``kmsweb.generations``). Rows are seeded by the migration and
    re-created by the bump if missing.
    """

    name = models.CharField(max_length=32, primary_key=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
