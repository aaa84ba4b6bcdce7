"""Sign-in and second-factor forms."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django import forms


class TokenForm(forms.Form):
    token = forms.CharField(
        label="Authentication code",
        min_length=6,
        max_length=6,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )

    def clean_token(self) -> str:
        token = self.cleaned_data["token"].strip()
        # ASCII only: str.isdigit() also accepts other scripts' digits.
        if not (token.isascii() and token.isdigit()):
            raise forms.ValidationError("The code is six digits.")
        return token


_EXAMPLE_POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"}]},
    indent=2,
)


class PolicyDocumentForm(forms.Form):
    name = forms.CharField(max_length=128, widget=forms.TextInput(attrs={"placeholder": "PolicyName"}))
    document = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false"}), initial=_EXAMPLE_POLICY
    )


# --- People and principals ----------------------------------------------------


def _role_choices() -> list[tuple[str, str]]:
    from policies.roles import ROLE_LABELS

    return list(ROLE_LABELS.items())


class PersonForm(forms.Form):
    """A dashboard user's name, e-mail and roles. Shape only: the services decide."""

    first_name = forms.CharField(max_length=150, required=False, label="First name")
    last_name = forms.CharField(max_length=150, required=False, label="Last name")
    email = forms.EmailField(max_length=254, required=False, label="E-mail")
    roles = forms.MultipleChoiceField(choices=_role_choices, required=False, widget=forms.CheckboxSelectMultiple)


class PersonCreateForm(PersonForm):
    """A new local dashboard user: also a user name and a first password."""

    username = forms.CharField(max_length=64, label="User name")
    password = forms.CharField(
        label="First password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )
    field_order = ["username", "first_name", "last_name", "email", "roles", "password"]


class PrincipalCreateForm(forms.Form):
    """A new API principal of this account: a user or a role."""

    name = forms.CharField(max_length=64, label="Name")
    type = forms.ChoiceField(choices=[("user", "User"), ("role", "Role")], label="Type")


# --- Grant requests ----------------------------------------------------------


def _grant_operation_choices() -> list[tuple[str, str]]:
    from policies.services.grants import SYMMETRIC_GRANT_OPERATIONS

    return [(op, op) for op in sorted(SYMMETRIC_GRANT_OPERATIONS)]


CONSTRAINT_CHOICES = [
    ("", "No constraint"),
    ("EncryptionContextSubset", "Encryption context includes (EncryptionContextSubset)"),
    ("EncryptionContextEquals", "Encryption context equals (EncryptionContextEquals)"),
]


class GrantRequestForm(forms.Form):
    """Ask for a grant. Shape only: the service checks the grantee, operations and duration."""

    grantee_principal = forms.CharField(
        max_length=256,
        label="Grantee principal",
        widget=forms.TextInput(attrs={"placeholder": "arn:aws:iam::111122223333:role/app", "size": 60}),
    )
    operations = forms.MultipleChoiceField(choices=_grant_operation_choices, widget=forms.CheckboxSelectMultiple)
    constraint = forms.ChoiceField(choices=CONSTRAINT_CHOICES, required=False, label="Constraint")
    encryption_context = forms.CharField(
        required=False,
        label="Encryption context",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text="key=value per line (with a constraint)",
    )
    justification = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))
    duration = forms.IntegerField(min_value=1, max_value=2160, initial=8, label="Duration")
    duration_unit = forms.ChoiceField(
        choices=[("hours", "hours"), ("days", "days")],
        initial="hours",
        label="Unit",
        widget=forms.Select(attrs={"aria-label": "Duration unit"}),
    )

    def clean_encryption_context(self) -> dict[str, str]:
        context: dict[str, str] = {}
        for number, line in enumerate(self.cleaned_data["encryption_context"].splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise forms.ValidationError(f"Line {number}: write key=value.")
            context[name.strip()] = value.strip()
        return context

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        constraint, context = data.get("constraint"), data.get("encryption_context")
        if constraint and not context:
            self.add_error("encryption_context", "A constraint needs at least one key=value pair.")
        elif context and not constraint:
            self.add_error("constraint", "Choose how the encryption context constrains the grant.")
        if data.get("duration") is not None:
            unit = timedelta(days=1) if data.get("duration_unit") == "days" else timedelta(hours=1)
            data["duration_delta"] = data["duration"] * unit
        data["constraints"] = {constraint: context} if constraint and context else None
        return data


class GrantRequestDecisionForm(forms.Form):
    """Approve or reject (the clicked button's ``verdict``), with a comment."""

    verdict = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Comment (required to reject)"}),
    )
