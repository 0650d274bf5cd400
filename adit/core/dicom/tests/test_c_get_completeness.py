"""How a C-GET knows it has the whole study, against a real Orthanc (`_fetch_with_c_get`).

The source reports what a query matches twice: in an IMAGE-level listing and in the C-GET's
sub-operation counts. Orthanc names the study's SOP classes at STUDY level, so with no second
association free the counts alone decide and nothing is listed; a failed sub-operation still
fails the fetch, and only then is the source listed to name the instance and its class. With
a second association free, the listing runs beside the C-GET.
"""

from __future__ import annotations

import contextlib

import pytest

from adit.core.dicom import dimse
from adit.core.dicom.errors import RetriableDicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.testing.synthetic import make_study

from .conftest import new_patient_id

pytestmark = pytest.mark.peers


@pytest.fixture
def study(orthanc_a):
    datasets = make_study(new_patient_id("GETCOUNT"), series=(("CT", 4), ("MR", 3)))
    orthanc_a.upload(datasets)
    yield datasets
    orthanc_a.delete_study(str(datasets[0].StudyInstanceUID))


def c_get_operator(orthanc_a, local_config) -> DicomOperator:
    get_only = orthanc_a.server_config(
        study_root_move_support=False, patient_root_move_support=False, dicomweb_root_url=""
    )
    return DicomOperator(get_only, local_config)


def listings(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = DicomOperator._source_listing

    def counted(self, query):
        calls.append(query.get_str("StudyInstanceUID"))
        return original(self, query)

    monkeypatch.setattr(DicomOperator, "_source_listing", counted)
    return calls


def fetch(operator: DicomOperator, datasets) -> list:
    return list(operator.fetch_study(str(datasets[0].PatientID), str(datasets[0].StudyInstanceUID)))


def test_without_a_second_association_the_counts_decide_and_nothing_is_listed(
    orthanc_a, study, local_config, monkeypatch
):
    listed = listings(monkeypatch)
    fetched = fetch(c_get_operator(orthanc_a, local_config), study)
    assert sorted(ds.SOPInstanceUID for ds in fetched) == sorted(ds.SOPInstanceUID for ds in study)
    assert listed == []


def test_a_failed_sub_operation_fails_the_fetch_and_names_the_instance_and_its_class(
    orthanc_a, study, local_config, monkeypatch
):
    listed = listings(monkeypatch)
    lost = study[-1]  # an MR instance
    original = dimse.DimseConnector._received_encoded

    def refusing(self, assoc, message, asked):
        instance, status = original(self, assoc, message, asked)
        if instance is not None and instance.sop_instance_uid == lost.SOPInstanceUID:
            return None, 0xC210  # as if it arrived unreadable
        return instance, status

    monkeypatch.setattr(dimse.DimseConnector, "_received_encoded", refusing)
    with pytest.raises(RetriableDicomError) as raised:
        fetch(c_get_operator(orthanc_a, local_config), study)
    message = str(raised.value)
    assert f"1 of {len(study)} instances the source lists did not arrive" in message
    assert "MR Image Storage" in message or str(lost.SOPClassUID) in message
    assert len(listed) == 1  # listed only after the failure, to name what is missing


def test_with_a_second_association_free_the_study_is_listed_beside_the_c_get(
    orthanc_a, study, local_config, monkeypatch
):
    listed = listings(monkeypatch)
    operator = c_get_operator(orthanc_a, local_config)
    operator.side_association = lambda: contextlib.nullcontext(True)
    fetched = fetch(operator, study)
    assert len(fetched) == len(study)
    assert len(listed) == 1
