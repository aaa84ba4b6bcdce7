"""Alarm notifications: a signed webhook POST verified by a real local HTTP
receiver, retries on 500 and on a hanging endpoint, refusal of private
addresses (at save and at delivery), the email, and the delivery log.

The Celery task runs eagerly (the task's own code, retries included; only
the broker hop is skipped), enqueued by ``transaction.on_commit``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import time_machine

from audit.alarm_rules import AlarmSpec
from audit.models import Alarm, AlarmState, AuditEvent, DeliveryAttempt, DeliveryStatus, Notification
from audit.services import audit_record
from audit.services.alarm_evaluation import alarms_evaluate
from audit.services.alarms import alarm_create, alarm_update, webhook_secret
from kmsweb.celery import app as celery_app
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import ValidationError
from tests.conftest import Persona

T = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
SECRET = "correct-horse-battery-staple-42"


class Receiver:
    """A webhook endpoint on loopback that answers from a script: a status code, or "hang"."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                action = receiver.script.pop(0) if receiver.script else 200
                if action == "hang":
                    receiver.release.wait(10)
                    return
                self.send_response(int(action))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/kms?source=kmsweb"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(*script: int | str) -> Receiver:
        made.append(Receiver(list(script)))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture(autouse=True)
def _eager_tasks(settings: Any) -> Iterator[None]:
    settings.KMSWEB_WEBHOOK_ALLOW_PRIVATE = True
    settings.KMSWEB_WEBHOOK_CONNECT_TIMEOUT = 1
    settings.KMSWEB_WEBHOOK_READ_TIMEOUT = 0.3
    settings.KMSWEB_NOTIFICATION_MAX_ATTEMPTS = 4
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    before = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    # Not propagating: an eager task raising Retry is then retried in place, as a worker would later.
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = True, False
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = before


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T, tick=True) as traveller:
        yield traveller


def make_alarm(persona: Persona, **overrides: Any) -> Alarm:
    values: dict[str, Any] = {
        "name": "denials",
        "metric": "denials",
        "period": 60,
        "comparison": "GreaterThanOrEqualToThreshold",
        "threshold": 1,
        "treat_missing_data": "notBreaching",
    }
    values.update(overrides)
    return alarm_create(caller=Caller.system("tests", account_id=persona.account_id), spec=AlarmSpec(**values))


def fire(persona: Persona, alarm: Alarm, capture: Any) -> None:
    """One denial in the minute before T+1min, then an evaluation: OK/INSUFFICIENT -> ALARM."""
    from kmsweb.lib.errors import AccessDenied

    audit_record(caller=persona.caller(), event_name="Decrypt", error=AccessDenied("no"), event_time=T)
    with capture(execute=True):
        alarms_evaluate(caller=Caller.system("evaluate_alarms"), now=T + timedelta(minutes=1), alarm_ids=[alarm.pk])
    alarm.refresh_from_db()
    assert alarm.state == AlarmState.ALARM


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, exactly as docs/ALARMS.md shows it."""
    timestamp = headers["X-Kmsweb-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Kmsweb-Signature"])


@pytest.mark.django_db
def test_it_posts_a_signed_webhook_that_the_receiver_verifies(
    key_admin: Persona, receiver: Any, clock: Any, django_capture_on_commit_callbacks: Any, mailoutbox: list[Any]
) -> None:
    hook = receiver(200)
    alarm = make_alarm(key_admin, webhook_url=hook.url, webhook_secret=SECRET, emails=["ops@example.com"])
    # The secret is stored encrypted, bound to this alarm.
    stored = bytes(Alarm.objects.get(pk=alarm.pk).webhook_secret_ciphertext)
    assert SECRET.encode() not in stored and webhook_secret(alarm) == SECRET.encode()
    assert SECRET not in json.dumps([e.request_parameters for e in AuditEvent.objects.all()])
    fire(key_admin, alarm, django_capture_on_commit_callbacks)
    assert len(hook.requests) == 1
    request = hook.requests[0]
    assert request["path"] == "/hooks/kms?source=kmsweb"
    assert request["headers"]["Content-Type"] == "application/json"
    assert verify(SECRET, request["headers"], request["body"])
    assert not verify("another-secret-of-some-length", request["headers"], request["body"])
    assert not verify(SECRET, request["headers"], request["body"] + b" ")
    payload = json.loads(request["body"])
    assert payload["alarmName"] == "denials" and payload["newState"] == "ALARM"
    assert payload["oldState"] == "INSUFFICIENT_DATA" and payload["reason"].startswith("Threshold Crossed: 1 out of")
    assert payload["url"].endswith(f"/alarms/{alarm.pk}/")
    webhook = Notification.objects.get(channel="webhook")
    assert webhook.status == DeliveryStatus.DELIVERED and webhook.attempts == 1
    attempt = DeliveryAttempt.objects.get(notification=webhook)
    assert attempt.ok and attempt.response_code == 200 and attempt.error == ""
    # The email went out through Django's email backend.
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["ops@example.com"]
    assert mail.subject == '[kmsweb] ALARM: "denials" is now ALARM'
    assert "changed from INSUFFICIENT_DATA to ALARM" in mail.body and f"/alarms/{alarm.pk}/" in mail.body
    assert Notification.objects.get(channel="email").status == DeliveryStatus.DELIVERED


@pytest.mark.django_db
def test_it_retries_a_webhook_that_answers_500(
    key_admin: Persona, receiver: Any, clock: Any, django_capture_on_commit_callbacks: Any
) -> None:
    hook = receiver(500, 500, 204)
    alarm = make_alarm(key_admin, webhook_url=hook.url, webhook_secret=SECRET)
    fire(key_admin, alarm, django_capture_on_commit_callbacks)
    assert len(hook.requests) == 3
    # The same delivery each time (same id, same body), each try signed.
    assert len({r["headers"]["X-Kmsweb-Delivery"] for r in hook.requests}) == 1
    assert len({r["body"] for r in hook.requests}) == 1
    assert all(verify(SECRET, r["headers"], r["body"]) for r in hook.requests)
    notification = Notification.objects.get()
    assert notification.status == DeliveryStatus.DELIVERED and notification.attempts == 3
    log = list(DeliveryAttempt.objects.filter(notification=notification).values_list("number", "ok", "response_code"))
    assert log == [(1, False, 500), (2, False, 500), (3, True, 204)]


@pytest.mark.django_db
def test_it_gives_up_after_the_last_attempt(
    key_admin: Persona, receiver: Any, clock: Any, django_capture_on_commit_callbacks: Any
) -> None:
    hook = receiver(500, 502, 503, 500, 500)
    alarm = make_alarm(key_admin, webhook_url=hook.url, webhook_secret=SECRET)
    fire(key_admin, alarm, django_capture_on_commit_callbacks)
    notification = Notification.objects.get()
    assert notification.status == DeliveryStatus.FAILED and notification.attempts == 4
    assert len(hook.requests) == 4
    assert [a.error for a in DeliveryAttempt.objects.filter(notification=notification)] == [
        "HTTP 500",
        "HTTP 502",
        "HTTP 503",
        "HTTP 500",
    ]


@pytest.mark.django_db
def test_it_times_out_a_hanging_endpoint_and_retries(
    key_admin: Persona, receiver: Any, clock: Any, django_capture_on_commit_callbacks: Any
) -> None:
    hook = receiver("hang", 200)
    alarm = make_alarm(key_admin, webhook_url=hook.url, webhook_secret=SECRET)
    fire(key_admin, alarm, django_capture_on_commit_callbacks)
    first, second = DeliveryAttempt.objects.order_by("number")
    assert not first.ok and first.response_code is None and first.error.startswith("timed out")
    # The read timeout (0.3 s here) bounds the try: the worker is not held by the endpoint.
    assert 250 <= first.duration_ms < 3000
    assert second.ok and second.response_code == 200
    assert Notification.objects.get().status == DeliveryStatus.DELIVERED


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[2002:7f00:1::]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "http://user:pw@example.com/hook",
    ],
)
def test_it_refuses_a_webhook_to_a_private_address_when_saving(key_admin: Persona, settings: Any, url: str) -> None:
    settings.KMSWEB_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(ValidationError) as raised:
        make_alarm(key_admin, webhook_url=url, webhook_secret=SECRET)
    assert "webhook_url" in raised.value.message
    assert not Alarm.objects.exists()
    event = AuditEvent.objects.get(event_name="CreateAlarm")
    assert event.error_code == "ValidationException" and event.event_source == "kmsweb.alarms"


@pytest.mark.django_db
def test_it_refuses_at_delivery_a_url_that_now_resolves_to_a_private_address(
    key_admin: Persona, receiver: Any, clock: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """Saved while allowed; by delivery time it is refused (what a DNS rebinding looks like from here)."""
    hook = receiver(200)
    alarm = make_alarm(key_admin, webhook_url=hook.url, webhook_secret=SECRET)
    settings.KMSWEB_WEBHOOK_ALLOW_PRIVATE = False
    fire(key_admin, alarm, django_capture_on_commit_callbacks)
    assert hook.requests == []
    notification = Notification.objects.get()
    assert notification.status == DeliveryStatus.FAILED and notification.attempts == 1
    assert DeliveryAttempt.objects.get().error.startswith("Refused: '127.0.0.1' resolves to 127.0.0.1")


@pytest.mark.django_db
def test_it_keeps_the_webhook_secret_when_an_edit_leaves_it_blank(key_admin: Persona, receiver: Any) -> None:
    hook = receiver()
    alarm = make_alarm(key_admin, webhook_url=hook.url, webhook_secret=SECRET)
    system = Caller.system("tests", account_id=key_admin.account_id)
    spec = AlarmSpec(
        name="renamed",
        metric="denials",
        period=120,
        comparison="GreaterThanThreshold",
        threshold=3,
        webhook_url=hook.url,
        webhook_secret=None,
    )
    alarm = alarm_update(caller=system, alarm=alarm, spec=spec)
    assert (alarm.name, alarm.period, webhook_secret(alarm)) == ("renamed", 120, SECRET.encode())
    spec.webhook_secret = "a-brand-new-secret-value"
    alarm = alarm_update(caller=system, alarm=alarm, spec=spec)
    assert webhook_secret(alarm) == b"a-brand-new-secret-value"
    updates = AuditEvent.objects.filter(event_name="UpdateAlarm").order_by("id")
    assert [e.request_parameters["webhookSecretChanged"] for e in updates] == [False, True]


@pytest.mark.django_db
def test_it_never_sends_an_unsigned_webhook(
    key_admin: Persona, receiver: Any, clock: Any, django_capture_on_commit_callbacks: Any
) -> None:
    hook = receiver(200)
    alarm = make_alarm(key_admin, webhook_url=hook.url, webhook_secret=SECRET)
    # A secret that no longer decrypts (bound to another alarm's context).
    other = make_alarm(key_admin, name="other", webhook_url=hook.url, webhook_secret="another-secret-value")
    Alarm.objects.filter(pk=alarm.pk).update(
        webhook_secret_ciphertext=Alarm.objects.get(pk=other.pk).webhook_secret_ciphertext
    )
    alarm.refresh_from_db()
    fire(key_admin, alarm, django_capture_on_commit_callbacks)
    assert hook.requests == []
    notification = Notification.objects.get(alarm=alarm)
    assert notification.status == DeliveryStatus.FAILED and notification.attempts == 1
    assert DeliveryAttempt.objects.get(notification=notification).error.startswith("Not sent:")
