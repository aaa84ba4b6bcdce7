"""Sign-in and second-factor forms."""

from __future__ import annotations

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
