"""Fixtures of the key tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keys.services.material import root_keyring_forget
from keys.services.platform import platform_cache_clear


@pytest.fixture
def root_key_file(tmp_path: Path, settings: Any) -> Iterator[Path]:
    """The suite's root key, copied to a file this test may rotate."""
    path = tmp_path / "root_key"
    path.write_text(settings.KMSWEB_ROOT_KEY + "\n", encoding="utf-8")
    path.chmod(0o600)
    settings.KMSWEB_ROOT_KEY_FILE = str(path)
    root_keyring_forget()
    platform_cache_clear()
    yield path
    root_keyring_forget()
    platform_cache_clear()
