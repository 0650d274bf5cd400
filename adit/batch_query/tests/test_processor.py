"""The batch query processor against a real Orthanc."""

import datetime as dt
import uuid

import pytest

from adit.accounts.factories import UserFactory
from adit.batch_query.models import BatchQueryJob, BatchQueryTask
from adit.batch_query.processors import BatchQueryTaskProcessor
from adit.batch_query.tests.conftest import server_from_orthanc
from adit.core.dicom.testing.synthetic import make_study
from adit.core.statuses import Status

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(orthanc_a):
    """A fresh patient at Orthanc A with a CT+MR thorax study (2024) and an MR head study."""
    patient_id = f"BQ{uuid.uuid4().hex[:10]}"
    name = f"Query^{patient_id}"
    orthanc_a.upload(
        make_study(
            patient_id,
            patient_name=name,
            birth_date="19650304",
            study_date="20240110",
            study_description="CT Thorax nativ",
            series=(("CT", 2), ("MR", 1)),
            accession_number="0042",
        )
    )
    orthanc_a.upload(
        make_study(
            patient_id,
            patient_name=name,
            birth_date="19650304",
            study_date="20230601",
            study_description="MR Head",
            series=(("MR", 1),),
        )
    )
    return {"id": patient_id, "name": name}


@pytest.fixture
def source(orthanc_a):
    return server_from_orthanc(orthanc_a, "Orthanc A")


def run(source, **row):
    job = BatchQueryJob.objects.create(
        owner=UserFactory(), project_name="P", project_description="D"
    )
    task = BatchQueryTask.objects.create(job=job, source=source, lines=[2], **row)
    result = BatchQueryTaskProcessor(task).process()
    return result, list(task.results.order_by("id"))


def test_patient_id_and_modality(source, patient):
    result, found = run(source, patient_id=patient["id"], modalities=["CT"], pseudonym="X1")
    assert (result.status, result.message) == (Status.SUCCESS, "1 study found.")
    (study,) = found
    assert study.study_description == "CT Thorax nativ"
    assert study.accession_number == "0042"
    assert study.patient_birth_date == dt.date(1965, 3, 4)
    assert study.pseudonym == "X1"
    assert study.image_count == 3
    assert set(study.modalities) == {"CT", "MR"}


def test_several_modalities_sorted_by_date(source, patient):
    result, found = run(source, patient_id=patient["id"], modalities=["MR", "CT"])
    assert result.message == "2 studies found."
    assert [s.study_description for s in found] == ["MR Head", "CT Thorax nativ"]


def test_name_and_birth_date_with_date_range_and_description_pattern(source, patient):
    result, found = run(
        source,
        patient_name=patient["name"].lower(),
        patient_birth_date=dt.date(1965, 3, 4),
        modalities=["MR"],
        study_date_start=dt.date(2024, 1, 1),
        study_date_end=dt.date(2024, 1, 10),
        study_description="*THORAX*",
    )
    assert (result.status, result.message) == (Status.SUCCESS, "1 study found.")
    assert [s.study_description for s in found] == ["CT Thorax nativ"]


def test_series_query_with_pattern_and_modality(source, patient):
    result, found = run(
        source, patient_id=patient["id"], modalities=["CT"], series_description="ct*"
    )
    assert (result.status, result.message) == (Status.SUCCESS, "1 series found.")
    assert found[0].series_description == "CT series 1"
    assert found[0].series_number == "1"
    assert found[0].series_uid


def test_unknown_patient_is_a_warning_with_nothing_found(source):
    result, found = run(source, patient_id=f"NOPE{uuid.uuid4().hex[:8]}", modalities=["CT"])
    assert (result.status, result.message) == (
        Status.WARNING,
        "Nothing found: no such patient at the source.",
    )
    assert found == []


def test_no_matching_study_is_a_warning(source, patient):
    result, _ = run(source, patient_id=patient["id"], modalities=["US"])
    assert (result.status, result.message) == (
        Status.WARNING,
        "Nothing found: the patient has no studies matching the row.",
    )


def test_patient_id_with_another_name_fails(source, patient):
    result, _ = run(source, patient_id=patient["id"], patient_name="Other^Name", modalities=["CT"])
    assert result.status == Status.FAILURE
    assert result.message.startswith(
        "The patient with this PatientID has another PatientName at the source"
    )
