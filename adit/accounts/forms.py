"""Forms of the accounts pages."""

from datetime import datetime
from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.utils import timezone

from .models import NEVER_EXPIRING_TOKEN_PERMISSION, TOKEN_EXPIRY_CHOICES, User


class BootstrapFormMixin:
    """Give every widget the Bootstrap 5 class it needs (form-control, form-select, ...)."""

    fields: dict[str, forms.Field]

    def style_fields(self) -> None:
        for field in self.fields.values():
            widget = field.widget
            if isinstance(widget, forms.CheckboxInput):
                css_class = "form-check-input"
            elif isinstance(widget, forms.Select):
                css_class = "form-select"
            else:
                css_class = "form-control"
            existing = widget.attrs.get("class", "")
            widget.attrs["class"] = f"{existing} {css_class}".strip()


class LoginForm(BootstrapFormMixin, AuthenticationForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.style_fields()


class StyledPasswordChangeForm(BootstrapFormMixin, PasswordChangeForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.style_fields()


class TokenCreateForm(BootstrapFormMixin, forms.Form):
    """A new API token: what it is for and how long it stays valid."""

    description = forms.CharField(
        max_length=120,
        required=False,
        help_text="What the token is used for, e.g. the script or machine.",
    )
    expiry = forms.ChoiceField(
        label="Expires after",
        choices=[(value, label) for value, (label, _) in TOKEN_EXPIRY_CHOICES.items()],
        initial="30",
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.may_create_never_expiring = user.has_perm(NEVER_EXPIRING_TOKEN_PERMISSION)
        if not self.may_create_never_expiring:
            # Only hide the choice here; clean_expiry rejects it with a clear message.
            expiry_field = self.fields["expiry"]
            assert isinstance(expiry_field.widget, forms.Select)
            expiry_field.widget.choices = [
                (value, label)
                for value, (label, duration) in TOKEN_EXPIRY_CHOICES.items()
                if duration is not None
            ]
        self.style_fields()

    def clean_expiry(self) -> str:
        expiry = self.cleaned_data["expiry"]
        if TOKEN_EXPIRY_CHOICES[expiry][1] is None and not self.may_create_never_expiring:
            raise forms.ValidationError(
                "You are not allowed to create tokens that never expire; choose an expiry "
                "period of 1, 7, 30 or 90 days.",
                code="never_not_permitted",
            )
        return expiry

    def expires_at(self) -> datetime | None:
        duration = TOKEN_EXPIRY_CHOICES[self.cleaned_data["expiry"]][1]
        return None if duration is None else timezone.now() + duration
