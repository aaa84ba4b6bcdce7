"""The KMS operations, from the KMS service model that botocore ships.

The model is the one boto3 itself uses. The API adapter (``kmsweb.api.shapes``)
validates and serializes against it; the audit trail's alarms name the
operations they watch from it.
"""

from __future__ import annotations

from functools import cache

from botocore.model import ServiceModel
from botocore.session import get_session


@cache
def service_model() -> ServiceModel:
    """The KMS service model, loaded from botocore's data once per process."""
    return get_session().get_service_model("kms")


@cache
def operation_names() -> frozenset[str]:
    """Every KMS operation name, e.g. ``"Encrypt"``."""
    return frozenset(service_model().operation_names)
