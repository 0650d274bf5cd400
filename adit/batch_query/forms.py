from __future__ import annotations

from django import forms

from adit.core.models import DicomNode, DicomServer
from adit.core.query_fields import validate_lengths_on_the_server
from adit.core.spreadsheets import (
    Problems,
    SpreadsheetContentError,
    SpreadsheetError,
    sheet_settings,
)

from .parsers import parse_batch_query_file


class BatchQueryJobForm(forms.Form):
    source = forms.ModelChoiceField(queryset=DicomNode.objects.none(), empty_label=None)
    project_name = forms.CharField(max_length=150)
    project_description = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))
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
        self.rows: list = []
        servers = DicomServer.objects.values("pk")
        source = self.fields["source"]
        assert isinstance(source, forms.ModelChoiceField)
        source.queryset = DicomNode.objects.accessible_by_user(user, "source").filter(
            pk__in=servers
        )
        if not user.has_perm("batch_query.can_process_urgently"):
            del self.fields["urgent"]
        for form_field in self.fields.values():
            widget = form_field.widget
            css = {"checkbox": "form-check-input", "select": "form-select"}.get(
                getattr(widget, "input_type", ""), "form-control"
            )
            widget.attrs.setdefault("class", css)
        self.fields["batch_file"].widget.attrs["accept"] = ".xlsx,.csv"
        validate_lengths_on_the_server(self)

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("batch_file")
        if upload is None:
            return cleaned
        try:
            self.rows = parse_batch_query_file(upload, **sheet_settings("BATCH_QUERY", self.user))
        except SpreadsheetError as error:
            self.add_error("batch_file", str(error))
        except SpreadsheetContentError as error:
            self.problems = error.problems
            self.add_error("batch_file", str(error))
        return cleaned
