"""adit-client against a live ADIT (daphne) with real Orthancs behind it and a real worker."""

from __future__ import annotations

import secrets

import pytest
from adit_client import (
    AditClient,
    AuthenticationError,
    BadRequestError,
    JobTimeoutError,
    NotFoundError,
)
from pydicom import Dataset

from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing.workers import start_worker
from adit.dicom_web.testing import grant_access, make_api_user, server_from_config

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

TRANSFER_PERMISSIONS = (
    "dicom_web.can_query",
    "dicom_web.can_retrieve",
    "dicom_web.can_store",
    "selective_transfer.add_selectivetransferjob",
)


def _study() -> list[Dataset]:
    return make_study(
        f"CLI{secrets.token_hex(4).upper()}",
        patient_name="Client^Clara",
        series=(("CT", 3), ("MR", 2)),
    )


def _uids(datasets) -> set[str]:
    return {str(ds.SOPInstanceUID) for ds in datasets}


def _dimse_server(orthanc, name: str, ae_title: str):
    config = orthanc.server_config(
        dicomweb_root_url="",
        dicomweb_qido_support=False,
        dicomweb_wado_support=False,
        dicomweb_stow_support=False,
        patient_root_move_support=False,
        study_root_move_support=False,
    )
    return server_from_config(config, name, ae_title)


@pytest.fixture
def setup(orthanc_a, orthanc_b):
    api_user = make_api_user(permissions=TRANSFER_PERMISSIONS)
    source = _dimse_server(orthanc_a, "Client source", "CLIENT_SRC")
    destination = _dimse_server(orthanc_b, "Client destination", "CLIENT_DST")
    grant_access(api_user.group, source)
    grant_access(api_user.group, destination)
    return api_user, source, destination


def test_dicomweb_methods(live_adit, orthanc_a, setup):
    api_user, source, _ = setup
    client = AditClient(
        live_adit.url, api_user.token, trial_protocol_id="TRIAL-C", trial_protocol_name="Client"
    )
    datasets = _study()
    study_uid = str(datasets[0].StudyInstanceUID)
    series_uid = str(datasets[0].SeriesInstanceUID)
    sop_uid = str(datasets[0].SOPInstanceUID)

    answer = client.store_instances(source.ae_title, datasets)
    stored = {str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence}
    assert stored == _uids(datasets)
    assert len(answer.FailedSOPSequence) == 0

    studies = client.search_for_studies(
        source.ae_title, {"PatientID": datasets[0].PatientID, "ModalitiesInStudy": ["CT", "MR"]}
    )
    assert [str(ds.StudyInstanceUID) for ds in studies] == [study_uid]
    series = client.search_for_series(source.ae_title, study_uid)
    assert len(series) == 2
    images = client.search_for_images(source.ae_title, study_uid, series_uid, {"limit": 1})
    assert len(images) == 1

    plain = client.retrieve_study(source.ae_title, study_uid)
    assert _uids(plain) == _uids(datasets)
    assert {ds.ClinicalTrialProtocolID for ds in plain} == {"TRIAL-C"}

    streamed = list(client.iter_study(source.ae_title, study_uid, pseudonym="CLIENT-PSEUDO"))
    assert {ds.PatientID for ds in streamed} == {"CLIENT-PSEUDO"}
    assert not _uids(streamed) & _uids(datasets)
    again = client.retrieve_study(source.ae_title, study_uid, pseudonym="CLIENT-PSEUDO")
    assert _uids(again) == _uids(streamed)

    series_instances = list(
        client.iter_series(source.ae_title, study_uid, series_uid, pseudonym="CLIENT-PSEUDO")
    )
    assert {ds.PatientID for ds in series_instances} == {"CLIENT-PSEUDO"}
    assert len(client.retrieve_series(source.ae_title, study_uid, series_uid)) == 3
    instance = client.retrieve_instance(source.ae_title, study_uid, series_uid, sop_uid)
    assert instance.SOPInstanceUID == sop_uid

    metadata = client.retrieve_study_metadata(source.ae_title, study_uid, pseudonym="P2")
    assert {Dataset.from_json(item).PatientID for item in metadata} == {"P2"}
    assert len(client.retrieve_series_metadata(source.ae_title, study_uid, series_uid)) == 3
    one = client.retrieve_instance_metadata(source.ae_title, study_uid, series_uid, sop_uid)
    assert Dataset.from_json(one).SOPInstanceUID == sop_uid


def test_errors_carry_the_servers_detail(live_adit, setup):
    api_user, source, _ = setup
    client = AditClient(live_adit.url, api_user.token)
    with pytest.raises(NotFoundError) as error:
        client.search_for_studies("NO_SUCH_AE")
    assert error.value.status_code == 404
    assert "NO_SUCH_AE" in error.value.detail
    with pytest.raises(BadRequestError) as error:
        client.search_for_studies(source.ae_title, {"PatientNam": "x"})
    assert "Unknown query parameter 'PatientNam'" in error.value.detail
    with pytest.raises(AuthenticationError) as error:
        AditClient(live_adit.url, "0" * 40).search_for_studies(source.ae_title)
    assert error.value.detail == "Invalid token."
    with pytest.raises(BadRequestError) as error:
        client.create_transfer_job(source.ae_title, "NOWHERE", ["1.2.3"], pseudonym="P")
    assert "NOWHERE" in error.value.detail


def test_transfer_job_runs_and_the_data_arrives(live_adit, orthanc_a, orthanc_b, setup):
    api_user, source, destination = setup
    client = AditClient(live_adit.url, api_user.token, trial_protocol_id="TRIAL-J")
    datasets = _study()
    orthanc_a.upload(datasets)
    study_uid = str(datasets[0].StudyInstanceUID)
    pseudonym = f"JOB{secrets.token_hex(3).upper()}"

    job = client.create_transfer_job(
        source.ae_title, destination.ae_title, [study_uid], pseudonym=pseudonym
    )
    assert job["status"] == "PE"
    assert [j["id"] for j in client.list_jobs()] == [job["id"]]
    with pytest.raises(JobTimeoutError):
        client.wait_for_job(job["id"], timeout=0.5, poll_interval=0.2)  # no worker yet

    worker = start_worker("dicom")
    try:
        finished = client.wait_for_job(job["id"], timeout=120, poll_interval=0.5)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except Exception:
            worker.kill()
            worker.wait(timeout=5)
    tasks = client.get_job_tasks(job["id"])
    assert finished["status"] == "SU", (finished, tasks)
    assert tasks[0]["status"] == "SU"

    found = client.search_for_studies(destination.ae_title, {"PatientID": pseudonym})
    assert len(found) == 1
    arrived = client.retrieve_study(destination.ae_title, str(found[0].StudyInstanceUID))
    assert len(arrived) == len(datasets)
    assert {ds.PatientID for ds in arrived} == {pseudonym}
    assert {ds.ClinicalTrialProtocolID for ds in arrived} == {"TRIAL-J"}
    assert not _uids(arrived) & _uids(datasets)
