"""README's count of the operations kmsweb serves is the real one."""

from __future__ import annotations

import re

from botocore.session import get_session
from django.conf import settings

from kmsweb.api.handlers import HANDLERS


def _operations_section() -> str:
    readme = (settings.BASE_DIR / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Operations\n(.*?)^## ", readme, re.M | re.S)
    assert match is not None, "README.md has no Operations section"
    return match.group(1)


def test_it_states_how_many_of_the_models_operations_have_a_handler() -> None:
    match = re.search(r"serves (\d+) of the (\d+) operations", _operations_section())
    assert match is not None, "README.md must say 'serves N of the M operations'"
    model_operations = set(get_session().get_service_model("kms").operation_names)
    assert set(HANDLERS) <= model_operations
    assert (int(match.group(1)), int(match.group(2))) == (len(HANDLERS), len(model_operations))


def test_it_names_every_operation_it_serves() -> None:
    section = _operations_section()
    unnamed = sorted(name for name in HANDLERS if not re.search(rf"\b{name}\b", section))
    assert unnamed == [], "name these operations in README.md's Operations section"
