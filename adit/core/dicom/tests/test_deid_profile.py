"""The PS3.15 Basic Profile and its options on the PHI-rich corpus (no network, no database).

Each test pseudonymizes copies of `make_phi_corpus()` and scans every element of every output
(sequences, private blocks and file meta included) for the source's identifying values.
"""

import copy

import pytest
from dicognito.pnanonymizer import PNAnonymizer
from pydicom.dataset import Dataset

from adit.core.dicom import deid_profile
from adit.core.dicom.pseudonymizer import (
    BURNED_IN_EXCLUSION_TEXT,
    CLEANED_TEXT,
    InstanceTransformer,
    PseudonymizedInstance,
    Pseudonymizer,
)
from adit.core.dicom.testing import phi_corpus
from adit.core.dicom.testing.phi_corpus import find_identifiers, make_phi_corpus

SEED = "profile-test-seed"


def deidentified(corpus, options=(), seed=SEED) -> list[Dataset]:
    pseudonymizer = Pseudonymizer(seed=seed, options=options)
    outputs = copy.deepcopy(corpus.datasets)
    for ds in outputs:
        pseudonymizer.pseudonymize(ds, "PSEUDO-7")
    return outputs


def leaked_uids(outputs, corpus) -> set[str]:
    found = set()
    for ds in outputs:
        for element in ds.iterall():
            if element.VR == "UI" and str(element.value) in corpus.original_uids:
                found.add(f"{element.keyword}={element.value}")
    return found


def test_the_corpus_is_full_of_identifiers_and_none_is_a_dummy_name():
    corpus = make_phi_corpus()
    assert find_identifiers(corpus.datasets, corpus.all_identifiers()) == corpus.all_identifiers()
    dummies = set(PNAnonymizer._last_names + PNAnonymizer._all_first_names)
    assert not {value.upper() for value in corpus.identifiers["patient"]} & dummies


def test_default_profile_leaves_no_identifying_value_anywhere():
    corpus = make_phi_corpus()

    outputs = deidentified(corpus)

    assert find_identifiers(outputs, corpus.all_identifiers()) == set()
    assert leaked_uids(outputs, corpus) == set()
    for ds in outputs:
        assert not [element.tag for element in ds if element.tag.is_private]
        assert not [element.tag for element in ds if element.tag.group & 0xFF00 == 0x6000]
        assert (ds.PatientID, str(ds.PatientName)) == ("PSEUDO-7", "PSEUDO-7")
        assert ds.PatientIdentityRemoved == "YES"
        assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == ["113100"]
        assert ds.DeidentificationMethod == (
            "DICOM PS3.15 Basic Application Confidentiality Profile"
        )
        for keyword in ("SecondaryReviewerName", "AcquisitionDeviceProcessingCode"):
            assert keyword not in ds, "fail closed: identifying VRs outside the table go"
        assert ds.Manufacturer == "ADIT Synthetic", "safe technical text stays"
        assert "PatientAge" not in ds and ds.PatientSex == ""


def test_sr_content_keeps_its_structure_but_no_text_names_or_dates():
    corpus = make_phi_corpus()

    sr = next(ds for ds in deidentified(corpus) if ds.Modality == "SR")

    pname, when, container = sr.ContentSequence
    text, number = container.ContentSequence
    assert text.TextValue == "REMOVED"
    assert str(pname.PersonName) not in ("", phi_corpus.READER)
    assert when.DateTime == "19000101000000"
    assert number.MeasuredValueSequence[0].NumericValue == 6
    assert text.ConceptNameCodeSequence[0].CodeMeaning == "Finding"


def identifiers_surviving(options) -> set[str]:
    corpus = make_phi_corpus()
    outputs = deidentified(corpus, options)
    assert leaked_uids(outputs, corpus) == set()
    return find_identifiers(outputs, corpus.all_identifiers())


@pytest.mark.parametrize(
    "option, retained",
    [
        ("retain_institution_identity", "institution"),
        ("retain_device_identity", "device"),
        ("retain_full_dates", "dates"),
    ],
)
def test_each_retain_option_keeps_exactly_its_values(option, retained):
    corpus = make_phi_corpus()

    assert identifiers_surviving([option]) == corpus.identifiers[retained]


@pytest.mark.parametrize(
    "option",
    [
        "retain_modified_dates",
        "retain_patient_characteristics",
        "clean_descriptors",
        "clean_structured_content",
        "retain_safe_private",
    ],
)
def test_options_that_keep_no_identifying_value(option):
    assert identifiers_surviving([option]) == set()


def test_retain_patient_characteristics_keeps_age_sex_size_weight_and_cleans_allergies():
    corpus = make_phi_corpus()
    original = corpus.datasets[0]

    basic = deidentified(corpus)[0]
    kept = deidentified(corpus, ["retain_patient_characteristics"])[0]

    for keyword in ("PatientAge", "PatientSex", "PatientSize", "PatientWeight"):
        assert kept[keyword].value == original[keyword].value, keyword
    assert "PatientWeight" not in basic and "Allergies" not in basic
    assert kept.Allergies == f"Penicillin (reported by {CLEANED_TEXT}, {CLEANED_TEXT})"
    assert kept.DeidentificationMethodCodeSequence[1].CodeValue == "113108"


def test_clean_descriptors_keeps_descriptions_without_the_patients_values():
    corpus = make_phi_corpus()

    basic = deidentified(corpus)[0]
    cleaned = deidentified(corpus, ["clean_descriptors"])[0]

    assert "StudyDescription" not in basic and "ImageComments" not in basic
    assert cleaned.StudyDescription == f"CT thorax {CLEANED_TEXT}, {CLEANED_TEXT} follow-up"
    assert cleaned.SeriesDescription == f"Axial {CLEANED_TEXT}"
    assert cleaned.ImageComments == (
        f"Patient {CLEANED_TEXT}, {CLEANED_TEXT}, born {CLEANED_TEXT}, MRN {CLEANED_TEXT}"
    )


def test_clean_structured_content_keeps_cleaned_text_items():
    corpus = make_phi_corpus()

    sr = next(
        ds for ds in deidentified(corpus, ["clean_structured_content"]) if ds.Modality == "SR"
    )

    text = sr.ContentSequence[2].ContentSequence[0]
    assert text.TextValue == f"Nodule 6 mm in {CLEANED_TEXT} {CLEANED_TEXT} (MRN {CLEANED_TEXT})"


def test_retain_safe_private_keeps_only_the_listed_private_element():
    corpus = make_phi_corpus()

    ds = deidentified(corpus, ["retain_safe_private"])[0]

    private = {element.tag: element.value for element in ds if element.tag.is_private}
    assert private == {0x00190010: "SIEMENS MR HEADER", 0x0019100C: 1000}


def test_modified_dates_shift_every_date_by_the_same_per_patient_offset():
    corpus = make_phi_corpus()

    first = deidentified(corpus, ["retain_modified_dates"])
    again = deidentified(corpus, ["retain_modified_dates"])
    other_seed = deidentified(corpus, ["retain_modified_dates"], seed="another")

    study_dates = {ds.StudyDate for ds in first}
    assert len(study_dates) == 1 and phi_corpus.STUDY_DATE not in study_dates
    assert first[0].InstanceCreationDate == first[0].StudyDate
    assert [ds.StudyDate for ds in again] == [ds.StudyDate for ds in first]
    assert other_seed[0].StudyDate != first[0].StudyDate


def test_the_result_names_what_was_replaced():
    corpus = make_phi_corpus()
    ds = copy.deepcopy(corpus.datasets[0])
    original = corpus.datasets[0]

    replaced = Pseudonymizer(seed=SEED).pseudonymize(ds, "PSEUDO-7")

    assert replaced == PseudonymizedInstance(
        original_patient_id=phi_corpus.PATIENT_ID,
        pseudonym="PSEUDO-7",
        original_study_uid=original.StudyInstanceUID,
        study_uid=ds.StudyInstanceUID,
        original_series_uid=original.SeriesInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        original_sop_instance_uid=original.SOPInstanceUID,
        sop_instance_uid=ds.SOPInstanceUID,
    )
    assert replaced.study_uid != replaced.original_study_uid


def test_transformer_excludes_burned_in_prone_instances_and_reports_them():
    corpus = make_phi_corpus()
    seen: list[PseudonymizedInstance] = []
    transformer = InstanceTransformer(
        pseudonym="PSEUDO-7", seed=SEED, exclude_modalities=(), on_pseudonymized=seen.append
    )

    results = [transformer.transform(ds) for ds in copy.deepcopy(corpus.datasets)]

    modalities = [ds.Modality if ds is not None else None for ds in results]
    assert modalities == ["CT", "CT", "SR", None, None]
    assert transformer.burned_in_count == 2
    log = transformer.exclusion_log()
    assert f"2 instance(s) {BURNED_IN_EXCLUSION_TEXT}" in log[0]
    assert "BurnedInAnnotation is YES" in log[1]
    assert "Ultrasound Image Storage without BurnedInAnnotation" in log[2]
    assert [r.original_sop_instance_uid for r in seen] == [
        ds.SOPInstanceUID for ds in corpus.datasets[:3]
    ]
    assert transformer.uid_map.patients == {phi_corpus.PATIENT_ID: "PSEUDO-7"}
    assert transformer.uid_map.studies == {
        corpus.datasets[0].StudyInstanceUID: results[0].StudyInstanceUID  # type: ignore[union-attr]
    }
    assert len(transformer.uid_map.series) == 2


def test_transformer_lets_burned_in_instances_through_when_the_job_allows_them():
    corpus = make_phi_corpus()
    transformer = InstanceTransformer(
        pseudonym="PSEUDO-7",
        seed=SEED,
        exclude_modalities=(),
        deid_options=["allow_burned_in_annotation"],
    )

    results = [transformer.transform(ds) for ds in copy.deepcopy(corpus.datasets)]

    assert None not in results
    assert transformer.exclusion_log() == []


def test_without_a_pseudonym_nothing_is_excluded_for_burned_in_text():
    corpus = make_phi_corpus()
    transformer = InstanceTransformer(trial_protocol_id="T1")

    assert all(transformer.transform(ds) is not None for ds in copy.deepcopy(corpus.datasets))


def test_the_table_covers_the_standards_rows():
    # Rows of Table E.1-1 that every edition since 2013 lists, with their Basic Profile action.
    expected = {
        0x00100010: "Z",  # Patient's Name
        0x00100020: "Z",  # Patient ID
        0x00100030: "Z",  # Patient's Birth Date
        0x00080050: "Z",  # Accession Number
        0x0020000D: "U",  # Study Instance UID
        0x00080080: "X/Z/D",  # Institution Name
        0x00081030: "X",  # Study Description
        0x0040A730: "D",  # Content Sequence
        0x00101000: "X",  # Other Patient IDs
    }
    assert {tag: deid_profile.PROFILE_ROWS[tag].basic for tag in expected} == expected
    assert len(deid_profile.PROFILE_ROWS) == 456
    assert deid_profile.profile_row(0x60023000) is not None  # overlay data, any overlay group
