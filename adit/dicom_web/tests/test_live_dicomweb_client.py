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

from io import BytesIO
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
from adit_client.multipart import iter_parts, parse_content_type
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

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


def _uids(datasets) -> list[str]:
    return sorted(str(ds.SOPInstanceUID) for ds in datasets)


def _on(client: DICOMwebClient, uri: str) -> str:
    """A BulkDataURI on the client's host and port (see the module docstring)."""
    return urlparse(uri)._replace(netloc=urlparse(client.base_url).netloc).geturl()


def _multipart_payloads(response: requests.Response) -> list[bytes]:
    _, params = parse_content_type(response.headers["Content-Type"])
    return [body for _, body in iter_parts(BytesIO(response.content).read, params["boundary"])]


def _image(data: bytes) -> Image.Image:
    image = Image.open(BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("mode", MODES)
def test_retrieve_and_metadata_match_orthanc(live_adit, orthanc_a, patient, mode):
    client = adit_client(live_adit, orthanc_a, mode)
    direct = orthanc_client(orthanc_a)
    _, (first, _second) = patient
    study_uid = str(first[0].StudyInstanceUID)
    ct, mr = first[0], first[-1]  # the last series is stored RLE compressed
    assert mr.file_meta.TransferSyntaxUID == RLELossless
    series_uid, sop_uid = str(ct.SeriesInstanceUID), str(ct.SOPInstanceUID)

    assert _uids(client.retrieve_study(study_uid)) == _uids(direct.retrieve_study(study_uid))
    assert _uids(client.iter_study(study_uid)) == _uids(first)
    assert _uids(client.retrieve_series(study_uid, series_uid)) == _uids(
        direct.retrieve_series(study_uid, series_uid)
    )
    assert _uids(client.iter_series(study_uid, series_uid)) == _uids(
        ds for ds in first if ds.SeriesInstanceUID == ct.SeriesInstanceUID
    )
    ours = client.retrieve_instance(study_uid, series_uid, sop_uid)
    theirs = direct.retrieve_instance(study_uid, series_uid, sop_uid)
    assert ours.SOPInstanceUID == sop_uid and ours.PixelData == theirs.PixelData

    # Metadata at three levels: the same instances, Orthanc's attributes with its values, and
    # a BulkDataURI where Orthanc has one.
    for method, args in (
        ("retrieve_study_metadata", (study_uid,)),
        ("retrieve_series_metadata", (study_uid, series_uid)),
        ("retrieve_instance_metadata", (study_uid, series_uid, sop_uid)),
    ):
        mine = getattr(client, method)(*args)
        reference = getattr(direct, method)(*args)
        mine = mine if isinstance(mine, list) else [mine]
        reference = reference if isinstance(reference, list) else [reference]
        assert len(mine) == len(reference)
        by_uid = _by(mine, SOP_UID)
        for expected in reference:
            got = by_uid[_value(expected, SOP_UID)[0]]
            assert not set(expected) - set(got) - {"00080005"}, method
            for tag, element in expected.items():
                if "BulkDataURI" in element:
                    assert "BulkDataURI" in got[tag], (method, tag)
                elif "Value" in element and element["vr"] not in ("SQ", "OB", "OW", "UN"):
                    assert got[tag].get("Value") == element["Value"], (method, tag)

    # Bulk data behind the URIs: the same bytes as Orthanc's (native and RLE pixel data).
    for ds in (ct, mr):
        args = (study_uid, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        mine = client.retrieve_instance_metadata(*args)["7FE00010"]["BulkDataURI"]
        assert urlparse(mine).path.startswith(urlparse(client.base_url).path + "/wadors/")
        ours_bulk = client.retrieve_bulkdata(_on(client, mine))
        # Orthanc answers dicomweb-client's default Accept for frames and bulk data
        # (type="*/*") with 400, and sends RLE bulk data still compressed whatever the Accept
        # says: its uncompressed frames are the reference, and its bulk data fetched plainly
        # for the uncompressed instance.
        octets = ("application/octet-stream",)
        reference_frames = direct.retrieve_instance_frames(
            *args, frame_numbers=[1], media_types=octets
        )
        assert b"".join(ours_bulk) == b"".join(reference_frames)
        if ds is ct:  # (Orthanc leaves encapsulated pixel data out of its metadata)
            reference = direct.retrieve_instance_metadata(*args)["7FE00010"]["BulkDataURI"]
            plain = requests.get(_on(direct, reference), timeout=60)
            assert ours_bulk == _multipart_payloads(plain)
        assert b"".join(client.iter_bulkdata(_on(client, mine))) == b"".join(ours_bulk)

        # Frames (the default asks for uncompressed ones): the same bytes as Orthanc's.
        ours_frames = client.retrieve_instance_frames(*args, frame_numbers=[1])
        assert ours_frames == reference_frames
        assert len(ours_frames[0]) == ds.Rows * ds.Columns * ds.BitsAllocated // 8
        assert list(client.iter_instance_frames(*args, frame_numbers=[1])) == ours_frames
    # ... and as stored when asked so.
    args = (study_uid, str(mr.SeriesInstanceUID), str(mr.SOPInstanceUID))
    stored = client.retrieve_instance_frames(
        *args, frame_numbers=[1], media_types=(("application/octet-stream", "*"),)
    )
    assert stored == [next(generate_frames(mr.PixelData, number_of_frames=1))]


@pytest.mark.parametrize("mode", MODES)
def test_rendered_and_thumbnail(live_adit, orthanc_a, patient, mode):
    client = adit_client(live_adit, orthanc_a, mode)
    direct = orthanc_client(orthanc_a)
    _, (first, _second) = patient
    ct = first[0]
    study_uid, series_uid, sop_uid = (
        str(ct.StudyInstanceUID),
        str(ct.SeriesInstanceUID),
        str(ct.SOPInstanceUID),
    )
    calls = [
        ("retrieve_instance_rendered", (study_uid, series_uid, sop_uid), {}),
        ("retrieve_instance_frames_rendered", (study_uid, series_uid, sop_uid, [1]), {}),
        ("retrieve_series_rendered", (study_uid, series_uid), {}),
    ]
    for method, args, kwargs in calls:
        mine = _image(getattr(client, method)(*args, **kwargs))
        theirs = _image(getattr(direct, method)(*args, **kwargs))
        assert (mine.format, mine.size) == (theirs.format, theirs.size) == ("JPEG", (16, 16))

    # The study level (dicomweb-client has no call for it).
    mine = requests.get(
        f"{client.base_url}/wadors/studies/{study_uid}/rendered",
        headers=dict(client._session.headers),
        timeout=60,
    )
    theirs = requests.get(f"{orthanc_a.dicomweb_url}/studies/{study_uid}/rendered", timeout=60)
    assert mine.status_code == theirs.status_code == 200, mine.text
    assert mine.headers["Content-Type"] == theirs.headers["Content-Type"] == "image/jpeg"
    assert _image(mine.content).size == _image(theirs.content).size

    png = _image(
        client.retrieve_instance_rendered(
            study_uid,
            series_uid,
            sop_uid,
            media_types=("image/png",),
            params={"window": "40,400,linear", "viewport": "8,8"},
        )
    )
    assert (png.format, png.size) == ("PNG", (8, 8))
    # A narrow window makes a different image than a wide one.
    narrow = client.retrieve_instance_rendered(
        study_uid, series_uid, sop_uid, media_types=("image/png",), params={"window": "0,2"}
    )
    wide = client.retrieve_instance_rendered(
        study_uid, series_uid, sop_uid, media_types=("image/png",), params={"window": "0,4000"}
    )
    assert np.asarray(_image(narrow)).tolist() != np.asarray(_image(wide)).tolist()
    low = client.retrieve_instance_rendered(study_uid, series_uid, sop_uid, params={"quality": "5"})
    assert _image(low).format == "JPEG"

    # Thumbnails (dicomweb-client has no call for them) at every level.
    headers = client._session.headers
    for path in (
        f"studies/{study_uid}",
        f"studies/{study_uid}/series/{series_uid}",
        f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
    ):
        response = requests.get(
            f"{client.base_url}/wadors/{path}/thumbnail",
            headers={**headers, "Accept": "image/png"},
            params={"viewport": "4,4"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "image/png"
        assert _image(response.content).size == (4, 4)

    response = requests.get(
        f"{client.base_url}/wadors/studies/{study_uid}/rendered",
        headers={**headers, "Accept": "image/gif"},
        timeout=60,
    )
    assert response.status_code == 406
    assert "image/jpeg or image/png" in response.json()["detail"]
    response = requests.get(
        f"{client.base_url}/wadors/studies/{study_uid}/rendered",
        headers=headers,
        params={"window": "40"},
        timeout=60,
    )
    assert response.status_code == 400 and "window must be" in response.json()["detail"]


@pytest.mark.parametrize("mode", MODES)
def test_accept_negotiation(live_adit, orthanc_a, patient, mode):
    client = adit_client(live_adit, orthanc_a, mode)
    direct = orthanc_client(orthanc_a)
    _, (first, _second) = patient
    mr = first[-1]
    study_uid, series_uid, sop_uid = (
        str(mr.StudyInstanceUID),
        str(mr.SeriesInstanceUID),
        str(mr.SOPInstanceUID),
    )
    # As stored (transfer-syntax=*) and transcoded to Explicit VR Little Endian when asked.
    as_stored = client.retrieve_series(
        study_uid, series_uid, media_types=(("application/dicom", "*"),)
    )
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in as_stored} == {RLELossless}
    explicit = (("application/dicom", ExplicitVRLittleEndian),)
    mine = client.retrieve_series(study_uid, series_uid, media_types=explicit)
    theirs = direct.retrieve_series(study_uid, series_uid, media_types=explicit)
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in mine} == {ExplicitVRLittleEndian}
    assert {ds.SOPInstanceUID: ds.PixelData for ds in mine} == {
        ds.SOPInstanceUID: ds.PixelData for ds in theirs
    }

    headers = dict(client._session.headers)
    instance_url = (
        f"{client.base_url}/wadors/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    )
    # Single part where the standard allows it (one instance).
    response = requests.get(
        instance_url, headers={**headers, "Accept": "application/dicom"}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/dicom"
    assert dcmread(BytesIO(response.content)).SOPInstanceUID == sop_uid
    # ... but a study is never one part.
    response = requests.get(
        f"{client.base_url}/wadors/studies/{study_uid}",
        headers={**headers, "Accept": "application/dicom"},
        timeout=60,
    )
    assert response.status_code == 406
    assert response.headers["Content-Type"] == "application/json"
    # A compressed syntax the data is not stored in: 406 with the reason.
    response = requests.get(
        instance_url,
        headers={
            **headers,
            "Accept": 'multipart/related; type="application/dicom"; '
            f"transfer-syntax={JPEGBaseline8Bit}",
        },
        timeout=60,
    )
    assert response.status_code == 406, response.text
    assert "ADIT can send it as stored" in response.json()["detail"]
    response = requests.get(instance_url, headers={**headers, "Accept": "text/html"}, timeout=60)
    assert response.status_code == 406
    assert response.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("mode", MODES)
def test_store_answers_retrieve_urls_like_orthanc(live_adit, orthanc_a, orthanc_b, mode):
    client = adit_client(live_adit, orthanc_a, mode)
    datasets = small_study()[:2]
    mine = client.store_instances(datasets)
    theirs = orthanc_client(orthanc_b).store_instances(datasets)
    assert not mine.get("FailedSOPSequence")
    assert {str(item.ReferencedSOPInstanceUID) for item in mine.ReferencedSOPSequence} == {
        str(item.ReferencedSOPInstanceUID) for item in theirs.ReferencedSOPSequence
    }
    for item in mine.ReferencedSOPSequence:
        path = urlparse(item.RetrieveURL).path
        assert path.startswith(f"{urlparse(client.base_url).path}/wadors/studies/")
        assert path.endswith(f"/instances/{item.ReferencedSOPInstanceUID}")
        # The URL answers with that instance.
        study, series = datasets[0].StudyInstanceUID, None
        for ds in datasets:
            if ds.SOPInstanceUID == item.ReferencedSOPInstanceUID:
                series = ds.SeriesInstanceUID
        retrieved = client.retrieve_instance(
            str(study), str(series), str(item.ReferencedSOPInstanceUID)
        )
        assert retrieved.SOPInstanceUID == item.ReferencedSOPInstanceUID
    assert urlparse(mine.RetrieveURL).path.endswith(f"/wadors/studies/{study}")
    # Orthanc names its character set; ADIT's answer is plain ASCII.
    assert {elem.keyword for elem in theirs} - {"SpecificCharacterSet"} <= {
        elem.keyword for elem in mine
    }
