"""Dashboard forms for keys. They check shape; the services decide the rest."""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms

from keys.crypto.specs import SPECS, SYMMETRIC_DEFAULT
from kmsweb.lib.jsonwords import json_problem

# The create form's key spec menu, grouped as AWS's console groups them.
KEY_SPEC_CHOICES = [
    ("Symmetric", [(SYMMETRIC_DEFAULT, "SYMMETRIC_DEFAULT (AES-256-GCM)")]),
    ("RSA", [(n, n) for n in ("RSA_2048", "RSA_3072", "RSA_4096")]),
    (
        "Elliptic curve",
        [
            (n, n)
            for n in ("ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1", "ECC_NIST_EDWARDS25519")
        ],
    ),
    ("HMAC", [(n, n) for n in ("HMAC_224", "HMAC_256", "HMAC_384", "HMAC_512")]),
    ("ML-DSA (post-quantum signatures)", [(n, n) for n in ("ML_DSA_44", "ML_DSA_65", "ML_DSA_87")]),
    ("ML-KEM (post-quantum key encapsulation)", [(n, n) for n in ("ML_KEM_512", "ML_KEM_768", "ML_KEM_1024")]),
]
KEY_USAGE_LABELS = {
    "ENCRYPT_DECRYPT": "Encrypt and decrypt",
    "SIGN_VERIFY": "Sign and verify",
    "GENERATE_VERIFY_MAC": "Generate and verify MAC",
    "KEY_AGREEMENT": "Key agreement (ECDH)",
    "ENCAPSULATE_DECAPSULATE": "Encapsulate and decapsulate (ML-KEM)",
}


def usage_choices(spec: str) -> list[tuple[str, str]]:
    """The usages a key spec supports, for the usage menu."""
    known = SPECS.get(spec, SPECS[SYMMETRIC_DEFAULT])
    return [(u, f"{u} — {KEY_USAGE_LABELS[u]}") for u in known.usages]


_ALIAS = re.compile(r"^[a-zA-Z0-9/_-]+$")


def clean_alias_name(value: str) -> str:
    """Accept ``name`` or ``alias/name``; return ``alias/name``."""
    value = value.strip()
    if not value:
        return ""
    name = value.removeprefix("alias/")
    if not _ALIAS.match(name) or len(name) > 250:
        raise forms.ValidationError("Use letters, digits, '/', '_' and '-' (at most 250 characters).")
    if name.startswith("aws/"):
        raise forms.ValidationError("The prefix 'aws/' is reserved for service managed keys.")
    return f"alias/{name}"


def parse_tags(text: str) -> list[dict[str, str]]:
    """One ``key=value`` per line; the value may be empty."""
    tags = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        tag_key, sep, tag_value = line.partition("=")
        tag_key, tag_value = tag_key.strip(), tag_value.strip()
        if not tag_key:
            raise forms.ValidationError(f"Line {number}: a tag needs a key (key=value).")
        if len(tag_key) > 128:
            raise forms.ValidationError(f"Line {number}: tag key is longer than 128 characters.")
        if len(tag_value) > 256:
            raise forms.ValidationError(f"Line {number}: tag value is longer than 256 characters.")
        if tag_key.lower().startswith("aws:"):
            raise forms.ValidationError(f"Line {number}: tag keys beginning with 'aws:' are reserved.")
        tags.append({"TagKey": tag_key, "TagValue": tag_value})
    if len(tags) > 50:
        raise forms.ValidationError("A key can have at most 50 tags.")
    return tags


class KeyCreateForm(forms.Form):
    origin = forms.ChoiceField(
        choices=[
            ("AWS_KMS", "kmsweb (kmsweb generates the key material)"),
            ("EXTERNAL", "External (import your own material)"),
        ],
        initial="AWS_KMS",
        required=False,
        label="Key material origin",
        help_text="An external key stays Pending import until you import its material (instructions on its page).",
    )
    description = forms.CharField(required=False, max_length=8192, widget=forms.TextInput)
    # Optional as in CreateKey: left out, the key is SYMMETRIC_DEFAULT for ENCRYPT_DECRYPT.
    key_spec = forms.ChoiceField(choices=KEY_SPEC_CHOICES, initial=SYMMETRIC_DEFAULT, label="Key spec", required=False)
    key_usage = forms.ChoiceField(choices=usage_choices(SYMMETRIC_DEFAULT), label="Key usage", required=False)
    alias = forms.CharField(required=False, max_length=256, help_text="e.g. payroll/db (alias/ is added)")
    tags = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text="key=value per line")
    multi_region = forms.BooleanField(
        required=False,
        label="Multi-Region key",
        help_text="A primary key (mrk- id) that ReplicateKey can copy, with its material, into other regions.",
    )
    rotation_enabled = forms.BooleanField(required=False, initial=True, label="Rotate automatically")
    rotation_period_days = forms.IntegerField(min_value=90, max_value=2560, initial=365, label="Rotation period (days)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        spec = self.data.get("key_spec") if self.is_bound else self.initial.get("key_spec")
        self.set_spec(str(spec or SYMMETRIC_DEFAULT))

    def set_spec(self, spec: str) -> None:
        """Offer only the usages ``spec`` supports (the menu the HTMX swap re-renders)."""
        field = self.fields["key_usage"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = usage_choices(spec)
        self.fields["key_usage"].widget.attrs["id"] = "id_key_usage"

    def clean_alias(self) -> str:
        return clean_alias_name(self.cleaned_data["alias"])

    def clean_tags(self) -> list[dict[str, str]]:
        return parse_tags(self.cleaned_data["tags"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        spec = data.get("key_spec")
        if spec and spec != SYMMETRIC_DEFAULT and data.get("rotation_enabled"):
            self.add_error(
                "rotation_enabled",
                "Automatic rotation is available only for symmetric encryption keys; untick it for this key spec.",
            )
        elif data.get("origin") == "EXTERNAL" and data.get("rotation_enabled"):
            self.add_error(
                "rotation_enabled",
                "Keys with imported material cannot rotate automatically: untick this for an external key.",
            )
        return data


class ConfirmKeyIdForm(forms.Form):
    """A destructive action the user confirms by typing the key's id."""

    confirm = forms.CharField(label="Type the key id to confirm")

    def __init__(self, *args: Any, key_id: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_id = key_id

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"].strip()
        if value != self.key_id:
            raise forms.ValidationError("That is not this key's id.")
        return value


class DeleteImportedMaterialForm(ConfirmKeyIdForm):
    pass


class ScheduleDeletionForm(ConfirmKeyIdForm):
    pending_window_days = forms.IntegerField(min_value=7, max_value=30, initial=30, label="Waiting period (days)")
    field_order = ["pending_window_days", "confirm"]


class RotationForm(forms.Form):
    enabled = forms.BooleanField(required=False)
    rotation_period_days = forms.IntegerField(
        min_value=90,
        max_value=2560,
        initial=365,
        required=False,
        widget=forms.NumberInput(attrs={"aria-label": "Rotation period in days"}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("enabled") and not data.get("rotation_period_days"):
            self.add_error("rotation_period_days", "Give a period of 90 to 2560 days.")
        return data


class AliasForm(forms.Form):
    alias = forms.CharField(max_length=256, widget=forms.TextInput(attrs={"aria-label": "New alias"}))

    def clean_alias(self) -> str:
        value = clean_alias_name(self.cleaned_data["alias"])
        if not value:
            raise forms.ValidationError("Give an alias name.")
        return value


class TagForm(forms.Form):
    tag_key = forms.CharField(max_length=128, label="Key", widget=forms.TextInput(attrs={"placeholder": "Key"}))
    tag_value = forms.CharField(
        max_length=256, required=False, label="Value", widget=forms.TextInput(attrs={"placeholder": "Value"})
    )

    def clean_tag_key(self) -> str:
        value = self.cleaned_data["tag_key"].strip()
        if value.lower().startswith("aws:"):
            raise forms.ValidationError("Tag keys beginning with 'aws:' are reserved.")
        return value


class PolicyForm(forms.Form):
    policy = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 18, "spellcheck": "false", "data-policy-editor": "json"})
    )

    def mark_error_position(self) -> None:
        """Hand the JSON error's line and column to the editor, which marks them."""
        for error in self.errors.as_data().get("policy", []):
            if error.code == "json" and error.params:
                self.fields["policy"].widget.attrs.update(
                    {
                        "data-error-line": error.params["line"],
                        "data-error-column": error.params["column"],
                        "data-error-message": error.messages[0],
                        "aria-invalid": "true",
                    }
                )

    def clean_policy(self) -> str:
        text = self.cleaned_data["policy"]
        if len(text.encode()) > 32 * 1024:
            raise forms.ValidationError("A key policy is at most 32 KiB.")
        try:
            problem = json_problem(text)
        except RecursionError:
            raise forms.ValidationError("The policy is not valid JSON: it is nested too deeply.") from None
        if problem is not None:
            where = f" The line reads: {problem.excerpt}" if problem.excerpt else ""
            raise forms.ValidationError(
                f"The policy is not valid JSON. {problem}{where}",
                code="json",
                params={"line": problem.line, "column": problem.column},
            )
        doc = json.loads(text)
        if not isinstance(doc, dict) or "Statement" not in doc:
            raise forms.ValidationError("A key policy is a JSON object with a Statement.")
        return text


class DescriptionForm(forms.Form):
    description = forms.CharField(
        required=False, max_length=8192, widget=forms.TextInput(attrs={"aria-label": "Description"})
    )


class GrantApprovalsForm(forms.Form):
    required = forms.TypedChoiceField(
        choices=[(1, "1 approver"), (2, "2 distinct approvers")],
        coerce=int,
        label="Grant requests need",
        widget=forms.Select(attrs={"aria-label": "Grant requests need"}),
    )


_ACCOUNT_SPLIT = re.compile(r"[\s,]+")


class DefaultPolicyViewForm(forms.Form):
    """AWS's default view of a key policy: three lists of principals."""

    administrators = forms.MultipleChoiceField(
        required=False,
        label="Key administrators",
        help_text="May manage the key (policy, tags, rotation, deletion) but not use it.",
        widget=forms.CheckboxSelectMultiple,
    )
    users = forms.MultipleChoiceField(
        required=False,
        label="Key users",
        help_text="May use the key in cryptographic operations, and grant it to AWS-integrated services.",
        widget=forms.CheckboxSelectMultiple,
    )
    other_accounts = forms.CharField(
        required=False,
        label="Other accounts",
        help_text="12-digit account IDs whose principals may use the key (as their own identity policies allow).",
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
    )

    def __init__(self, *args: Any, principal_arns: list[str], account_id: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.account_id = account_id
        choices = [(arn, arn.split(":", 5)[-1]) for arn in principal_arns]
        for name in ("administrators", "users"):
            field = self.fields[name]
            assert isinstance(field, forms.MultipleChoiceField)
            field.choices = choices

    def clean_other_accounts(self) -> list[str]:
        accounts = [a for a in _ACCOUNT_SPLIT.split(self.cleaned_data["other_accounts"].strip()) if a]
        for account in accounts:
            if not re.fullmatch(r"\d{12}", account):
                raise forms.ValidationError(f"“{account[:40]}” is not an account ID: an account ID is 12 digits.")
            if account == self.account_id:
                raise forms.ValidationError(f"{account} is this account: choose its principals as key users instead.")
        return list(dict.fromkeys(accounts))
