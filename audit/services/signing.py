"""The audit signing key: created on first use, rolled over on demand.

The private key exists in the clear only in memory, for one signature; at
rest it is encrypted under the platform owned ``audit-signing`` key, bound
to its fingerprint. Retired keys keep their public half published.
"""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import SigningKey
from audit.services.recording import audit_record, audited
from keys.crypto import signatures
from keys.services.platform import platform_decrypt, platform_encrypt
from kmsweb.lib.caller import Caller

PURPOSE = "audit-signing"
EVENT_SOURCE = "cloudtrail.amazonaws.com"


def _context(fingerprint: str) -> dict[str, str]:
    return {"fingerprint": fingerprint}


def _create(now: datetime) -> SigningKey:
    pair = signatures.generate_signing_key()
    return SigningKey.objects.create(
        fingerprint=pair.fingerprint,
        public_pem=pair.public_pem,
        private_key_ciphertext=platform_encrypt(
            purpose=PURPOSE, plaintext=pair.private_der, context=_context(pair.fingerprint)
        ),
        created_at=now,
    )


def signing_key_current(*, now: datetime | None = None) -> SigningKey:
    """The current signing key, created (and audited) on first use."""
    key = SigningKey.objects.filter(retired_at__isnull=True).first()
    if key is not None:
        return key
    caller = Caller.system("audit-signing")
    try:
        with transaction.atomic():
            key = _create(now or timezone.now())
            audit_record(
                caller=caller,
                event_name="CreateAuditSigningKey",
                event_source=EVENT_SOURCE,
                response_elements={"Fingerprint": key.fingerprint},
            )
    except IntegrityError:
        # Another worker created it at the same moment: use theirs.
        key = SigningKey.objects.get(retired_at__isnull=True)
    return key


def signing_key_rollover(*, caller: Caller, now: datetime | None = None) -> SigningKey:
    """Retire the current key and make a new one. Old public keys stay published."""
    now = now or timezone.now()
    with audited(caller, "RotateAuditSigningKey", event_source=EVENT_SOURCE) as op:
        with transaction.atomic():
            old = SigningKey.objects.select_for_update().filter(retired_at__isnull=True).first()
            if old is not None:
                SigningKey.objects.filter(pk=old.pk).update(retired_at=now)
            key = _create(now)
        op.response_elements = {"Fingerprint": key.fingerprint, "RetiredFingerprint": old.fingerprint if old else None}
    return key


def signing_key_sign(*, key: SigningKey, data: bytes) -> bytes:
    """A DER ECDSA signature of ``data`` by ``key`` (the private half is decrypted for this call only)."""
    private = platform_decrypt(
        purpose=PURPOSE, blob=bytes(key.private_key_ciphertext), context=_context(key.fingerprint)
    )
    return signatures.sign(private, data)
