"""Filters of the audit log page and the request of a pseudonym mapping export."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.apps import apps
from django.db.models import QuerySet
from django.utils import timezone

from adit.core.validators import validate_no_backslash_or_control_characters

from .models import AuditEntry, PseudonymMapping

EXPORT_FORMATS = [("csv", "CSV"), ("xlsx", "Excel (.xlsx)")]


class AuditFilterForm(forms.Form):
    """GET filters of the audit log; all optional, combined with AND."""

    user = forms.CharField(
        required=False, max_length=150, label="User", help_text="User name (exact)"
    )
    patient_id = forms.CharField(
        required=False,
        max_length=64,
        label="Patient ID",
        validators=[validate_no_backslash_or_control_characters],
    )
    study_uid = forms.CharField(
        required=False,
        max_length=64,
        label="Study Instance UID",
        validators=[validate_no_backslash_or_control_characters],
    )
    action = forms.ChoiceField(
        required=False, choices=[("", "All actions"), *AuditEntry.Action.choices]
    )
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="Until", widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise forms.ValidationError("The “From” date lies after the “Until” date.")
        return data

    def filter(self, entries: QuerySet) -> QuerySet:
        """The entries matching the (valid) filters."""
        data = self.cleaned_data
        if data.get("user"):
            entries = entries.filter(username=data["user"])
        if data.get("patient_id"):
            entries = entries.filter(patient_id=data["patient_id"])
        if data.get("study_uid"):
            entries = entries.filter(study_uid=data["study_uid"])
        if data.get("action"):
            entries = entries.filter(action=data["action"])
        if data.get("since"):
            entries = entries.filter(time__gte=_start_of(data["since"]))
        if data.get("until"):
            entries = entries.filter(time__lt=_start_of(data["until"] + dt.timedelta(days=1)))
        return entries

    def as_params(self) -> dict[str, str]:
        """The filters as query parameters (for pagination and export links)."""
        return {
            name: str(value) for name, value in self.cleaned_data.items() if value not in (None, "")
        }


def _start_of(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=timezone.get_current_timezone())


def transfer_job_types() -> list[tuple[str, str]]:
    """(app label, name) of every installed transfer job model."""
    from adit.core.models import TransferJob

    return sorted(
        (model._meta.app_label, str(model._meta.verbose_name).capitalize())
        for model in apps.get_models()
        if issubclass(model, TransferJob)
    )


class MappingExportForm(forms.Form):
    """What to export: the mapping of one job, or of one pseudonym across all jobs."""

    job_type = forms.ChoiceField(required=False, label="Job type", choices=[])
    job_id = forms.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, label="Job number"
    )
    pseudonym = forms.CharField(
        required=False,
        max_length=64,
        validators=[validate_no_backslash_or_control_characters],
    )
    format = forms.ChoiceField(choices=EXPORT_FORMATS, initial="csv")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        job_type = self.fields["job_type"]
        assert isinstance(job_type, forms.ChoiceField)
        job_type.choices = [("", "—"), *transfer_job_types()]

    def clean(self):
        data = super().clean()
        has_job = bool(data.get("job_type")) or data.get("job_id") is not None
        if has_job and not (data.get("job_type") and data.get("job_id") is not None):
            raise forms.ValidationError("Give both the job type and the job number.")
        if not has_job and not data.get("pseudonym"):
            raise forms.ValidationError("Give a job (type and number) or a pseudonym.")
        return data

    def mappings(self) -> QuerySet:
        data = self.cleaned_data
        rows = PseudonymMapping.objects.all()
        if data.get("job_type"):
            rows = rows.filter(job_type=data["job_type"], job_id=data["job_id"])
        if data.get("pseudonym"):
            rows = rows.filter(pseudonym=data["pseudonym"])
        return rows.order_by("created", "job_type", "job_id", "task_id", "study_uid", "series_uid")

    def request_details(self) -> dict[str, str]:
        """What was asked for, as the audit entry records it."""
        return {
            name: str(value) for name, value in self.cleaned_data.items() if value not in (None, "")
        }
