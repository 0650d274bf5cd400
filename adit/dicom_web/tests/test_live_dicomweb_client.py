"""The plain `dicomweb-client` package (what viewers, pipelines and its CLI use) against ADIT,
every call it offers checked against the same call straight to Orthanc's DICOMweb plugin.

Each test runs with Orthanc behind ADIT as a DICOMweb-only source (QIDO-RS/WADO-RS/STOW-RS)
and as a DIMSE-only source (C-FIND/C-GET/C-STORE). "The same" means: the same UIDs in the same
counts, and every attribute Orthanc answers with is in ADIT's answer too (with the same value,
except RetrieveURL and BulkDataURI, which point at ADIT). dicomweb-client sends a Host header
without the port (its workaround for a requests issue), so the URLs in the answers are compared
by their path.
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset

from .helpers import MODES, new_patient_id, setup_user_and_server, small_study

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
RETRIEVE_URL = "00081190"
# Orthanc adds SpecificCharacterSet to every QIDO result; a C-FIND answer has it only when the
# data is not plain ASCII.
NOT_COMPARED = {RETRIEVE_URL, "00080005"}


@pytest.fixture(scope="module")
def patient(orthanc_a) -> tuple[str, list[list[Dataset]]]:
    """Two studies of one patient on Orthanc A (the second with a single CT series)."""
    patient_id = new_patient_id()
    first = small_study(patient_id)
    second = small_study(patient_id)[:2]
    orthanc_a.upload(first + second)
    return patient_id, [first, second]


def adit_client(live_adit, orthanc, mode: str) -> DICOMwebClient:
    api_user, server = setup_user_and_server(orthanc, mode)
    return DICOMwebClient(
        url=f"{live_adit.url}/api/dicom-web/{server.ae_title}",
        qido_url_prefix="qidors",
        wado_url_prefix="wadors",
        stow_url_prefix="stowrs",
        headers=api_user.headers,
    )


def orthanc_client(orthanc) -> DICOMwebClient:
    return DICOMwebClient(url=orthanc.dicomweb_url)


def _value(item: dict, tag: str):
    return item.get(tag, {}).get("Value")


def _by(items: list[dict], tag: str) -> dict[str, dict]:
    keyed = {_value(item, tag)[0]: item for item in items}
    assert len(keyed) == len(items), f"duplicate {tag} in the results"
    return keyed


def assert_same_results(ours: list[dict], theirs: list[dict], key: str, root: str) -> None:
    """Same UIDs; every attribute of Orthanc's result in ours with the same value; our
    RetrieveURL points at ADIT."""
    assert theirs, "the comparison needs results"
    mine, reference = _by(ours, key), _by(theirs, key)
    assert set(mine) == set(reference)
    for uid, expected in reference.items():
        got = mine[uid]
        missing = set(expected) - set(got) - NOT_COMPARED
        assert not missing, f"attributes missing for {uid}: {sorted(missing)}"
        for tag in set(expected) - NOT_COMPARED:
            assert _value(got, tag) == _value(expected, tag), f"{tag} differs for {uid}"
        url = urlparse(_value(got, RETRIEVE_URL)[0])
        assert url.path.startswith(f"{urlparse(root).path}/wadors/studies/"), url
        assert url.path.endswith(uid), url


@pytest.mark.parametrize("mode", MODES)
def test_search_at_every_level_matches_orthanc(live_adit, orthanc_a, patient, mode):
    client = adit_client(live_adit, orthanc_a, mode)
    direct = orthanc_client(orthanc_a)
    patient_id, (first, second) = patient
    study_uid = str(first[0].StudyInstanceUID)
    series_uid = str(first[0].SeriesInstanceUID)
    by_patient = {"PatientID": patient_id}
    root = client.base_url

    calls = [
        (STUDY_UID, "search_for_studies", {"search_filters": by_patient}),
        (SERIES_UID, "search_for_series", {"search_filters": by_patient}),
        (SERIES_UID, "search_for_series", {"study_instance_uid": study_uid}),
        (SOP_UID, "search_for_instances", {"search_filters": by_patient}),
        (SOP_UID, "search_for_instances", {"study_instance_uid": study_uid}),
        (
            SOP_UID,
            "search_for_instances",
            {"study_instance_uid": study_uid, "series_instance_uid": series_uid},
        ),
    ]
    for key, method, kwargs in calls:
        ours = getattr(client, method)(**kwargs)
        theirs = getattr(direct, method)(**kwargs)
        assert_same_results(ours, theirs, key, root)

    studies = client.search_for_studies(search_filters=by_patient)
    assert len(studies) == 2
    counts = _by(studies, STUDY_UID)[study_uid]
    assert _value(counts, "00201206") == [2]  # NumberOfStudyRelatedSeries
    assert _value(counts, "00201208") == [len(first)]  # NumberOfStudyRelatedInstances
    instances = client.search_for_instances(study_uid, series_uid)
    assert all(_value(item, "00280010") == [16] for item in instances)  # Rows
    assert all(_value(item, "00280011") == [16] for item in instances)  # Columns


@pytest.mark.parametrize("mode", MODES)
def test_search_parameters(live_adit, orthanc_a, patient, mode):
    client = adit_client(live_adit, orthanc_a, mode)
    patient_id, (first, second) = patient
    study_uids = {str(first[0].StudyInstanceUID), str(second[0].StudyInstanceUID)}
    study_uid = str(first[0].StudyInstanceUID)

    # A list of UIDs matches any of them; several values of an attribute too.
    listed = client.search_for_studies(search_filters={"StudyInstanceUID": ",".join(study_uids)})
    assert {_value(item, STUDY_UID)[0] for item in listed} == study_uids
    series = client.search_for_series(study_uid, search_filters={"Modality": "CT,MR"})
    assert len(series) == 2
    only_ct = client.search_for_series(search_filters={"PatientID": patient_id, "Modality": "CT"})
    assert len(only_ct) == 2 and {_value(item, "00080060")[0] for item in only_ct} == {"CT"}

    # limit and offset page through the results without gaps or repeats.
    every = client.search_for_instances(study_uid)
    pages = [client.search_for_instances(study_uid, limit=2, offset=start) for start in (0, 2, 4)]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert {_value(i, SOP_UID)[0] for page in pages for i in page} == {
        _value(i, SOP_UID)[0] for i in every
    }

    # includefield names extra attributes; "all" adds every one ADIT asks the source for.
    named = client.search_for_studies(
        search_filters={"PatientID": patient_id}, fields=["StudyDescription", "00080080"]
    )
    assert all(_value(item, "00081030") == ["Synthetic Study"] for item in named)
    assert all(_value(item, "00080080") == ["Api Test Hospital"] for item in named)
    everything = client.search_for_studies(search_filters={"PatientID": patient_id}, fields=["all"])
    assert all(_value(item, "00081030") == ["Synthetic Study"] for item in everything)

    # Fuzzy matching: name components match as case-insensitive prefixes.
    fuzzy = client.search_for_studies(
        fuzzymatching=True, search_filters={"PatientID": patient_id, "PatientName": "apit^an"}
    )
    assert {_value(item, STUDY_UID)[0] for item in fuzzy} == study_uids
    exact = client.search_for_studies(
        search_filters={"PatientID": patient_id, "PatientName": "apit^an"}
    )
    assert exact == []
