"""The one clock background jobs read.

Jobs take ``now`` from here (once per run) instead of calling
``timezone.now()`` themselves, so a test moves time for every job at once
with time-machine, and an operator's ``run_job`` sees the same clock as beat.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return timezone.now()
