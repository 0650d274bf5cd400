"""What the query forms (selective transfer, DICOM explorer) tell users about their fields.

DICOM matching is exact unless the value holds wildcards: ``*`` for any run of characters and
``?`` for one character; ``Thorax`` does not find "CT Thorax", ``*Thorax*`` does. Users expect
a search box to find parts of words, so every field says how it matches.

The forms validate lengths on the server and say so: a ``maxlength`` attribute would let a
browser cut a pasted 70-character patient ID to 64 without a word, and the query would then
look for a different patient.
"""

from __future__ import annotations

from django import forms

WILDCARD_HELP = "* matches any characters, ? one character"
PATIENT_ID_HELP = f"Exact ID; {WILDCARD_HELP} (e.g. 1234*)."
PATIENT_NAME_HELP = "Last, First. Each part matches from its start (Muster finds Mustermann)."
DESCRIPTION_HELP = (
    f"Matches the whole description: *Thorax* finds \u201cCT Thorax nativ\u201d; {WILDCARD_HELP}."
)
ACCESSION_HELP = f"Exact number; {WILDCARD_HELP}."
STUDY_DATE_HELP = "A date or a range (YYYY-MM-DD - YYYY-MM-DD; either side may be left open)."
MODALITIES_HELP = "Codes such as CT or MR; several separated by commas."

# Placeholders describe the format; they must not look like a value someone already typed.
PLACEHOLDERS = {
    "patient_id": "any ID or pattern",
    "patient_name": "Last, First",
    "patient_birth_date": "YYYY-MM-DD",
    "birth_date": "YYYY-MM-DD",
    "study_date": "date or range",
    "modalities": "CT, MR …",
    "modality": "CT, MR …",
    "accession_number": "number or pattern",
    "study_description": "*word*",
    "study_uid": "1.2.840…",
}


def validate_lengths_on_the_server(form: forms.Form) -> None:
    """Drop the ``maxlength`` attributes and make a too long value an error that names the
    field and both lengths (instead of the browser silently truncating pasted text)."""
    for name, form_field in form.fields.items():
        if not isinstance(form_field, forms.CharField) or form_field.max_length is None:
            continue
        form_field.widget.attrs.pop("maxlength", None)
        label = form_field.label or name.replace("_", " ").capitalize()
        form_field.error_messages["max_length"] = (
            f"{label} may have at most %(limit_value)d characters; "
            "you entered %(show_value)d. Nothing was cut: check the value and shorten it."
        )


def add_placeholders(form: forms.Form) -> None:
    for name, text in PLACEHOLDERS.items():
        if name in form.fields:
            form.fields[name].widget.attrs["placeholder"] = text
