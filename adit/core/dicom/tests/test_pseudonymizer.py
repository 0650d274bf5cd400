"""Tests of pseudonymization, trial protocol tagging and the pseudonym generator."""

import copy
import json
import subprocess
import sys
from collections.abc import Iterator

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from adit.core.dicom.pseudonymizer import (
    PSEUDONYM_ALPHABET,
    InstanceTransformer,
    Pseudonymizer,
    apply_trial_protocol,
    generate_pseudonym,
    should_skip,
    xnat_patient_comments,
)
from adit.core.dicom.testing.synthetic import make_study

PATIENT_ID = "PAT-7731-XQ"
PATIENT_NAME = "Smithfield^Harriet"
BIRTH_DATE = "19630415"
ACCESSION = "ACC-99812-ZK"
INSTITUTION = "Saint Example Memorial Hospital"
SEED = "job-secret-1"
SHIFT = ["retain_modified_dates"]


def make_patient_study(seed="data", **kwargs) -> list[Dataset]:
    kwargs.setdefault("series", (("CT", 3), ("MR", 2)))
    kwargs.setdefault("accession_number", ACCESSION)
    return make_study(
        PATIENT_ID,
        PATIENT_NAME,
        birth_date=BIRTH_DATE,
        institution_name=INSTITUTION,
        study_date="20240315",
        study_time="101500",
        seed=seed,
        **kwargs,
    )


def iter_string_values(ds: Dataset) -> Iterator[tuple[str, str]]:
    """Yields (tag path, string value) of every element, recursing into sequences."""
    datasets = [ds]
    if getattr(ds, "file_meta", None) is not None:
        datasets.append(ds.file_meta)
    for dataset in datasets:
        for element in dataset.iterall():
            if element.VR == "SQ" or element.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
                continue
            values = element.value if element.VM > 1 else [element.value]
            for value in values:
                if value is not None:
                    yield element.keyword or str(element.tag), str(value)


def residual_identifiers(ds: Dataset, original_uids: set[str]) -> list[str]:
    identifiers = [PATIENT_ID, PATIENT_NAME, BIRTH_DATE, ACCESSION, INSTITUTION]
    name_parts = [part.upper() for part in PATIENT_NAME.split("^")]
    found = []
    for keyword, value in iter_string_values(ds):
        upper = value.upper()
        for identifier in identifiers:
            if identifier.upper() in upper:
                found.append(f"{keyword}={value!r} contains {identifier!r}")
        for part in name_parts:
            if part in upper.replace("^", " ").split():
                found.append(f"{keyword}={value!r} contains name part {part!r}")
        if value in original_uids:
            found.append(f"{keyword} keeps original UID {value}")
    return found


def original_uid_values(datasets: list[Dataset]) -> set[str]:
    uids = set()
    for ds in datasets:
        for keyword, value in iter_string_values(ds):
            if keyword.endswith("UID") and not keyword.endswith("ClassUID"):
                if keyword not in ("TransferSyntaxUID", "ImplementationClassUID"):
                    uids.add(value)
    return uids


def pseudonymized(datasets, seed=SEED, pseudonym="PSEUDO01", **kwargs) -> list[Dataset]:
    pseudonymizer = Pseudonymizer(seed=seed, **kwargs)
    result = copy.deepcopy(datasets)
    for ds in result:
        pseudonymizer.pseudonymize(ds, pseudonym)
    return result


def test_no_residual_identifiers_anywhere_including_nested_sequences():
    originals = make_patient_study()
    # Sanity check of the check itself: the originals are full of identifiers.
    assert residual_identifiers(originals[0], set())
    uids = original_uid_values(originals)

    for ds in pseudonymized(originals):
        assert residual_identifiers(ds, uids) == []
        assert ds.PatientID == "PSEUDO01"
        assert ds.PatientName == "PSEUDO01"
        assert ds.PatientIdentityRemoved == "YES"
        assert "OtherPatientIDsSequence" not in ds
        assert "RequestAttributesSequence" not in ds


def test_free_text_that_may_hold_identifiers_is_removed():
    ds = make_patient_study()[0]
    ds.PatientComments = f"Patient {PATIENT_NAME} seen at {INSTITUTION}"
    ds.AdditionalPatientHistory = f"ID {PATIENT_ID}"

    Pseudonymizer(seed=SEED).pseudonymize(ds, "PSEUDO01")

    assert "PatientComments" not in ds
    assert "AdditionalPatientHistory" not in ds


def test_same_seed_gives_same_uids_and_dates_in_two_runs():
    originals = make_patient_study()

    first = pseudonymized(originals, options=SHIFT)
    second = pseudonymized(originals, options=SHIFT)

    assert first == second
    assert first[0].StudyDate == second[0].StudyDate != originals[0].StudyDate
    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in second]


def test_same_seed_gives_same_values_in_another_process():
    ds = make_patient_study(series=(("CT", 1),))[0]
    expected = pseudonymized([ds], options=SHIFT)[0]
    script = (
        "import json, sys\n"
        "from adit.core.dicom.pseudonymizer import Pseudonymizer\n"
        "from adit.core.dicom.tests.test_pseudonymizer import make_patient_study, SEED\n"
        "ds = make_patient_study(series=(('CT', 1),))[0]\n"
        "Pseudonymizer(seed=SEED, options=['retain_modified_dates']).pseudonymize(ds, 'P01')\n"
        "print(json.dumps([ds.StudyInstanceUID, ds.SOPInstanceUID, ds.StudyDate]))\n"
    )

    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout

    assert json.loads(output) == [
        expected.StudyInstanceUID,
        expected.SOPInstanceUID,
        expected.StudyDate,
    ]


def test_another_seed_gives_different_values():
    originals = make_patient_study()

    first = pseudonymized(originals, seed="seed-a", options=SHIFT)
    other = pseudonymized(originals, seed="seed-b", options=SHIFT)

    assert first[0].StudyInstanceUID != other[0].StudyInstanceUID
    assert first[0].SOPInstanceUID != other[0].SOPInstanceUID
    assert first[0].StudyDate != other[0].StudyDate


def test_two_series_of_one_patient_in_two_tasks_stay_consistent():
    originals = make_patient_study()
    ct_series = [ds for ds in originals if ds.Modality == "CT"]
    mr_series = [ds for ds in originals if ds.Modality == "MR"]

    # Two tasks (possibly on different workers) each create their own pseudonymizer.
    task_1 = pseudonymized(ct_series, options=SHIFT)
    task_2 = pseudonymized(mr_series, options=SHIFT)

    for shared in ("StudyInstanceUID", "FrameOfReferenceUID", "StudyDate", "PatientID"):
        assert task_1[0][shared].value == task_2[0][shared].value, shared
    assert task_1[0].SeriesInstanceUID != task_2[0].SeriesInstanceUID
    assert len({ds.SeriesInstanceUID for ds in task_1}) == 1
    assert task_1[0].StudyInstanceUID != originals[0].StudyInstanceUID


def test_another_study_of_the_same_patient_shares_the_date_shift():
    study_1 = make_patient_study(seed="study-1")
    study_2 = make_patient_study(seed="study-2", accession_number="ACC-OTHER-1")

    first = pseudonymized(study_1[:1], options=SHIFT)[0]
    second = pseudonymized(study_2[:1], options=SHIFT)[0]

    assert first.StudyDate == second.StudyDate != study_1[0].StudyDate
    assert first.StudyInstanceUID != second.StudyInstanceUID


def test_dates_are_emptied_by_default_kept_or_shifted_by_the_date_options():
    original = make_patient_study()[0]

    basic = pseudonymized([original])[0]
    full = pseudonymized([original], options=["retain_full_dates"])[0]
    shifted = pseudonymized([original], options=SHIFT)[0]

    assert basic.StudyDate == "" and "SeriesDate" not in basic
    assert basic.LongitudinalTemporalInformationModified == "REMOVED"
    assert (full.StudyDate, full.StudyTime) == (original.StudyDate, original.StudyTime)
    assert full.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert shifted.StudyDate not in ("", original.StudyDate)
    assert shifted.LongitudinalTemporalInformationModified == "MODIFIED"
    # The birth date has no option in Table E.1-1: always emptied.
    assert basic.PatientBirthDate == full.PatientBirthDate == shifted.PatientBirthDate == ""


@pytest.mark.parametrize(
    "options, message",
    [
        (["retain_everything"], "Unknown de-identification option 'retain_everything'"),
        (["retain_full_dates", "retain_modified_dates"], "either"),
    ],
)
def test_unknown_or_contradicting_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        Pseudonymizer(seed=SEED, options=options)


def test_compressed_pixel_data_is_untouched_and_file_meta_follows_new_uid(tmp_path):
    original = make_patient_study()[-1]
    assert original.file_meta.TransferSyntaxUID == RLELossless

    ds = pseudonymized([original])[0]

    assert ds.file_meta.TransferSyntaxUID == RLELossless
    assert ds.PixelData == original.PixelData
    assert ds.SOPInstanceUID != original.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    path = tmp_path / "instance.dcm"
    ds.save_as(path, enforce_file_format=True)
    read = pydicom.dcmread(path)
    assert read.SOPInstanceUID == ds.SOPInstanceUID
    assert (read.pixel_array == original.pixel_array).all()


def test_malformed_dates_are_blanked_instead_of_failing():
    ds = make_patient_study()[0]
    ds.PatientBirthDate = "1963-4-X"
    ds.InstanceCreationDate = "20240231"

    Pseudonymizer(seed=SEED, options=SHIFT).pseudonymize(ds, "PSEUDO01")

    assert ds.PatientBirthDate == ""
    assert ds.InstanceCreationDate == ""
    assert ds.InstanceCreationTime == ""


def test_private_tags_are_removed():
    ds = make_patient_study()[0]
    block = ds.private_block(0x0011, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", PATIENT_NAME)

    Pseudonymizer(seed=SEED).pseudonymize(ds, "PSEUDO01")

    assert not any(element.tag.is_private for element in ds)


@pytest.mark.parametrize(
    "pseudonym, message",
    [("", "must not be empty"), ("A" * 65, "at most 64"), ("AB\\C", "backslash")],
)
def test_bad_pseudonyms_are_rejected(pseudonym, message):
    ds = make_patient_study()[0]
    with pytest.raises(ValueError, match=message):
        Pseudonymizer(seed=SEED).pseudonymize(ds, pseudonym)
    assert ds.PatientID == PATIENT_ID


def test_generated_pseudonym_is_deterministic_salted_and_alphanumeric():
    pseudonym = generate_pseudonym("salt-1", PATIENT_ID)

    assert pseudonym == generate_pseudonym("salt-1", PATIENT_ID)
    assert len(pseudonym) == 14
    assert set(pseudonym) <= set(PSEUDONYM_ALPHABET)
    assert pseudonym != generate_pseudonym("salt-2", PATIENT_ID)
    assert pseudonym != generate_pseudonym("salt-1", "PAT-7731-XR")
    assert len(generate_pseudonym("salt-1", PATIENT_ID, length=49)) == 49
    assert generate_pseudonym("salt-1", PATIENT_ID, length=8) == pseudonym[:8]


@pytest.mark.parametrize(
    "salt, patient_id, length, message",
    [
        ("", "P1", 14, "salt"),
        ("s", "", 14, "patient ID"),
        ("s", "P1", 0, "length"),
        ("s", "P1", 50, "length"),
    ],
)
def test_pseudonym_generator_rejects_bad_input(salt, patient_id, length, message):
    with pytest.raises(ValueError, match=message):
        generate_pseudonym(salt, patient_id, length)


def test_should_skip_matches_modalities_case_insensitively():
    ds = Dataset()
    ds.Modality = "sr"
    assert should_skip(ds, ["PR", "SR"])
    ds.Modality = "CT"
    assert not should_skip(ds, ["PR", "SR"])
    assert not should_skip(Dataset(), ["PR", "SR"])


def test_transformer_skips_excluded_modalities_only_when_pseudonymizing():
    originals = make_patient_study(series=(("CT", 1), ("SR", 1), ("PR", 1)))

    transformer = InstanceTransformer(pseudonym="PSEUDO01", seed=SEED)
    results = [transformer.transform(ds) for ds in copy.deepcopy(originals)]
    assert [ds is None for ds in results] == [False, True, True]
    assert transformer.skipped_count == 2
    assert transformer.skipped_modalities == {"SR", "PR"}

    plain = InstanceTransformer(trial_protocol_id="TRIAL1")
    assert all(plain.transform(ds) is not None for ds in copy.deepcopy(originals))


def test_transformer_without_options_passes_instances_unchanged():
    original = make_patient_study()[0]
    ds = copy.deepcopy(original)

    assert InstanceTransformer().transform(ds) is ds
    assert ds == original


def test_trial_protocol_and_xnat_comments():
    original = make_patient_study()[0]

    ds = InstanceTransformer(
        pseudonym="PSEUDO01",
        trial_protocol_id="TRIAL_1",
        trial_protocol_name="Lung Study",
        seed=SEED,
        deid_options=["retain_full_dates"],
    ).transform(copy.deepcopy(original))

    assert ds is not None
    assert ds.ClinicalTrialProtocolID == "TRIAL_1"
    assert ds.ClinicalTrialProtocolName == "Lung Study"
    assert ds.PatientComments == (
        "Project: TRIAL_1 Subject: PSEUDO01 Session: PSEUDO01_20240315-101500"
    )


def test_trial_tags_without_pseudonym_keep_identity_and_add_no_comments():
    original = make_patient_study()[0]
    ds = copy.deepcopy(original)

    InstanceTransformer(trial_protocol_id="TRIAL_1").transform(ds)

    assert ds.ClinicalTrialProtocolID == "TRIAL_1"
    assert "ClinicalTrialProtocolName" not in ds
    assert "PatientComments" not in ds
    assert ds.PatientID == PATIENT_ID
    assert ds.StudyInstanceUID == original.StudyInstanceUID


def test_xnat_session_without_a_study_date_is_named_by_the_study_uid():
    transformer = InstanceTransformer(pseudonym="PSEUDO01", trial_protocol_id="T1", seed=SEED)
    first = transformer.transform(make_patient_study(seed="study-1")[0])
    second = transformer.transform(make_patient_study(seed="study-2")[0])

    assert first is not None and second is not None
    assert first.StudyDate == ""
    digits = first.StudyInstanceUID.replace(".", "")[-16:]
    assert first.PatientComments == f"Project: T1 Subject: PSEUDO01 Session: PSEUDO01_{digits}"
    assert first.PatientComments != second.PatientComments


def test_xnat_session_label_is_cleaned():
    ds = Dataset()
    ds.StudyDate = "20240315"
    ds.StudyTime = "101500.123"

    comments = xnat_patient_comments(ds, "P 1", "T1")

    assert comments == "Project: T1 Subject: P 1 Session: P_1_20240315-101500"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"trial_protocol_id": "X" * 65}, "Trial protocol ID"),
        ({"trial_protocol_name": "a\nb"}, "Trial protocol name"),
        ({"pseudonym": "A\\B"}, "Pseudonym"),
    ],
)
def test_transformer_validates_values_up_front(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InstanceTransformer(**kwargs)


def test_apply_trial_protocol_skips_empty_values():
    ds = Dataset()
    apply_trial_protocol(ds, None, "")
    assert len(ds) == 0


@pytest.mark.parametrize(
    "filename",
    [
        "CT_small.dcm",
        "JPEG-lossy.dcm",
        "JPEG2000.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_RLE.dcm",
    ],
)
def test_pydicom_sample_files_are_pseudonymized_without_touching_pixel_data(filename, tmp_path):
    path = get_testdata_file(filename)
    assert isinstance(path, str), f"pydicom's test file {filename} is missing"
    original = pydicom.dcmread(path)
    ds = copy.deepcopy(original)
    identifiers = {
        str(original[keyword].value).upper()
        for keyword in ("PatientID", "PatientName", "InstitutionName", "AccessionNumber")
        if keyword in original and str(original[keyword].value).strip()
    }

    Pseudonymizer(seed=SEED).pseudonymize(ds, "PSEUDO01")

    assert ds.PixelData == original.PixelData
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID != original.SOPInstanceUID
    # Some samples name the vendor as institution; the vendor is no patient identifier.
    values = [
        value.upper()
        for keyword, value in iter_string_values(ds)
        if keyword not in ("Manufacturer", "ManufacturerModelName")
    ]
    assert not [i for i in identifiers if any(i in value for value in values)]
    ds.save_as(tmp_path / "out.dcm", enforce_file_format=True)
    assert pydicom.dcmread(tmp_path / "out.dcm").PatientID == "PSEUDO01"


def test_dataset_without_file_meta_gets_consistent_file_meta():
    ds = make_patient_study()[0]
    del ds.file_meta

    Pseudonymizer(seed=SEED).pseudonymize(ds, "PSEUDO01")

    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
