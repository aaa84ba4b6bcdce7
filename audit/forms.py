"""Dashboard forms of the audit app: the alarm form.

The form parses and shows errors inline; ``audit.alarm_rules.check_alarm``
(which the services run again) decides what is valid.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.urls import reverse_lazy

from audit.alarm_rules import AlarmSpec, check_alarm
from audit.models import Alarm, AlarmMetric, Comparison, MissingData
from keys.selectors import KEY_REF_HELP, key_resolve_ref
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import NotFound
from kmsweb.lib.operations import API_OPERATIONS

_SPLIT = re.compile(r"[\s,;]+")


class AlarmForm(forms.Form):
    name = forms.CharField(max_length=255)
    description = forms.CharField(required=False, max_length=1024, widget=forms.Textarea(attrs={"rows": 2}))
    metric = forms.ChoiceField(choices=AlarmMetric.choices)
    key_id = forms.CharField(
        required=False,
        max_length=300,
        label="Key",
        help_text=f"{KEY_REF_HELP} Blank: every key.",
        # A type-ahead over the account's aliases and descriptions (keys:key_suggest).
        widget=forms.TextInput(
            attrs={
                "list": "alarm-key-suggestions",
                "autocomplete": "off",
                "hx-get": reverse_lazy("keys:key_suggest"),
                "hx-trigger": "input changed delay:200ms",
                "hx-target": "#alarm-key-suggestions",
                "hx-swap": "innerHTML",
            }
        ),
    )
    operation = forms.CharField(required=False, max_length=64, help_text="e.g. Decrypt; blank: every operation")
    principal_arn = forms.CharField(required=False, max_length=256, label="Principal ARN", help_text="Blank: anyone")
    error_code = forms.CharField(required=False, max_length=64, help_text="e.g. AccessDeniedException; blank: any")
    period = forms.IntegerField(initial=300, label="Period (seconds)", help_text="60 to 86400, whole minutes")
    comparison = forms.ChoiceField(choices=Comparison.choices, initial=Comparison.GE)
    threshold = forms.FloatField(initial=1)
    evaluation_periods = forms.IntegerField(initial=1, label="Evaluation periods (N)")
    datapoints_to_alarm = forms.IntegerField(initial=1, label="Datapoints to alarm (M of N)")
    treat_missing_data = forms.ChoiceField(choices=MissingData.choices, initial=MissingData.NOT_BREACHING)
    actions_enabled = forms.BooleanField(required=False, initial=True, label="Send notifications")
    emails = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Email addresses, one per line"
    )
    webhook_url = forms.CharField(required=False, max_length=2048, label="Webhook URL")
    webhook_secret = forms.CharField(
        required=False,
        label="Webhook signing secret",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="At least 16 characters. On edit, leave blank to keep the current secret.",
    )

    def __init__(self, *args: Any, caller: Caller, alarm: Alarm | None = None, **kwargs: Any) -> None:
        if alarm is not None and "initial" not in kwargs:
            initial = {name: getattr(alarm, name) for name in self.base_fields if hasattr(alarm, name)}
            initial["emails"] = "\n".join(alarm.emails)
            initial.pop("webhook_secret", None)
            kwargs["initial"] = initial
        super().__init__(*args, **kwargs)
        self.caller = caller
        self.account_id = caller.account_id
        self.alarm = alarm
        if alarm is None or alarm.metric != AlarmMetric.COMPLIANCE_FINDINGS:
            # Only the compliance evaluation sets that alarm's state; a new alarm on it would never change.
            choices = [c for c in AlarmMetric.choices if c[0] != AlarmMetric.COMPLIANCE_FINDINGS]
            self.fields["metric"].choices = choices  # type: ignore[attr-defined]

    def clean_emails(self) -> list[str]:
        return [e for e in _SPLIT.split(self.cleaned_data["emails"].strip()) if e]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        for name in ("name", "key_id", "operation", "principal_arn", "error_code", "webhook_url"):
            data[name] = (data.get(name) or "").strip()
        key_error = ""
        if data["key_id"]:
            # The alarm watches the key itself: an alias is resolved now and its key id kept.
            try:
                data["key_id"] = str(key_resolve_ref(caller=self.caller, key_ref=data["key_id"]).id)
            except NotFound as exc:
                key_error = exc.message
        secret = data.get("webhook_secret") or ""
        spec = AlarmSpec(**{k: v for k, v in data.items() if k in AlarmSpec.__dataclass_fields__})
        spec.webhook_secret = secret or None
        errors = check_alarm(
            spec,
            creating=self.alarm is None,
            has_secret=bool(self.alarm and self.alarm.webhook_secret_ciphertext),
            known_operations=API_OPERATIONS,
        )
        if key_error:
            errors["key_id"] = key_error
        for name, message in errors.items():
            self.add_error(name if name in self.fields else None, message)
        data["spec"] = spec
        return data


class AlarmAcknowledgeForm(forms.Form):
    comment = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What you found or did (kept in the alarm's history and the audit trail).",
    )
