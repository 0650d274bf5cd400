"""WADO-RS at the source's speed: relaying a DICOMweb source's bytes, the received bytes of a
C-GET, and backpressure from slow clients (see `adit.dicom_web.relay`,
`adit.core.backpressure`)."""

from __future__ import annotations

import threading
import time
from io import BytesIO

import pytest
import requests
from adit_client.multipart import iter_parts, parse_content_type
from pydicom import dcmread

from adit.core.dicom.testing.synthetic import make_large_study
from adit.dicom_web.testing import peak_rss_while

from .helpers import dicomweb_url, new_patient_id, setup_user_and_server

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
EXPLICIT_LE = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
COUNT = 120
ROWS = 256  # 128 KiB of pixel data per instance, about 16 MB for the study


@pytest.fixture(scope="module")
def study(orthanc_a):
    datasets = make_large_study(
        n_instances=COUNT,
        patient_id=new_patient_id(),
        n_series=2,
        rows=ROWS,
        columns=ROWS,
        seed=None,
    )
    orthanc_a.upload(datasets)
    return datasets


def _parts(response: requests.Response) -> list[bytes]:
    media_type, params = parse_content_type(response.headers["Content-Type"])
    assert media_type == "multipart/related", response.text[:300]
    return [body for _, body in iter_parts(BytesIO(response.content).read, params["boundary"])]


def test_a_dicomweb_source_is_relayed_byte_for_byte(live_adit, orthanc_a, study):
    api_user, server = setup_user_and_server(orthanc_a, "dicomweb")
    study_uid = str(study[0].StudyInstanceUID)
    direct = requests.get(
        f"{orthanc_a.dicomweb_url}/studies/{study_uid}",
        headers={"Accept": ANY_SYNTAX},
        timeout=120,
    )
    through_adit = requests.get(
        f"{dicomweb_url(live_adit, server, 'wadors')}/studies/{study_uid}",
        headers={**api_user.headers, "Accept": ANY_SYNTAX},
        timeout=120,
    )
    assert through_adit.status_code == 200, through_adit.text[:300]
    assert through_adit.headers["Cache-Control"] == "no-store"
    relayed = _parts(through_adit)
    assert len(relayed) == COUNT
    # The very bytes the source sent: nothing decoded, nothing encoded again.
    assert sorted(relayed) == sorted(_parts(direct))

    # A named transfer syntax is not relayed blindly; the instances still arrive.
    explicit = requests.get(
        f"{dicomweb_url(live_adit, server, 'wadors')}/studies/{study_uid}/series/"
        f"{study[0].SeriesInstanceUID}",
        headers={**api_user.headers, "Accept": EXPLICIT_LE},
        timeout=120,
    )
    assert explicit.status_code == 200, explicit.text[:300]
    assert len(_parts(explicit)) == COUNT // 2

    # What the source does not hold is a JSON 404 naming it, as without the relay.
    missing = requests.get(
        f"{dicomweb_url(live_adit, server, 'wadors')}/studies/1.2.3.4.5.6.7",
        headers={**api_user.headers, "Accept": ANY_SYNTAX},
        timeout=60,
    )
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/json")
    assert "study 1.2.3.4.5.6.7" in missing.json()["detail"]


def test_a_pseudonymized_retrieve_from_a_dicomweb_source_is_not_relayed(
    live_adit, orthanc_a, study
):
    api_user, server = setup_user_and_server(orthanc_a, "dicomweb")
    sop_uid = str(study[0].SOPInstanceUID)
    response = requests.get(
        f"{dicomweb_url(live_adit, server, 'wadors')}/studies/{study[0].StudyInstanceUID}/"
        f"series/{study[0].SeriesInstanceUID}/instances/{sop_uid}",
        params={"pseudonym": "RELAY-PSN"},
        headers={**api_user.headers, "Accept": ANY_SYNTAX},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:300]
    (body,) = _parts(response)
    ds = dcmread(BytesIO(body))
    assert ds.PatientID == "RELAY-PSN"
    assert ds.SOPInstanceUID != sop_uid


def test_a_c_get_source_sends_the_instances_as_received(live_adit, orthanc_a, study):
    api_user, server = setup_user_and_server(orthanc_a, "dimse")
    response = requests.get(
        f"{dicomweb_url(live_adit, server, 'wadors')}/studies/{study[0].StudyInstanceUID}",
        headers={**api_user.headers, "Accept": ANY_SYNTAX},
        timeout=120,
    )
    assert response.status_code == 200, response.text[:300]
    originals = {str(ds.SOPInstanceUID): ds for ds in study}
    received = [dcmread(BytesIO(body)) for body in _parts(response)]
    assert len(received) == COUNT
    for ds in received:
        original = originals[str(ds.SOPInstanceUID)]
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
        assert ds.PatientID == original.PatientID
        assert ds.PixelData == original.PixelData


def _slow_download(url: str, headers: dict, first_byte: list[float]) -> int:
    """Reads like a slow client (about 8 MB/s); the bytes received."""
    received = 0
    started = time.monotonic()
    with requests.get(url, headers=headers, stream=True, timeout=300) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(chunk_size=128 * 1024):
            if not received:
                first_byte.append(time.monotonic() - started)
            received += len(chunk)
            time.sleep(0.015)
    return received


@pytest.mark.parametrize("mode", ("dimse", "dicomweb"))
def test_slow_parallel_clients_set_the_pace_not_the_memory(live_adit, orthanc_a, study, mode):
    """Three slow clients at once: without backpressure the web process would hold most of the
    three studies (daphne buffers whatever it is given); with it, a few chunks each."""
    api_user, server = setup_user_and_server(orthanc_a, mode)
    url = f"{dicomweb_url(live_adit, server, 'wadors')}/studies/{study[0].StudyInstanceUID}"
    headers = {**api_user.headers, "Accept": ANY_SYNTAX}
    study_bytes = sum(len(ds.PixelData) for ds in study)
    _slow_download(url, headers, [])  # warm up (imports, pools)
    first_bytes: list[float] = []
    sizes: list[int] = []

    def three_clients() -> None:
        def client() -> None:
            sizes.append(_slow_download(url, headers, first_bytes))

        threads = [threading.Thread(target=client) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    baseline = __import__("psutil").Process(live_adit.pid).memory_info().rss
    started = time.monotonic()
    peak, _ = peak_rss_while(live_adit.pid, three_clients)
    seconds = time.monotonic() - started
    assert len(sizes) == 3 and min(sizes) > study_bytes
    growth = peak - baseline
    assert growth < study_bytes, (
        f"RSS grew by {growth / 2**20:.1f} MiB serving 3 × {study_bytes / 2**20:.1f} MiB"
    )
    # Streamed: the first bytes left long before the study was through.
    assert max(first_bytes) < seconds / 3, (first_bytes, seconds)
