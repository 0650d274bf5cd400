from __future__ import annotations

from django import forms
from django.conf import settings

from adit.core.deidentification import (
    DEID_OPTION_CHOICES,
    DEID_OPTIONS_HELP,
    group_default_options,
    options_for_new_job,
)
from adit.core.models import DicomNode, DicomServer
from adit.core.query_fields import validate_lengths_on_the_server
from adit.core.spreadsheets import (
    Problems,
    SpreadsheetContentError,
    SpreadsheetError,
    sheet_settings,
)
from adit.core.validators import validate_no_backslash_or_control_characters

from .from_query import FromQueryError, studies_from_query
from .parsers import parse_batch_transfer_file


class BatchTransferJobForm(forms.Form):
    source = forms.ModelChoiceField(queryset=DicomNode.objects.none(), empty_label=None)
    destination = forms.ModelChoiceField(queryset=DicomNode.objects.none(), empty_label=None)
    project_name = forms.CharField(max_length=150)
    project_description = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))
    ethics_application_id = forms.CharField(
        label="Ethics committee approval",
        max_length=100,
        required=False,
        validators=[validate_no_backslash_or_control_characters],
        help_text="The ID of the ethics committee's approval of the project.",
    )
    trial_protocol_id = forms.CharField(
        label="Trial ID",
        max_length=64,
        required=False,
        validators=[validate_no_backslash_or_control_characters],
        help_text="Written to ClinicalTrialProtocolID of every transferred image.",
    )
    trial_protocol_name = forms.CharField(
        label="Trial name",
        max_length=64,
        required=False,
        validators=[validate_no_backslash_or_control_characters],
        help_text="Written to ClinicalTrialProtocolName of every transferred image.",
    )
    deid_options = forms.MultipleChoiceField(
        label="De-identification options",
        choices=DEID_OPTION_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple(attrs={"class": "form-check-input"}),
        help_text=DEID_OPTIONS_HELP,
    )
    batch_file = forms.FileField(
        label="Batch file",
        help_text="An Excel workbook (.xlsx) or a CSV file (.csv, UTF-8, comma or semicolon).",
    )
    urgent = forms.BooleanField(required=False, help_text="Run before the non-urgent jobs.")
    send_finished_mail = forms.BooleanField(
        required=False, label="Send an email when the job has finished"
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.problems: Problems | None = None
        self.studies: list = []
        self.row_count = 0
        nodes = DicomNode.objects
        source = self.fields["source"]
        destination = self.fields["destination"]
        assert isinstance(source, forms.ModelChoiceField)
        assert isinstance(destination, forms.ModelChoiceField)
        source.queryset = nodes.accessible_by_user(user, "source").filter(
            pk__in=DicomServer.objects.values("pk")
        )
        destination.queryset = nodes.accessible_by_user(user, "destination")
        if settings.ETHICS_APPROVAL_REQUIRED:
            self.fields["ethics_application_id"].required = True
        if not user.has_perm("batch_transfer.can_process_urgently"):
            del self.fields["urgent"]
        for form_field in self.fields.values():
            widget = form_field.widget
            css = {"checkbox": "form-check-input", "select": "form-select"}.get(
                getattr(widget, "input_type", ""), "form-control"
            )
            widget.attrs.setdefault("class", css)
        self.fields["batch_file"].widget.attrs["accept"] = ".xlsx,.csv"
        validate_lengths_on_the_server(self)
        if not self.is_bound:
            self.fields["deid_options"].initial = group_default_options(user)

    def clean_deid_options(self) -> list[str]:
        try:
            return options_for_new_job(self.user, self.cleaned_data["deid_options"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None

    @property
    def pseudonym_required(self) -> bool:
        return not self.user.has_perm("batch_transfer.can_transfer_unpseudonymized")

    def clean(self):
        cleaned = super().clean()
        source, destination = cleaned.get("source"), cleaned.get("destination")
        if source is not None and source == destination:
            self.add_error("destination", "The destination must differ from the source.")
        upload = cleaned.get("batch_file")
        if upload is None:
            return cleaned
        try:
            self.studies = parse_batch_transfer_file(
                upload,
                pseudonym_required=self.pseudonym_required,
                **sheet_settings("BATCH_TRANSFER", self.user),
            )
        except SpreadsheetError as error:
            self.add_error("batch_file", str(error))
        except SpreadsheetContentError as error:
            self.problems = error.problems
            self.add_error("batch_file", str(error))
        return cleaned


class BatchTransferFromQueryForm(BatchTransferJobForm):
    """A batch transfer of what a batch query job found: the same options as the upload form,
    the query's source, and no file (the studies come from the query's results)."""

    def __init__(self, *args, user, query_job, **kwargs) -> None:
        super().__init__(*args, user=user, **kwargs)
        self.query_job = query_job
        del self.fields["batch_file"]
        source = self.fields["source"]
        assert isinstance(source, forms.ModelChoiceField)
        # Only the server the query asked: the found UIDs are that server's.
        source_ids = query_job.tasks.values("source_id").distinct()
        source.queryset = source.queryset.filter(pk__in=source_ids)
        source.error_messages["invalid_choice"] = (
            "The source must be the server the query asked, and your active group must be "
            "allowed to use it as source."
        )
        source.help_text = "The server the batch query asked."
        if not self.is_bound:
            self.initial.setdefault("project_name", query_job.project_name)
            self.initial.setdefault("project_description", query_job.project_description)

    def found_studies(self) -> list:
        """The studies to transfer.

        Raises:
            FromQueryError: why the found studies cannot be transferred as they are.
        """
        return studies_from_query(
            self.query_job,
            pseudonym_required=self.pseudonym_required,
            max_rows=sheet_settings("BATCH_TRANSFER", self.user)["max_rows"],
        )

    def clean(self):
        cleaned = super().clean()
        try:
            self.studies = self.found_studies()
        except FromQueryError as error:
            self.add_error(None, str(error))
        return cleaned
