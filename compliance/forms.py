"""The suppression form: a justification and the day the suppression ends."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from django import forms

from compliance.services import MAX_JUSTIFICATION
from kmsweb.lib import clock


class SuppressForm(forms.Form):
    justification = forms.CharField(
        max_length=MAX_JUSTIFICATION,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why the risk is accepted, and who accepted it.",
        error_messages={"required": "A suppression needs a justification."},
    )
    until = forms.DateField(
        label="Suppressed until",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The suppression ends at the end of this day (UTC); the next run re-opens the finding.",
        error_messages={"required": "A suppression needs an expiry date.", "invalid": "Enter a date (YYYY-MM-DD)."},
    )

    def clean_justification(self) -> str:
        text = self.cleaned_data["justification"].strip()
        if not text:
            raise forms.ValidationError("A suppression needs a justification.")
        if "\x00" in text:
            raise forms.ValidationError("The justification must not contain the NUL character.")
        return text

    def clean_until(self) -> datetime:
        day = self.cleaned_data["until"]
        until = datetime.combine(day, time.min, tzinfo=UTC) + timedelta(days=1)
        if until <= clock.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return until

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["until"].widget.attrs["min"] = clock.now().date().isoformat()


class CampaignStartForm(forms.Form):
    name = forms.CharField(
        max_length=200,
        required=False,
        help_text="Empty: “Access re-certification <today>”.",
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if "\x00" in name:
            raise forms.ValidationError("The name must not contain the NUL character.")
        return name


class CampaignSettingsForm(forms.Form):
    review_days = forms.IntegerField(
        label="Days to review",
        min_value=1,
        max_value=90,
        help_text="A new campaign's deadline is this many days after it starts.",
        error_messages={"required": "Give the number of days reviewers have."},
    )
    auto_revoke = forms.BooleanField(
        label="Revoke unreviewed access at the deadline",
        required=False,
        help_text="Off: unreviewed items are escalated by email and stay until someone decides them.",
    )


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[("confirm", "Confirm"), ("narrow", "Narrow"), ("revoke", "Revoke")],
        error_messages={
            "required": "Choose confirm, narrow or revoke.",
            "invalid_choice": "Choose confirm, narrow or revoke.",
        },
    )
    comment = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    document = forms.CharField(max_length=20_000, required=False, strip=False)
