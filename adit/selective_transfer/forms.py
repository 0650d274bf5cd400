"""The one form of the selective transfer page: nodes, query fields and transfer options.

The same form serves the WebSocket (JSON of the fields) and the plain POST fallback. What is
required depends on the action: a query needs a source and a search criterion; a transfer
additionally needs a destination, selected studies and (unless the user may transfer
unpseudonymized data) a pseudonym.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from adit.core.deidentification import (
    DEID_OPTION_CHOICES,
    DEID_OPTIONS_HELP,
    group_default_options,
    options_for_new_job,
)
from adit.core.dicom.query import QueryDataset, parse_date, person_name_to_dicom
from adit.core.models import DicomNode
from adit.core.query_fields import (
    ACCESSION_HELP,
    DESCRIPTION_HELP,
    MODALITIES_HELP,
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

ACTIONS = ("query", "transfer")
PREFERENCE_KEYS = {
    "source": "selective_transfer_source",
    "destination": "selective_transfer_destination",
    "urgent": "selective_transfer_urgent",
    "send_finished_mail": "selective_transfer_send_finished_mail",
}
QUERY_FIELDS = (
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "study_date",
    "modalities",
    "accession_number",
    "study_description",
    "study_uid",
)
_DATE = r"\d{8}|\d{4}-\d{2}-\d{2}|\d{2}\.\d{2}\.\d{4}"
_DATE_RANGE = re.compile(rf"^\s*({_DATE})?\s*(?:-|–|to)\s*({_DATE})?\s*$")
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")
DATE_HELP = "YYYY-MM-DD, DD.MM.YYYY or YYYYMMDD"


def parse_date_or_range(value: str, label: str) -> tuple[dt.date | None, dt.date | None]:
    """A single date (start = end) or a range ``start - end`` (either side may be open).

    Raises:
        ValidationError: naming the field and what was wrong.
    """
    text = value.strip()
    try:
        day = parse_date(text)
        return day, day
    except ValueError:
        pass
    if re.fullmatch(_DATE, text):
        raise ValidationError(f"{label} {value!r} does not exist in the calendar.")
    match = _DATE_RANGE.fullmatch(text)
    if not match or not any(match.groups()):
        raise ValidationError(
            f"{label} {value!r} is not a date or date range ({DATE_HELP}; a range like "
            "2024-01-01 - 2024-03-31)."
        )
    try:
        start, end = (parse_date(part) if part else None for part in match.groups())
    except ValueError:
        raise ValidationError(
            f"{label} {value!r} contains a date that does not exist ({DATE_HELP})."
        ) from None
    if start and end and start > end:
        raise ValidationError(f"{label}: the start {start} is after the end {end}.")
    return start, end


class NodeChoiceField(forms.ModelChoiceField):
    """A node the user's active group may use; anything else is an error naming the field."""

    def __init__(self, direction: str, **kwargs) -> None:
        self.direction = direction
        super().__init__(
            queryset=DicomNode.objects.none(),
            error_messages={
                "invalid_choice": f"The chosen {direction} is unknown or your active group may "
                f"not use it as {direction}.",
                "required": f"Choose a {direction}.",
            },
            **kwargs,
        )

    def label_from_instance(self, obj) -> str:
        return obj.name


@dataclass(frozen=True)
class SelectedStudy:
    patient_id: str
    study_uid: str
    # Empty: the whole study; else only these series (picked in the expanded study).
    series_uids: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.patient_id}\\{self.study_uid}"


MAX_SERIES_PER_STUDY = 1000


def parse_selected_series(key: str) -> tuple[SelectedStudy, str]:
    """A picked series ``PatientID\\StudyInstanceUID\\SeriesInstanceUID``: its study and UID."""
    study_key, separator, series_uid = key.rpartition("\\")
    if not separator or not series_uid:
        raise ValidationError(f"The selected series {key!r} is malformed.")
    study = parse_selected_study(study_key)
    try:
        validate_uid(series_uid)
    except ValidationError as error:
        raise ValidationError(
            f"The selected series {key!r} is invalid: {' '.join(error.messages)}"
        ) from None
    return study, series_uid


def parse_selected_study(key: str) -> SelectedStudy:
    patient_id, separator, study_uid = key.partition("\\")
    if not separator or not patient_id or not study_uid:
        raise ValidationError(f"The selected study {key!r} is malformed.")
    # The PatientID is the PACS's own (it may hold "/", "%", "#", even "*" or "?"); the study
    # UID identifies the study, and the DICOM layer leaves a PatientID with wildcards out.
    try:
        validate_no_backslash_or_control_characters(patient_id)
        validate_uid(study_uid)
    except ValidationError as error:
        raise ValidationError(
            f"The selected study {key!r} is invalid: {' '.join(error.messages)}"
        ) from None
    return SelectedStudy(patient_id, study_uid)


class SelectiveTransferForm(forms.Form):
    source = NodeChoiceField("source")
    destination = NodeChoiceField("destination", required=False)

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
    patient_birth_date = forms.CharField(
        label="Birth date", max_length=20, required=False, help_text=DATE_HELP
    )
    study_date = forms.CharField(
        label="Study date",
        max_length=50,
        required=False,
        help_text=STUDY_DATE_HELP,
    )
    modalities = forms.CharField(
        label="Modalities", max_length=100, required=False, help_text=MODALITIES_HELP
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
    study_uid = forms.CharField(
        label="Study Instance UID",
        max_length=64,
        required=False,
        validators=[validate_no_wildcards, validate_uid],
    )

    pseudonym = forms.CharField(
        max_length=64,
        required=False,
        validators=[validate_no_backslash_or_control_characters],
        help_text="Replaces patient name and ID; other identifying data is removed.",
    )
    trial_protocol_id = forms.CharField(
        label="Trial protocol ID",
        max_length=64,
        required=False,
        validators=[validate_no_backslash_or_control_characters],
    )
    trial_protocol_name = forms.CharField(
        label="Trial protocol name",
        max_length=64,
        required=False,
        validators=[validate_no_backslash_or_control_characters],
    )
    deid_options = forms.MultipleChoiceField(
        label="De-identification options",
        choices=DEID_OPTION_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple(attrs={"class": "form-check-input"}),
        help_text=DEID_OPTIONS_HELP,
    )
    archive_password = forms.CharField(
        max_length=64,
        required=False,
        widget=forms.PasswordInput(render_value=True),
        help_text="Only for folder destinations: the studies go into an encrypted archive.",
    )
    urgent = forms.BooleanField(required=False, help_text="Process before other jobs.")
    send_finished_mail = forms.BooleanField(
        label="Email me when the job has finished", required=False
    )

    def __init__(self, *args, user, action: str = "query", **kwargs) -> None:
        if action not in ACTIONS:
            action = "query"
        self.user = user
        self.action = action
        super().__init__(*args, **kwargs)
        source_field = self.fields["source"]
        destination_field = self.fields["destination"]
        assert isinstance(source_field, NodeChoiceField)
        assert isinstance(destination_field, NodeChoiceField)
        # Folders cannot be queried, so only servers are sources.
        source_field.queryset = DicomNode.objects.accessible_by_user(user, "source").filter(
            node_type=DicomNode.NodeType.SERVER
        )
        destination_field.queryset = DicomNode.objects.accessible_by_user(user, "destination")
        if not user.has_perm("selective_transfer.can_process_urgently"):
            del self.fields["urgent"]
        self.may_transfer_unpseudonymized = user.has_perm(
            "selective_transfer.can_transfer_unpseudonymized"
        )
        for name, form_field in self.fields.items():
            widget = form_field.widget
            if isinstance(widget, forms.CheckboxInput):
                css = "form-check-input"
            elif isinstance(widget, forms.Select):
                css = "form-select"
            else:
                css = "form-control"
            widget.attrs.setdefault("class", css)
            widget.attrs.setdefault("id", f"st-{name.replace('_', '-')}")
        add_placeholders(self)
        validate_lengths_on_the_server(self)
        if not self.is_bound:
            self.fields["deid_options"].initial = group_default_options(user)
        if not self.may_transfer_unpseudonymized:
            self.fields["pseudonym"].help_text = (
                "Required: your group may only transfer pseudonymized data. "
                + str(self.fields["pseudonym"].help_text)
            )

    @property
    def destination_is_folder_ids(self) -> list[int]:
        """Ids of the folder destinations (the page shows the archive password only for them)."""
        queryset = self.fields["destination"].queryset  # type: ignore[attr-defined]
        return list(
            queryset.filter(node_type=DicomNode.NodeType.FOLDER).values_list("pk", flat=True)
        )

    def _post_clean(self) -> None:
        super()._post_clean()
        for name in self.errors:
            if name in self.fields:
                widget = self.fields[name].widget
                widget.attrs["class"] = widget.attrs.get("class", "") + " is-invalid"

    # --- field cleaning ---------------------------------------------------------------------

    def clean_deid_options(self) -> list[str]:
        try:
            return options_for_new_job(self.user, self.cleaned_data["deid_options"])
        except ValueError as error:
            raise ValidationError(str(error)) from None

    def clean_patient_birth_date(self) -> dt.date | None:
        value = self.cleaned_data["patient_birth_date"].strip()
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

    def clean_modalities(self) -> list[str]:
        value = self.cleaned_data["modalities"]
        modalities = [m.upper() for m in re.split(r"[\s,;]+", value) if m]
        bad = [m for m in modalities if not _MODALITY.fullmatch(m)]
        if bad:
            raise ValidationError(
                f"{', '.join(map(repr, bad))} is not a modality code (letters and digits, "
                "e.g. CT, MR)."
            )
        return modalities

    def clean_patient_name(self) -> str:
        value = self.cleaned_data["patient_name"].strip()
        if not value:
            return ""
        dicom_name = person_name_to_dicom(value, add_wildcards=True)
        if any(len(component) > 64 for component in dicom_name.split("^")):
            raise ValidationError("Each part of the patient name may have at most 64 characters.")
        return dicom_name

    def clean(self):
        cleaned = super().clean()
        if not self.errors and not any(cleaned.get(name) for name in QUERY_FIELDS):
            raise ValidationError(
                "Enter at least one search criterion (e.g. a patient ID or a study date)."
            )
        if self.action == "transfer":
            self._clean_for_transfer(cleaned)
        destination = cleaned.get("destination")
        if cleaned.get("archive_password") and not (destination and destination.is_folder):
            # A password only makes sense for an archive in a folder; drop it silently otherwise.
            cleaned["archive_password"] = ""
        return cleaned

    def _clean_for_transfer(self, cleaned: dict) -> None:
        if not cleaned.get("destination") and "destination" not in self.errors:
            self.add_error("destination", "Choose a destination to transfer to.")
        if not cleaned.get("pseudonym") and not self.may_transfer_unpseudonymized:
            if "pseudonym" not in self.errors:
                self.add_error(
                    "pseudonym",
                    "A pseudonym is required: your group may not transfer unpseudonymized data.",
                )

    # --- what the form means ----------------------------------------------------------------

    def query_dataset(self) -> QueryDataset:
        """The STUDY-level query of the cleaned form."""
        data = self.cleaned_data
        values: dict = {"QueryRetrieveLevel": "STUDY"}
        if data.get("patient_id"):
            values["PatientID"] = data["patient_id"].strip()
        if data.get("patient_name"):
            values["PatientName"] = data["patient_name"]
        if data.get("patient_birth_date"):
            values["PatientBirthDate"] = data["patient_birth_date"]
        if data.get("study_date"):
            values["StudyDate"] = data["study_date"]
        if data.get("modalities"):
            values["ModalitiesInStudy"] = data["modalities"]
        if data.get("accession_number"):
            values["AccessionNumber"] = data["accession_number"].strip()
        if data.get("study_description"):
            values["StudyDescription"] = data["study_description"].strip()
        if data.get("study_uid"):
            values["StudyInstanceUID"] = data["study_uid"].strip()
        return QueryDataset.create(**values)

    def selected_studies(
        self, keys: list[str], series_keys: list[str] | None = None
    ) -> list[SelectedStudy]:
        """The studies chosen for a transfer; errors are added to the form (non-field).

        A study with picked series (``series_keys``) is transferred with those series only; its
        own checkbox need not be sent. A study without picked series goes whole.
        """
        series_of: dict[str, list[str]] = {}
        for series_key in dict.fromkeys(series_keys or []):
            try:
                study, series_uid = parse_selected_series(series_key)
            except ValidationError as error:
                self.add_error(None, error)
                continue
            series_of.setdefault(study.key, []).append(series_uid)
        if self.errors:
            return []
        too_many = [key for key, uids in series_of.items() if len(uids) > MAX_SERIES_PER_STUDY]
        if too_many:
            self.add_error(
                None,
                f"At most {MAX_SERIES_PER_STUDY} series of one study may be picked; pick the "
                "whole study instead.",
            )
            return []
        keys = [*keys, *series_of]
        if not keys:
            self.add_error(None, "Select at least one study to transfer.")
            return []
        limit = settings.SELECTIVE_TRANSFER_MAX_SELECTION
        unique = list(dict.fromkeys(keys))
        if len(unique) > limit and not self.user.is_staff:
            self.add_error(
                None,
                f"You selected {len(unique)} studies; at most {limit} may be transferred in "
                "one job.",
            )
            return []
        studies = []
        for key in unique:
            try:
                study = parse_selected_study(key)
            except ValidationError as error:
                self.add_error(None, error)
                continue
            studies.append(
                SelectedStudy(study.patient_id, study.study_uid, tuple(series_of.get(key, ())))
            )
        return studies if not self.errors else []


class StudySeriesForm(forms.Form):
    """Which study's series the page asks for (GET parameters of the expand button)."""

    source = NodeChoiceField("source")
    patient_id = forms.CharField(
        label="Patient ID",
        max_length=64,
        strip=False,
        validators=[validate_no_backslash_or_control_characters],
    )
    study_uid = forms.CharField(
        label="Study Instance UID", max_length=64, validators=[validate_no_wildcards, validate_uid]
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        source_field = self.fields["source"]
        assert isinstance(source_field, NodeChoiceField)
        source_field.queryset = DicomNode.objects.accessible_by_user(user, "source").filter(
            node_type=DicomNode.NodeType.SERVER
        )


def initial_from_query(params) -> dict:
    """Prefill from GET parameters (links like the DICOM explorer's "Transfer…"): the source and
    the query fields only. They are initial values, so the form validates them on submit like
    anything typed; values that could not be valid are left out here already."""
    initial: dict = {}
    source = params.get("source", "")
    if source.isdigit():
        initial["source"] = int(source)
    for name in QUERY_FIELDS:
        value = params.get(name, "")
        if value and len(value) <= 200:
            initial[name] = value
    return initial


def initial_from_preferences(user) -> dict:
    preferences = user.preferences or {}
    return {field: preferences[key] for field, key in PREFERENCE_KEYS.items() if key in preferences}


def remember_preferences(user, cleaned_data: dict) -> None:
    """Store the chosen nodes and switches, so the next visit starts with them."""
    preferences = dict(user.preferences or {})
    for field, key in PREFERENCE_KEYS.items():
        if field not in cleaned_data:
            continue
        value = cleaned_data[field]
        if isinstance(value, DicomNode):
            value = value.pk
        elif value is None:
            continue
        preferences[key] = value
    if preferences != user.preferences:
        user.preferences = preferences
        user.save(update_fields=["preferences"])


def render_form_fields(form: SelectiveTransferForm) -> str:
    """The form's fields as the page shows them (also sent over the WebSocket)."""
    from django.template.loader import render_to_string

    return render_to_string(
        "selective_transfer/_form_fields.html",
        {"form": form, "folder_ids": form.destination_is_folder_ids},
    )
