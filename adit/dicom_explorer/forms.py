"""Every parameter of the explorer's URLs goes through one of these forms.

The URLs are bookmarkable, so anybody can type any value into them. A form decides what each
value may be, so that a URL can never ask the PACS more than the search form allows:

- the search fields allow DICOM wildcards (``*``, ``?``) where a person searches by a part of
  a value (patient ID, name, accession number, description), never a backslash (the DICOM
  value separator, which would turn one key into a list) or control characters;
- the drill-down identifiers are exact: UIDs follow the UID grammar, and the PatientID of a
  drill-down has no wildcards (``PatientID=*`` would list every patient's studies);
- dates exist in the calendar.

A view that gets an invalid form answers 400 and names the field (see `field_errors`).
"""

from __future__ import annotations

import datetime as dt
import re

from django import forms
from django.core.exceptions import ValidationError

from adit.core.dicom.query import QueryDataset, parse_date, person_name_to_dicom
from adit.core.query_fields import (
    ACCESSION_HELP,
    DESCRIPTION_HELP,
    PATIENT_ID_HELP,
    PATIENT_NAME_HELP,
    STUDY_DATE_HELP,
    add_placeholders,
    validate_lengths_on_the_server,
)
from adit.core.validators import (
    validate_no_backslash_or_control_characters,
    validate_no_wildcards,
    validate_uid,
)
from adit.selective_transfer.forms import DATE_HELP, parse_date_or_range

_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")
SEARCH_FIELDS = (
    "patient_id",
    "patient_name",
    "birth_date",
    "study_date",
    "modality",
    "accession_number",
    "study_description",
)


def field_errors(form: forms.Form) -> list[tuple[str, str]]:
    """(label, message) of every error, the label of the field first (for the 400 page)."""
    errors = []
    for name, messages in form.errors.items():
        label = str(form.fields[name].label) if name in form.fields else "Search"
        errors.extend((label, str(message)) for message in messages)
    return errors


class StudySearchForm(forms.Form):
    """The query form of one server (sent as GET parameters, so the result is bookmarkable)."""

    patient_id = forms.CharField(
        label="Patient ID",
        max_length=64,
        required=False,
        help_text=PATIENT_ID_HELP,
        validators=[validate_no_backslash_or_control_characters],
    )
    patient_name = forms.CharField(
        label="Patient name",
        max_length=200,
        required=False,
        help_text=PATIENT_NAME_HELP,
        validators=[validate_no_backslash_or_control_characters],
    )
    birth_date = forms.CharField(
        label="Birth date", max_length=20, required=False, help_text=DATE_HELP
    )
    study_date = forms.CharField(
        label="Study date",
        max_length=50,
        required=False,
        help_text=STUDY_DATE_HELP,
    )
    modality = forms.CharField(
        label="Modality", max_length=16, required=False, help_text="A code such as CT or MR."
    )
    accession_number = forms.CharField(
        label="Accession number",
        max_length=16,
        required=False,
        help_text=ACCESSION_HELP,
        validators=[validate_no_backslash_or_control_characters],
    )
    study_description = forms.CharField(
        label="Study description",
        max_length=64,
        required=False,
        help_text=DESCRIPTION_HELP,
        validators=[validate_no_backslash_or_control_characters],
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            field.widget.attrs.update(
                {"class": "form-control form-control-sm", "id": f"ex-{name.replace('_', '-')}"}
            )
        add_placeholders(self)
        validate_lengths_on_the_server(self)

    def _post_clean(self) -> None:
        super()._post_clean()
        for name in self.errors:
            if name in self.fields:
                widget = self.fields[name].widget
                widget.attrs["class"] += " is-invalid"

    def clean_patient_name(self) -> str:
        value = self.cleaned_data["patient_name"].strip()
        if not value:
            return ""
        dicom_name = person_name_to_dicom(value, add_wildcards=True)
        if any(len(component) > 64 for component in dicom_name.split("^")):
            raise ValidationError("Each part of the patient name may have at most 64 characters.")
        return dicom_name

    def clean_birth_date(self) -> dt.date | None:
        value = self.cleaned_data["birth_date"].strip()
        if not value:
            return None
        try:
            return parse_date(value)
        except ValueError:
            raise ValidationError(
                f"Birth date {value!r} is not a valid date ({DATE_HELP})."
            ) from None

    def clean_study_date(self) -> tuple[dt.date | None, dt.date | None] | None:
        value = self.cleaned_data["study_date"].strip()
        if not value:
            return None
        return parse_date_or_range(value, "Study date")

    def clean_modality(self) -> str:
        value = self.cleaned_data["modality"].strip().upper()
        if value and not _MODALITY.fullmatch(value):
            raise ValidationError(
                f"{value!r} is not a modality code (letters and digits, e.g. CT, MR)."
            )
        return value

    @property
    def has_criteria(self) -> bool:
        """Whether anything was searched for (an empty form shows no results, not all)."""
        return self.is_bound and any(self.data.get(name) for name in SEARCH_FIELDS)

    def query_dataset(self) -> QueryDataset:
        """The STUDY-level query of the cleaned form."""
        data = self.cleaned_data
        values: dict = {"QueryRetrieveLevel": "STUDY"}
        if data.get("patient_id"):
            values["PatientID"] = data["patient_id"].strip()
        if data.get("patient_name"):
            values["PatientName"] = data["patient_name"]
        if data.get("birth_date"):
            values["PatientBirthDate"] = data["birth_date"]
        if data.get("study_date"):
            values["StudyDate"] = data["study_date"]
        if data.get("modality"):
            values["ModalitiesInStudy"] = [data["modality"]]
        if data.get("accession_number"):
            values["AccessionNumber"] = data["accession_number"].strip()
        if data.get("study_description"):
            values["StudyDescription"] = data["study_description"].strip()
        return QueryDataset.create(**values)


def _uid_field(label: str, required: bool = True) -> forms.CharField:
    return forms.CharField(
        label=label,
        max_length=64,
        required=required,
        validators=[validate_no_wildcards, validate_uid],
    )


class LocationForm(forms.Form):
    """Where in a server's tree a page is: the patient, study, series and instance it shows.

    The UIDs come from the URL path, the PatientID from the query string (a PatientID may hold
    ``/``, which a path segment cannot carry). A view fills in only the levels it has.
    """

    patient_id = forms.CharField(
        label="Patient ID",
        max_length=64,
        required=False,
        strip=False,
        validators=[validate_no_backslash_or_control_characters, validate_no_wildcards],
    )
    study_uid = _uid_field("Study Instance UID", required=False)
    series_uid = _uid_field("Series Instance UID", required=False)
    sop_uid = _uid_field("SOP Instance UID", required=False)
    frame = forms.IntegerField(label="Frame", min_value=1, max_value=100_000, required=False)

    def __init__(self, data, *, required: tuple[str, ...] = ()) -> None:
        super().__init__(data)
        for name in required:
            self.fields[name].required = True
