"""Findings (one per rule and resource), their history, evaluation runs and the debounce flag."""

from __future__ import annotations

from django.db import models

from compliance.rules.facts import ResourceKind, Severity


class FindingStatus(models.TextChoices):
    NON_COMPLIANT = "NON_COMPLIANT", "Non-compliant"
    COMPLIANT = "COMPLIANT", "Compliant"
    SUPPRESSED = "SUPPRESSED", "Suppressed"
    RESOLVED = "RESOLVED", "Resolved"


SEVERITY_CHOICES = [(s.value, s.value.title()) for s in Severity]
KIND_CHOICES = [(k.value, k.value.replace("-", " ")) for k in ResourceKind]
SEVERITY_ORDER = {s.value: i for i, s in enumerate(Severity)}


class FindingQuerySet(models.QuerySet["Finding"]):
    def open(self) -> FindingQuerySet:
        """Findings someone has to act on: non-compliant and not suppressed."""
        return self.filter(status=FindingStatus.NON_COMPLIANT)


class Finding(models.Model):
    """The verdict of one rule on one resource, kept across runs.

    COMPLIANT: the rule has only ever found the resource compliant.
    NON_COMPLIANT: the latest run found it non-compliant.
    RESOLVED: it was non-compliant (or suppressed) and is compliant now, or
    the resource left the rule's scope (deleted key, retired grant).
    SUPPRESSED: an approver accepted the risk until ``suppressed_until``;
    the next run after that re-opens it if it is still non-compliant.
    ``last_seen_at`` is the last run that found it non-compliant for a
    resolved finding; an open or suppressed one is still non-compliant as of
    the latest run (every run judges every resource in scope), so runs do
    not rewrite it, and the selectors show the latest run's time instead
    (``seen_at``): an hourly run leaves unchanged findings unwritten.
    """

    account_id = models.CharField(max_length=12)
    rule_id = models.CharField(max_length=64)
    resource_kind = models.CharField(max_length=16, choices=KIND_CHOICES)
    resource_id = models.CharField(max_length=512)
    key_id = models.CharField(max_length=36, blank=True)
    principal_arn = models.CharField(max_length=256, blank=True)
    severity = models.CharField(max_length=8, choices=SEVERITY_CHOICES)
    status = models.CharField(max_length=16, choices=FindingStatus.choices)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    remediation = models.TextField(blank=True)
    suppressed_until = models.DateTimeField(null=True, blank=True)
    suppressed_by = models.CharField(max_length=256, blank=True)
    suppression_justification = models.TextField(max_length=2000, blank=True)
    updated_at = models.DateTimeField()

    objects = FindingQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule_id", "resource_id"], name="finding_rule_resource")]
        indexes = [
            models.Index(fields=["account_id", "status", "severity"], name="finding_account_status_idx"),
            models.Index(fields=["key_id", "status"], name="finding_key_idx", condition=~models.Q(key_id="")),
            models.Index(fields=["principal_arn"], name="finding_principal_idx", condition=~models.Q(principal_arn="")),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id} on {self.resource_id}: {self.status}"

    @property
    def is_actionable(self) -> bool:
        return self.status in (FindingStatus.NON_COMPLIANT, FindingStatus.SUPPRESSED)


class FindingChange(models.Model):
    """One step of a finding's history: opened, resolved, re-opened, suppressed, unsuppressed, expired."""

    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="changes")
    at = models.DateTimeField()
    old_status = models.CharField(max_length=16, choices=FindingStatus.choices, blank=True)
    new_status = models.CharField(max_length=16, choices=FindingStatus.choices)
    actor = models.CharField(max_length=256)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["finding", "-at"], name="finding_change_time_idx")]

    def __str__(self) -> str:
        return f"{self.finding_id}: {self.old_status or '-'} -> {self.new_status}"


class EvaluationRun(models.Model):
    """One evaluation: when, how long, and per rule how many resources were judged and failed."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    # {rule id: {"evaluated": n, "nonCompliant": m}}, all accounts together.
    counts = models.JSONField(default=dict)
    changes = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"compliance run at {self.started_at:%Y-%m-%dT%H:%M:%S}"


class EvaluationRequest(models.Model):
    """The debounce flag (one row): a triggered evaluation is queued and has not started yet."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    pending = models.BooleanField(default=False)
    requested_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"compliance evaluation {'pending' if self.pending else 'idle'}"


class OpenFindingsCount(models.Model):
    """How many findings were open (non-compliant) in one account after one evaluation: the trend chart."""

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="open_counts")
    account_id = models.CharField(max_length=12)
    at = models.DateTimeField()
    # {severity: open findings}; every severity is present, zeros included.
    by_severity = models.JSONField(default=dict)
    total = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["account_id", "at"], name="open_count_account_time_idx")]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.total} open at {self.at:%Y-%m-%dT%H:%M}"


# -- Access re-certification campaigns --------------------------------------------------------------


class CampaignSettings(models.Model):
    """An account's campaign settings: how long reviewers have, and what happens to unreviewed items."""

    account_id = models.CharField(max_length=12, primary_key=True)
    review_days = models.PositiveSmallIntegerField(default=14)
    # At the deadline, revoke what nobody confirmed (after the escalation email).
    auto_revoke = models.BooleanField(default=False)
    updated_at = models.DateTimeField(null=True, blank=True)
    updated_by = models.CharField(max_length=256, blank=True)

    def __str__(self) -> str:
        return f"campaign settings of {self.account_id}"


class CampaignState(models.TextChoices):
    OPEN = "OPEN", "Open"
    CLOSED = "CLOSED", "Closed"


class Campaign(models.Model):
    """One access re-certification: every live grant and every key-reaching identity policy
    of an account, each an item for its reviewers to confirm or revoke by the deadline.

    OPEN until its deadline job runs (escalation, then auto-revoke where the
    account says so); CLOSED after, with ``closed_at``.
    """

    account_id = models.CharField(max_length=12)
    name = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    started_by = models.CharField(max_length=256)
    deadline = models.DateTimeField()
    state = models.CharField(max_length=8, choices=CampaignState.choices, default=CampaignState.OPEN)
    closed_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    auto_revoke = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["account_id", "state", "deadline"], name="campaign_account_state_idx")]

    def __str__(self) -> str:
        return self.name


class ItemKind(models.TextChoices):
    GRANT = "grant", "Grant"
    POLICY = "policy", "Identity policy"


class ItemStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    CONFIRMED = "CONFIRMED", "Confirmed"
    NARROWED = "NARROWED", "Narrowed"
    REVOKED = "REVOKED", "Revoked"


class CampaignItem(models.Model):
    """One access to re-certify: a grant (reviewed by its key's owners) or an identity policy
    of a principal (reviewed by the principal's manager).

    ``reviewers`` lists the principal ARNs assigned; an empty list means the
    security team (approvers and administrators), who may decide any item.
    ``subject`` keeps what was reviewed as it stood when the campaign began,
    so the evidence survives the grant's or policy's removal.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="items")
    kind = models.CharField(max_length=8, choices=ItemKind.choices)
    key_id = models.CharField(max_length=36, blank=True)
    grant_id = models.CharField(max_length=64, blank=True)
    principal_arn = models.CharField(max_length=256)
    policy_name = models.CharField(max_length=128, blank=True)
    policy_inline = models.BooleanField(default=False)
    subject = models.JSONField(default=dict)
    reviewers = models.JSONField(default=list)
    reviewer_source = models.CharField(max_length=32)
    status = models.CharField(max_length=10, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=256, blank=True)
    comment = models.TextField(max_length=2000, blank=True)
    # A narrowed policy item: the document that replaced the reviewed one.
    narrowed_document = models.TextField(blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    automatic = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["campaign", "status"], name="campaign_item_status_idx")]

    def __str__(self) -> str:
        return f"{self.kind} item {self.pk} of campaign {self.campaign_id}: {self.status}"

    @property
    def label(self) -> str:
        if self.kind == ItemKind.GRANT:
            return f"grant {self.grant_id[:12]}… on key {self.key_id} to {self.principal_arn}"
        where = "inline" if self.policy_inline else "attached"
        return f"{where} policy {self.policy_name} of {self.principal_arn}"
