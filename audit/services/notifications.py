"""Alarm notifications: an email per address and a signed webhook POST per
transition, delivered by a Celery task with retries and a log of every try.

Webhook requests carry ``X-Kmsweb-Timestamp`` (Unix seconds) and
``X-Kmsweb-Signature: sha256=<hex>``, the HMAC-SHA256 of
``<timestamp>.<body>`` under the alarm's secret (docs/ALARMS.md shows how to
verify it). The URL is checked again before each try, and the connection
goes to the addresses that check resolved, so a name re-pointed at an
internal address after the alarm was saved (DNS rebinding) is refused.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.urls import reverse

from audit.alarm_rules import UnsafeUrl, resolve_webhook
from audit.models import Alarm, AlarmHistory, Channel, DeliveryAttempt, DeliveryStatus, Notification
from kmsweb.lib import clock
from kmsweb.lib.errors import KmsError
from kmsweb.lib.public_url import public_url

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Kmsweb-Signature"
TIMESTAMP_HEADER = "X-Kmsweb-Timestamp"
MAX_ERROR_CHARS = 1000
MAX_RESPONSE_BYTES = 64 * 1024


def payload_for(alarm: Alarm, transition: AlarmHistory) -> dict[str, Any]:
    """What a notification says (the webhook's JSON body; the email's facts). No secrets."""
    return {
        "version": "1",
        "alarmId": alarm.pk,
        "alarmName": alarm.name,
        "accountId": alarm.account_id,
        "oldState": transition.old_state,
        "newState": transition.new_state,
        "reason": transition.reason,
        "reasonData": transition.reason_data,
        "timestamp": transition.timestamp.isoformat(),
        "metric": alarm.metric,
        "filters": {
            "keyId": alarm.key_id or None,
            "operation": alarm.operation or None,
            "principalArn": alarm.principal_arn or None,
            "errorCode": alarm.error_code or None,
        },
        "comparison": alarm.comparison,
        "threshold": alarm.threshold,
        "period": alarm.period,
        "evaluationPeriods": alarm.evaluation_periods,
        "datapointsToAlarm": alarm.datapoints_to_alarm,
        "url": public_url(reverse("audit:alarm_detail", args=[alarm.pk])),
    }


def notifications_queue(*, alarm: Alarm, transition: AlarmHistory) -> list[Notification]:
    """Create the transition's notifications and enqueue their delivery on commit.

    Called inside the transition's transaction: a rolled-back transition
    sends nothing, and the task only ever gets a notification id.
    """
    from audit.tasks import notification_deliver_task

    now = clock.now()
    payload = payload_for(alarm, transition)
    rows = [
        Notification(alarm=alarm, transition=transition, channel=Channel.EMAIL, target=address, payload=payload)
        for address in alarm.emails
    ]
    if alarm.webhook_url:
        rows.append(
            Notification(
                alarm=alarm, transition=transition, channel=Channel.WEBHOOK, target=alarm.webhook_url, payload=payload
            )
        )
    for row in rows:
        row.created_at = now
    made = Notification.objects.bulk_create(rows)
    for row in made:
        transaction.on_commit(functools.partial(notification_deliver_task.delay, row.pk))
    return made


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 over ``timestamp.body``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address checked beforehand, whatever DNS says now."""

    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=settings.KMSWEB_WEBHOOK_READ_TIMEOUT)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection(
            (self._address, self.port), timeout=settings.KMSWEB_WEBHOOK_CONNECT_TIMEOUT
        )
        self.sock.settimeout(settings.KMSWEB_WEBHOOK_READ_TIMEOUT)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a pre-checked address, verifying the certificate for the URL's host name."""

    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=settings.KMSWEB_WEBHOOK_READ_TIMEOUT, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), timeout=settings.KMSWEB_WEBHOOK_CONNECT_TIMEOUT)
        raw.settimeout(settings.KMSWEB_WEBHOOK_READ_TIMEOUT)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass
class _Result:
    ok: bool
    response_code: int | None = None
    error: str = ""
    retry: bool = True


def _post_webhook(notification: Notification, alarm: Alarm) -> _Result:
    from audit.services.alarms import webhook_secret

    try:
        scheme, host, port, addresses = resolve_webhook(notification.target)
    except UnsafeUrl as exc:
        # A refusal is not a transient failure: no retry.
        return _Result(False, error=f"Refused: {exc}", retry=False)
    body = json.dumps(notification.payload, sort_keys=True, separators=(",", ":")).encode()
    try:
        secret = webhook_secret(alarm)
    except KmsError as exc:
        # No secret (removed since), or one that fails its integrity check: never send unsigned.
        return _Result(False, error=f"Not sent: {exc.message}", retry=False)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "kmsweb-alarms/1",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "X-Kmsweb-Delivery": str(notification.pk),
    }
    parts = urlsplit(notification.target)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    conn = connection_class(host, port, addresses[0])
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        kind = "timed out" if isinstance(exc, TimeoutError | socket.timeout) else type(exc).__name__
        return _Result(False, error=f"{kind}: {exc}"[:MAX_ERROR_CHARS])
    finally:
        conn.close()
    if 200 <= status < 300:
        return _Result(True, response_code=status)
    return _Result(False, response_code=status, error=f"HTTP {status}")


def _send_email(notification: Notification) -> _Result:
    p = notification.payload
    subject = f'[kmsweb] ALARM: "{p["alarmName"]}" is now {p["newState"]}'
    body = (
        f'The alarm "{p["alarmName"]}" in account {p["accountId"]} changed from {p["oldState"]} '
        f"to {p['newState']} at {p['timestamp']}.\n\n"
        f"Reason: {p['reason']}\n\n"
        f"Metric: {p['metric']} (Sum over {p['period']} s), threshold {p['comparison']} {p['threshold']}, "
        f"{p['datapointsToAlarm']} of {p['evaluationPeriods']} datapoints.\n\n"
        f"Open the alarm: {p['url']}\n"
    )
    try:
        EmailMessage(subject, body, to=[notification.target]).send()
    except Exception as exc:  # any backend failure is a failed try, retried
        return _Result(False, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
    return _Result(True)


def notification_deliver(*, notification_id: int) -> tuple[Notification | None, int | None]:
    """Try to deliver one notification once; returns it and the retry delay (None: done).

    Claims the try with a conditional update on ``attempts``, so two
    workers never make the same try twice. Every try is logged as a
    ``DeliveryAttempt``; after ``KMSWEB_NOTIFICATION_MAX_ATTEMPTS`` failed
    tries the notification is ``failed``. Delays double from
    ``KMSWEB_NOTIFICATION_BACKOFF_SECONDS``.
    """
    row = Notification.objects.select_related("alarm").filter(pk=notification_id).first()
    if row is None or row.status not in (DeliveryStatus.PENDING, DeliveryStatus.RETRYING):
        return row, None
    number = row.attempts + 1
    claimed = Notification.objects.filter(pk=row.pk, attempts=row.attempts, status=row.status).update(attempts=number)
    if claimed != 1:
        return row, None
    started = time.monotonic()
    attempted_at = clock.now()
    result = _post_webhook(row, row.alarm) if row.channel == Channel.WEBHOOK else _send_email(row)
    duration_ms = int((time.monotonic() - started) * 1000)
    max_attempts = settings.KMSWEB_NOTIFICATION_MAX_ATTEMPTS
    if result.ok:
        status = DeliveryStatus.DELIVERED
    elif result.retry and number < max_attempts:
        status = DeliveryStatus.RETRYING
    else:
        status = DeliveryStatus.FAILED
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            notification=row,
            number=number,
            attempted_at=attempted_at,
            ok=result.ok,
            response_code=result.response_code,
            error=result.error,
            duration_ms=duration_ms,
        )
        done = {} if status == DeliveryStatus.RETRYING else {"finished_at": clock.now()}
        Notification.objects.filter(pk=row.pk).update(status=status, **done)
    if not result.ok:
        logger.warning("alarm notification %s (%s) try %d failed: %s", row.pk, row.channel, number, result.error)
    row.refresh_from_db()
    if status == DeliveryStatus.RETRYING:
        return row, settings.KMSWEB_NOTIFICATION_BACKOFF_SECONDS * 2 ** (number - 1)
    return row, None
