"""The debounced trigger: services that change what a rule can answer ask for an evaluation.

A light module (no rules, no snapshot) so that the keys and policies
services can import it without import cycles.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from compliance.models import EvaluationRequest
from kmsweb.lib import clock

logger = logging.getLogger(__name__)


def compliance_evaluation_request() -> None:
    """Ask for an evaluation soon after the current transaction commits.

    Services that change what a rule can answer (key policies, grants,
    identity policies, rotation, deletion, tags) call this inside their
    transaction: a rolled-back change asks for nothing, and a burst of
    changes within ``KMSWEB_COMPLIANCE_TRIGGER_DELAY_SECONDS`` runs once.
    """
    transaction.on_commit(evaluation_enqueue)


def evaluation_enqueue() -> bool:
    """Queue one evaluation unless one is already queued; returns whether this call queued it.

    The ``EvaluationRequest`` row is the flag, claimed with a conditional
    update so concurrent processes queue once; the run clears it when it
    starts. A flag older than ten delays is taken as lost (a broker outage)
    and claimed again. A broker failure is logged, never raised: the change
    is committed, and the hourly run judges it anyway.
    """
    from kmsweb.tasks import JOB_TASKS

    delay = settings.KMSWEB_COMPLIANCE_TRIGGER_DELAY_SECONDS
    now = clock.now()
    stale = now - timedelta(seconds=max(600, delay * 10))
    claim = Q(pending=False) | Q(requested_at__lt=stale)
    try:
        claimed = EvaluationRequest.objects.filter(claim, pk=1).update(pending=True, requested_at=now) == 1
        if not claimed and not EvaluationRequest.objects.filter(pk=1).exists():
            try:
                with transaction.atomic():
                    EvaluationRequest.objects.create(pk=1, pending=True, requested_at=now)
                claimed = True
            except IntegrityError:
                claimed = False
        if not claimed:
            return False
        JOB_TASKS["evaluate_compliance"].apply_async(countdown=delay)
    except Exception:
        logger.exception("could not queue a compliance evaluation; the hourly run will catch up")
        EvaluationRequest.objects.filter(pk=1).update(pending=False)
        return False
    return True
