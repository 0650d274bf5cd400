"""Every DICOMweb endpoint against a live ADIT (daphne) with a real Orthanc behind it.

Each test runs once with Orthanc configured as a DIMSE-only server (C-FIND, C-GET, C-STORE)
and once as a DICOMweb-only server (QIDO-RS, WADO-RS, STOW-RS).
"""

from __future__ import annotations

import copy
import json

import pytest
import requests
from pydicom import Dataset

from adit.core.deidentification import pseudonymization_seed
from adit.core.dicom.pseudonymizer import Pseudonymizer
from adit.core.dicom.testing.synthetic import iter_identifying_values
from adit.dicom_web.models import APIUsage

from .helpers import (
    MODES,
    dicomweb_url,
    multipart_body,
    new_patient_id,
    parse_multipart,
    part10,
    setup_user_and_server,
    small_study,
)

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

MULTIPART_TYPE = "multipart/related; type=application/dicom; boundary=test-boundary-1234"


@pytest.fixture(scope="module")
def study(orthanc_a) -> list[Dataset]:
    datasets = small_study()
    orthanc_a.upload(datasets)
    return datasets


def _uids(datasets):
    return {str(ds.SOPInstanceUID) for ds in datasets}


@pytest.mark.parametrize("mode", MODES)
def test_qido_at_three_levels(live_adit, orthanc_a, study, mode):
    api_user, server = setup_user_and_server(orthanc_a, mode)
    qido = dicomweb_url(live_adit, server, "qidors")
    first = study[0]
    study_uid = str(first.StudyInstanceUID)

    response = requests.get(
        f"{qido}/studies",
        params={"PatientID": first.PatientID, "includefield": "StudyDescription"},
        headers={**api_user.headers, "Accept": "application/dicom+json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/dicom+json")
    studies = [Dataset.from_json(item) for item in response.json()]
    assert [str(ds.StudyInstanceUID) for ds in studies] == [study_uid]
    assert studies[0].StudyDescription == "Synthetic Study"

    response = requests.get(
        f"{qido}/studies/{study_uid}/series", headers=api_user.headers, timeout=30
    )
    assert response.status_code == 200, response.text
    series = [Dataset.from_json(item) for item in response.json()]
    expected_series = {str(ds.SeriesInstanceUID) for ds in study}
    assert {str(ds.SeriesInstanceUID) for ds in series} == expected_series

    response = requests.get(
        f"{qido}/studies/{study_uid}/series/{study[0].SeriesInstanceUID}/instances",
        params={"limit": 2},
        headers=api_user.headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    instances = [Dataset.from_json(item) for item in response.json()]
    assert len(instances) == 2
    assert _uids(instances) <= _uids(study)

    response = requests.get(
        f"{qido}/studies",
        params={"PatientID": new_patient_id()},
        headers=api_user.headers,
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize("mode", MODES)
def test_wado_study_series_instance_and_metadata(live_adit, orthanc_a, study, mode):
    api_user, server = setup_user_and_server(orthanc_a, mode)
    wado = dicomweb_url(live_adit, server, "wadors")
    study_uid = str(study[0].StudyInstanceUID)
    series_uid = str(study[0].SeriesInstanceUID)
    sop_uid = str(study[0].SOPInstanceUID)

    response = requests.get(f"{wado}/studies/{study_uid}", headers=api_user.headers, timeout=60)
    assert response.status_code == 200, response.text
    retrieved = parse_multipart(response)
    assert _uids(retrieved) == _uids(study)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in study}
    for ds in retrieved:
        original = by_uid[str(ds.SOPInstanceUID)]
        assert ds.PatientID == original.PatientID
        assert ds.PixelData == original.PixelData  # transfer syntax kept (RLE stays RLE)

    response = requests.get(
        f"{wado}/studies/{study_uid}/series/{series_uid}", headers=api_user.headers, timeout=60
    )
    assert response.status_code == 200, response.text
    assert _uids(parse_multipart(response)) == {
        str(ds.SOPInstanceUID) for ds in study if ds.SeriesInstanceUID == series_uid
    }

    response = requests.get(
        f"{wado}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
        headers=api_user.headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert _uids(parse_multipart(response)) == {sop_uid}

    for path in (
        f"studies/{study_uid}/metadata",
        f"studies/{study_uid}/series/{series_uid}/metadata",
        f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
    ):
        response = requests.get(f"{wado}/{path}", headers=api_user.headers, timeout=60)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("application/dicom+json")
        items = response.json()
        # Pixel data is left out, with a BulkDataURI to fetch it by.
        assert all(
            set(item["7FE00010"]) == {"vr", "BulkDataURI"}
            and item["7FE00010"]["BulkDataURI"].startswith(f"{wado}/studies/{study_uid}/series/")
            for item in items
        )
        metadata = [
            Dataset.from_json({k: v for k, v in i.items() if k != "7FE00010"}) for i in items
        ]
        assert metadata, path
        assert all(ds.StudyInstanceUID == study_uid for ds in metadata)
    assert _uids(metadata) == {sop_uid}

    missing = f"1.2.826.0.1.3680043.99.{int(new_patient_id()[3:], 16)}"
    response = requests.get(f"{wado}/studies/{missing}", headers=api_user.headers, timeout=60)
    assert response.status_code == 404, response.text
    assert missing in response.json()["detail"]


@pytest.mark.parametrize("mode", MODES)
def test_pseudonymized_retrieval_is_consistent_and_clean(live_adit, orthanc_a, study, mode):
    api_user, server = setup_user_and_server(orthanc_a, mode)
    wado = dicomweb_url(live_adit, server, "wadors")
    study_uid = str(study[0].StudyInstanceUID)
    params = {
        "pseudonym": "PSEUDO-API-1",
        "trial_protocol_id": "TRIAL-7",
        "trial_protocol_name": "API Trial",
    }

    def retrieve(extra=None):
        response = requests.get(
            f"{wado}/studies/{study_uid}",
            params={**params, **(extra or {})},
            headers=api_user.headers,
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return parse_multipart(response)

    first, second = retrieve(), retrieve()
    assert len(first) == len(study)
    assert sorted(_uids(first)) == sorted(_uids(second))
    assert {str(ds.StudyInstanceUID) for ds in first} == {str(ds.StudyInstanceUID) for ds in second}
    assert not _uids(first) & _uids(study)
    assert {str(ds.StudyInstanceUID) for ds in first} != {study_uid}
    # The UIDs every transfer job with this pseudonym gives (one seed per installation).
    as_in_a_job = copy.deepcopy(study[0])
    Pseudonymizer(seed=pseudonymization_seed("PSEUDO-API-1")).pseudonymize(
        as_in_a_job, "PSEUDO-API-1"
    )
    assert {str(ds.StudyInstanceUID) for ds in first} == {as_in_a_job.StudyInstanceUID}
    assert as_in_a_job.SOPInstanceUID in _uids(first)
    original = study[0]
    identifying = set(
        iter_identifying_values(
            str(original.PatientID),
            str(original.PatientName),
            str(original.PatientBirthDate),
            str(original.AccessionNumber),
            str(original.InstitutionName),
        )
    )
    for ds in first:
        assert ds.PatientID == "PSEUDO-API-1"
        assert ds.ClinicalTrialProtocolID == "TRIAL-7"
        assert ds.ClinicalTrialProtocolName == "API Trial"
        text = json.dumps(
            ds.to_json_dict(bulk_data_threshold=10**9, bulk_data_element_handler=None)
        )
        leaked = [value for value in identifying if value and value in text]
        assert not leaked, f"original identifiers in the pseudonymized instance: {leaked}"

    other = retrieve({"pseudonym": "PSEUDO-API-2"})
    assert not _uids(other) & _uids(first)

    response = requests.get(
        f"{wado}/studies/{study_uid}/metadata", params=params, headers=api_user.headers, timeout=60
    )
    assert response.status_code == 200
    assert {Dataset.from_json(item).PatientID for item in response.json()} == {"PSEUDO-API-1"}


@pytest.mark.parametrize("mode", MODES)
def test_stow_with_one_broken_part(live_adit, orthanc_a, mode):
    api_user, server = setup_user_and_server(orthanc_a, mode)
    stow = dicomweb_url(live_adit, server, "stowrs")
    datasets = small_study()[:3]
    payloads = [part10(ds) for ds in datasets]
    payloads.insert(1, b"this is not a DICOM file")
    response = requests.post(
        f"{stow}/studies",
        data=multipart_body(payloads),
        headers={
            **api_user.headers,
            "Content-Type": 'multipart/related; type="application/dicom"; '
            "boundary=test-boundary-1234",
            "Accept": "application/dicom+json",
        },
        timeout=60,
    )
    assert response.status_code == 202, response.text
    answer = Dataset.from_json(response.json())
    assert {str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence} == _uids(
        datasets
    )
    assert len(answer.FailedSOPSequence) == 1
    failed = answer.FailedSOPSequence[0]
    assert failed.FailureReason == 0xC000
    assert "Part 2" in failed.TextValue
    assert orthanc_a.study_instance_uids(str(datasets[0].StudyInstanceUID)) == _uids(datasets)

    # Only broken parts: nothing stored → 409.
    response = requests.post(
        f"{stow}/studies",
        data=multipart_body([b"garbage"]),
        headers={
            **api_user.headers,
            "Content-Type": MULTIPART_TYPE,
        },
        timeout=60,
    )
    assert response.status_code == 409, response.text
    assert len(Dataset.from_json(response.json()).FailedSOPSequence) == 1


@pytest.mark.parametrize("mode", MODES)
def test_stow_refuses_impossible_parts_one_by_one(live_adit, orthanc_a, mode):
    """A part declaring more bytes than it has, an unterminated sequence and a part with 2 MB
    of headers are refused each with its reason; the whole instances around them are stored."""
    from adit.core.tests.bad_inputs import dicom_item

    api_user, server = setup_user_and_server(orthanc_a, mode)
    datasets = small_study()[:2]
    boundary = "test-boundary-1234"
    body = (
        multipart_body([part10(datasets[0]), dicom_item("dicom-huge-pixel-length")])[
            : -len(f"--{boundary}--\r\n")
        ]
        + f"--{boundary}\r\nX-Long: {'a' * 2_000_000}\r\n\r\nskipped\r\n".encode()
        + multipart_body([dicom_item("dicom-unterminated-sequence"), part10(datasets[1])])
    )
    response = requests.post(
        f"{dicomweb_url(live_adit, server, 'stowrs')}/studies",
        data=body,
        headers={**api_user.headers, "Content-Type": MULTIPART_TYPE},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    answer = Dataset.from_json(response.json())
    assert {str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence} == _uids(
        datasets
    )
    reasons = sorted(
        str(item.FailureReason) + " " + item.TextValue for item in answer.FailedSOPSequence
    )
    assert len(reasons) == 3, reasons
    assert any(
        "Part 2: the data set is not whole" in r and "4294967280 bytes" in r for r in reasons
    )
    assert any("Part 3: the part's headers are longer than 16384 bytes" in r for r in reasons)
    assert any("Part 4: the data set is not whole" in r for r in reasons), reasons
    assert orthanc_a.study_instance_uids(str(datasets[0].StudyInstanceUID)) == _uids(datasets)


@pytest.mark.parametrize("mode", MODES)
def test_chunked_stow_into_a_given_study(live_adit, orthanc_a, mode):
    api_user, server = setup_user_and_server(orthanc_a, mode)
    stow = dicomweb_url(live_adit, server, "stowrs")
    datasets = small_study()
    foreign = small_study()[0]
    body = multipart_body([part10(ds) for ds in [*datasets, foreign]])
    study_uid = str(datasets[0].StudyInstanceUID)

    def chunks():
        for start in range(0, len(body), 7000):  # boundaries fall inside chunks
            yield body[start : start + 7000]

    response = requests.post(
        f"{stow}/studies/{study_uid}",
        data=chunks(),  # no Content-Length: Transfer-Encoding: chunked
        headers={
            **api_user.headers,
            "Content-Type": MULTIPART_TYPE,
        },
        timeout=60,
    )
    assert response.status_code == 202, response.text
    answer = Dataset.from_json(response.json())
    assert answer.RetrieveURL.endswith(f"/wadors/studies/{study_uid}")
    assert len(answer.ReferencedSOPSequence) == len(datasets)
    assert [str(item.ReferencedSOPInstanceUID) for item in answer.FailedSOPSequence] == [
        str(foreign.SOPInstanceUID)
    ]
    assert orthanc_a.study_instance_uids(study_uid) == _uids(datasets)


def test_api_usage_is_recorded(live_adit, orthanc_a, study):
    api_user, server = setup_user_and_server(orthanc_a, "dimse")
    qido = dicomweb_url(live_adit, server, "qidors")
    wado = dicomweb_url(live_adit, server, "wadors")
    requests.get(
        f"{qido}/studies",
        params={"PatientID": study[0].PatientID},
        headers=api_user.headers,
        timeout=30,
    ).raise_for_status()
    response = requests.get(
        f"{wado}/studies/{study[0].StudyInstanceUID}", headers=api_user.headers, timeout=60
    )
    response.raise_for_status()
    requests.get(f"{qido}/studies", params={"Nonsense": "1"}, headers=api_user.headers, timeout=30)
    usage = APIUsage.objects.get(owner=api_user.user)
    assert usage.request_count == 3
    assert usage.error_count == 1
    assert usage.bytes_sent > len(response.content)
    assert usage.last_access is not None


@pytest.mark.parametrize("mode", MODES)
def test_a_pseudonymized_wado_retrieve_of_a_phi_rich_study_carries_no_identifier(
    live_adit, orthanc_a, mode
):
    """PS3.15 Basic Profile on the DICOMweb path: every byte of the response is scanned."""
    from adit.core.dicom.testing.phi_corpus import find_identifiers, make_phi_corpus

    patient_id = new_patient_id()
    corpus = make_phi_corpus(seed=patient_id, patient_id=patient_id)
    orthanc_a.upload(corpus.datasets)
    api_user, server = setup_user_and_server(orthanc_a, mode)
    wado = dicomweb_url(live_adit, server, "wadors")
    study_uid = str(corpus.datasets[0].StudyInstanceUID)

    response = requests.get(
        f"{wado}/studies/{study_uid}",
        params={"pseudonym": "PSEUDO-PHI-1"},
        headers=api_user.headers,
        timeout=120,
    )

    assert response.status_code == 200, response.text
    retrieved = parse_multipart(response)
    assert retrieved, "nothing was retrieved"
    assert {str(ds.PatientID) for ds in retrieved} == {"PSEUDO-PHI-1"}
    assert find_identifiers([response.content], corpus.all_identifiers()) == set()
    assert find_identifiers([response.content], corpus.original_uids) == set()
    assert find_identifiers(retrieved, corpus.all_identifiers()) == set()
