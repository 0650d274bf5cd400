"""The upload form: where the files go and under which pseudonym (the files come separately)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from adit.core.dicom.pseudonymizer import validate_lo_value
from adit.core.models import DicomNode
from adit.core.validators import validate_no_backslash_or_control_characters
from adit.selective_transfer.forms import NodeChoiceField


class UploadJobForm(forms.Form):
    destination = NodeChoiceField("destination")
    pseudonym = forms.CharField(
        max_length=64,
        required=False,
        validators=[validate_no_backslash_or_control_characters],
        help_text="Becomes PatientID and PatientName of every file (in your browser).",
    )
    trial_protocol_id = forms.CharField(
        label="Trial protocol ID",
        max_length=64,
        required=False,
        validators=[validate_no_backslash_or_control_characters],
    )
    trial_protocol_name = forms.CharField(
        max_length=64, required=False, validators=[validate_no_backslash_or_control_characters]
    )
    # What the browser is about to send (checked again as the files arrive).
    total_size = forms.IntegerField(min_value=0, required=False, widget=forms.HiddenInput)

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        destination = self.fields["destination"]
        assert isinstance(destination, NodeChoiceField)
        destination.queryset = DicomNode.objects.accessible_by_user(user, "destination")
        self.may_upload_unpseudonymized = user.has_perm("upload.can_transfer_unpseudonymized")
        self.fields["pseudonym"].required = not self.may_upload_unpseudonymized
        if not self.may_upload_unpseudonymized:
            self.fields["pseudonym"].help_text = (
                "Required: your group may only upload pseudonymized data. "
                + str(self.fields["pseudonym"].help_text)
            )
            self.fields["pseudonym"].error_messages["required"] = (
                "A pseudonym is required: your group may only upload pseudonymized data."
            )
        for name, field in self.fields.items():
            css = "form-select" if isinstance(field.widget, forms.Select) else "form-control"
            field.widget.attrs.setdefault("class", css)
            field.widget.attrs.setdefault("id", f"upload-{name.replace('_', '-')}")

    def clean_pseudonym(self) -> str:
        value = self.cleaned_data.get("pseudonym", "").strip()
        if value:
            try:
                validate_lo_value(value, "Pseudonym")
            except ValueError as error:
                raise forms.ValidationError(str(error)) from None
        return value

    def clean_total_size(self) -> int:
        size = self.cleaned_data.get("total_size") or 0
        limit = settings.UPLOAD_MAX_JOB_SIZE
        if size > limit:
            raise forms.ValidationError(
                f"The files add up to {filesizeformat(size)}; one upload may hold at most "
                f"{filesizeformat(limit)}. Upload the folder in parts."
            )
        return size
