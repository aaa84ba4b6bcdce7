"""What a valid alarm is, and which webhook addresses kmsweb may call.

Shared by the dashboard form (inline errors) and the services (which check
again, whoever calls them). ``check_alarm`` returns ``{field: message}``;
an empty dict means valid. No ORM writes here.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email

from audit.models import AlarmMetric, Comparison, MissingData

MIN_PERIOD, MAX_PERIOD = 60, 86400
MAX_EVALUATION_PERIODS = 100
# CloudWatch caps the evaluation range (periods x period) at one day for
# short periods and seven days for hourly ones; kmsweb keeps the larger cap.
MAX_EVALUATION_RANGE = 7 * 86400
MAX_EMAILS = 10
MIN_SECRET_LENGTH = 16
_ARN = re.compile(r"^arn:aws:iam::\d{12}:(root|(user|role|service)/[\w+=,.@/-]{1,128})$|^kmsweb:system$")
_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")


@dataclass
class AlarmSpec:
    """The settable fields of an alarm (what the form and the services exchange)."""

    name: str
    metric: str
    period: int
    comparison: str
    threshold: float
    evaluation_periods: int = 1
    datapoints_to_alarm: int = 1
    treat_missing_data: str = MissingData.MISSING
    description: str = ""
    key_id: str = ""
    operation: str = ""
    principal_arn: str = ""
    error_code: str = ""
    actions_enabled: bool = True
    emails: list[str] = field(default_factory=list)
    webhook_url: str = ""
    # Write-only: None keeps the stored secret, a string replaces it.
    webhook_secret: str | None = None

    def public(self) -> dict[str, Any]:
        """The spec for audit events (CloudTrail-style member names): everything but the secret."""
        data = {_member(k): v for k, v in self.__dict__.items() if k != "webhook_secret"}
        data["WebhookSecretChanged"] = self.webhook_secret is not None
        return data


# CloudWatch's PutMetricAlarm names, where kmsweb has the same field.
_MEMBERS = {
    "name": "AlarmName",
    "description": "AlarmDescription",
    "metric": "MetricName",
    "comparison": "ComparisonOperator",
    "treat_missing_data": "TreatMissingData",
}


def _member(name: str) -> str:
    return _MEMBERS.get(name) or "".join(part.title() for part in name.split("_"))


class UnsafeUrl(Exception):
    """A webhook URL kmsweb refuses to call."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# NAT64's well-known prefix (RFC 6052) and the deprecated IPv4-compatible
# form (RFC 4291): the last 32 bits are an IPv4 address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, and so may reach through a
    tunnel or translator: IPv4-mapped, 6to4, Teredo (server and client),
    NAT64 and IPv4-compatible forms."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def address_blocked(address: IPAddress) -> bool:
    """Whether kmsweb refuses to call ``address``: loopback, private,
    link-local, multicast, reserved, unspecified or otherwise not global,
    or an IPv6 address that embeds such an IPv4 address (``2002:7f00:1::``
    is 6to4 for 127.0.0.1). An IPv4-mapped address is judged as its IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_blocked(address.ipv4_mapped)
        if any(address_blocked(inner) for inner in embedded_ipv4(address)):
            return True
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def resolve_webhook(url: str) -> tuple[str, str, int, list[str]]:
    """Check ``url`` and resolve its host: ``(scheme, host, port, addresses)``.

    Refuses what is not http(s), carries credentials, or resolves to any
    loopback, private, link-local or otherwise non-public address, or an
    IPv6 address embedding one (:func:`address_blocked`; all of a name's
    addresses must be public: an attacker's DNS may return several),
    unless ``KMSWEB_WEBHOOK_ALLOW_PRIVATE`` is true. Called when an alarm is
    saved and again before each delivery, whose connection then goes to the
    addresses checked here (no second lookup, so no DNS rebinding).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"Not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("Use an http:// or https:// URL.")
    if not parts.hostname:
        raise UnsafeUrl("The URL needs a host name.")
    if parts.username or parts.password:
        raise UnsafeUrl("Put no user name or password in the URL; the request is signed instead.")
    port = port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeUrl(f"The host '{host}' does not resolve.") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise UnsafeUrl(f"The host '{host}' does not resolve.")
    if not settings.KMSWEB_WEBHOOK_ALLOW_PRIVATE:
        for text in addresses:
            if address_blocked(ipaddress.ip_address(text.split("%", 1)[0])):
                raise UnsafeUrl(
                    f"'{host}' resolves to {text}, a loopback, private or link-local address: "
                    "kmsweb only calls public addresses (see KMSWEB_WEBHOOK_ALLOW_PRIVATE)."
                )
    return parts.scheme, host, port, addresses


def check_alarm(
    spec: AlarmSpec, *, creating: bool, has_secret: bool, known_operations: frozenset[str]
) -> dict[str, str]:
    """Field errors of ``spec`` (empty when valid)."""
    errors: dict[str, str] = {}
    if not spec.name.strip():
        errors["name"] = "Give the alarm a name."
    elif len(spec.name) > 255:
        errors["name"] = "At most 255 characters."
    if spec.metric not in AlarmMetric.values:
        errors["metric"] = f"Unknown metric '{spec.metric}'."
    if spec.comparison not in Comparison.values:
        errors["comparison"] = f"Unknown comparison '{spec.comparison}'."
    if spec.treat_missing_data not in MissingData.values:
        errors["treat_missing_data"] = f"Unknown missing-data treatment '{spec.treat_missing_data}'."
    if spec.period <= 0:
        errors["period"] = "The period must be positive."
    elif not (MIN_PERIOD <= spec.period <= MAX_PERIOD) or spec.period % 60:
        errors["period"] = "The period is a whole number of minutes from 60 to 86400 seconds."
    if not (1 <= spec.evaluation_periods <= MAX_EVALUATION_PERIODS):
        errors["evaluation_periods"] = f"Evaluate 1 to {MAX_EVALUATION_PERIODS} periods."
    elif spec.period > 0 and spec.period * spec.evaluation_periods > MAX_EVALUATION_RANGE:
        errors["evaluation_periods"] = "Periods x evaluation periods may cover at most 7 days."
    if spec.datapoints_to_alarm < 1:
        errors["datapoints_to_alarm"] = "At least 1 datapoint."
    elif spec.datapoints_to_alarm > spec.evaluation_periods:
        errors["datapoints_to_alarm"] = "Datapoints to alarm cannot exceed the evaluation periods."
    if not math.isfinite(spec.threshold):
        errors["threshold"] = "The threshold must be a number."
    if spec.key_id:
        try:
            uuid.UUID(spec.key_id)
        except ValueError:
            errors["key_id"] = "A key id is a UUID (e.g. 1234abcd-12ab-34cd-56ef-1234567890ab)."
    if spec.operation and spec.operation not in known_operations:
        errors["operation"] = f"'{spec.operation}' is not a KMS operation."
    if spec.principal_arn and not _ARN.match(spec.principal_arn):
        errors["principal_arn"] = "A principal ARN looks like arn:aws:iam::111122223333:user/name."
    if spec.error_code and not _ERROR_CODE.match(spec.error_code):
        errors["error_code"] = "An error code is a word such as AccessDeniedException."
    if len(spec.emails) > MAX_EMAILS:
        errors["emails"] = f"At most {MAX_EMAILS} addresses."
    for address in spec.emails:
        try:
            validate_email(address)
        except DjangoValidationError:
            errors["emails"] = f"'{address}' is not a valid email address."
            break
    if spec.webhook_url:
        if len(spec.webhook_url) > 2048:
            errors["webhook_url"] = "At most 2048 characters."
        else:
            try:
                resolve_webhook(spec.webhook_url)
            except UnsafeUrl as exc:
                errors["webhook_url"] = str(exc)
        if spec.webhook_secret is not None and len(spec.webhook_secret) < MIN_SECRET_LENGTH:
            errors["webhook_secret"] = f"Use a secret of at least {MIN_SECRET_LENGTH} characters."
        elif spec.webhook_secret is None and (creating or not has_secret):
            errors["webhook_secret"] = "A webhook needs a signing secret."  # noqa: S105 (a message)
    return errors


def spec_from(data: Mapping[str, Any]) -> AlarmSpec:
    """An ``AlarmSpec`` from cleaned form data (or a similar mapping)."""
    names = AlarmSpec.__dataclass_fields__
    return AlarmSpec(**{k: v for k, v in data.items() if k in names})
