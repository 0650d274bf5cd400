"""The plain `dicomweb-client` package (what third-party tools use) works against ADIT."""

from __future__ import annotations

import pytest
from dicomweb_client.api import DICOMwebClient

from .helpers import MODES, dicomweb_url, setup_user_and_server, small_study

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("mode", MODES)
def test_search_retrieve_and_store_with_dicomweb_client(live_adit, orthanc_a, mode):
    api_user, server = setup_user_and_server(orthanc_a, mode)
    root = f"{live_adit.url}/api/dicom-web/{server.ae_title}"
    assert dicomweb_url(live_adit, server, "qidors").startswith(root)
    client = DICOMwebClient(
        url=root,
        qido_url_prefix="qidors",
        wado_url_prefix="wadors",
        stow_url_prefix="stowrs",
        headers=api_user.headers,
    )
    datasets = small_study()
    study_uid = str(datasets[0].StudyInstanceUID)
    series_uid = str(datasets[0].SeriesInstanceUID)
    sop_uid = str(datasets[0].SOPInstanceUID)

    answer = client.store_instances(datasets)
    assert len(answer.ReferencedSOPSequence) == len(datasets)
    assert not answer.get("FailedSOPSequence")

    studies = client.search_for_studies(search_filters={"PatientID": datasets[0].PatientID})
    assert [item["0020000D"]["Value"][0] for item in studies] == [study_uid]
    series = client.search_for_series(study_uid)
    assert {item["0020000E"]["Value"][0] for item in series} == {
        str(ds.SeriesInstanceUID) for ds in datasets
    }
    instances = client.search_for_instances(study_uid, series_uid, fields=["InstanceNumber"])
    assert {item["00080018"]["Value"][0] for item in instances} == {
        str(ds.SOPInstanceUID) for ds in datasets if ds.SeriesInstanceUID == series_uid
    }

    retrieved = client.retrieve_study(study_uid)
    assert {str(ds.SOPInstanceUID) for ds in retrieved} == {
        str(ds.SOPInstanceUID) for ds in datasets
    }
    streamed = list(client.iter_series(study_uid, series_uid))
    assert len(streamed) == sum(ds.SeriesInstanceUID == series_uid for ds in datasets)
    instance = client.retrieve_instance(study_uid, series_uid, sop_uid)
    assert instance.SOPInstanceUID == sop_uid
    metadata = client.retrieve_study_metadata(study_uid)
    assert len(metadata) == len(datasets)
    assert all("7FE00010" not in item for item in metadata)
