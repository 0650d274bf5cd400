"""WADO-RS streams: the server's memory does not grow with the size of the study."""

from __future__ import annotations

import pytest
import requests

from adit.core.dicom.testing.synthetic import make_large_study
from adit.core.testing import wait_until
from adit.dicom_web.testing import peak_rss_while

from .helpers import MODES, dicomweb_url, new_patient_id, setup_user_and_server

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

LARGE_COUNT = 200
SMALL_COUNT = 10
# 256x256 16-bit pixels: 128 KiB per instance, about 26 MB for the large study.
ROWS = COLUMNS = 256


def _study(count: int):
    return make_large_study(
        n_instances=count,
        patient_id=new_patient_id(),
        n_series=2,
        rows=ROWS,
        columns=COLUMNS,
        seed=None,
    )


@pytest.fixture(scope="module")
def studies(orthanc_a):
    small, large = _study(SMALL_COUNT), _study(LARGE_COUNT)
    orthanc_a.upload(small)
    orthanc_a.upload(large)
    large_bytes = sum(len(ds.PixelData) for ds in large)
    return small, large, large_bytes


def _download(url: str, headers: dict) -> int:
    """Reads the response in chunks (like a streaming client); the bytes received."""
    received = 0
    with requests.get(url, headers=headers, stream=True, timeout=300) as response:
        assert response.status_code == 200, response.text
        for chunk in response.iter_content(chunk_size=64 * 1024):
            received += len(chunk)
    return received


@pytest.mark.parametrize("mode", MODES)
def test_large_study_streams_in_constant_memory(live_adit, orthanc_a, studies, mode):
    small, large, large_bytes = studies
    api_user, server = setup_user_and_server(orthanc_a, mode)
    wado = dicomweb_url(live_adit, server, "wadors")

    # Warm up (imports, connection pools) so the small run measures the steady state.
    _download(f"{wado}/studies/{small[0].StudyInstanceUID}", api_user.headers)
    small_peak, small_received = peak_rss_while(
        live_adit.pid,
        lambda: _download(f"{wado}/studies/{small[0].StudyInstanceUID}", api_user.headers),
    )
    large_peak, large_received = peak_rss_while(
        live_adit.pid,
        lambda: _download(f"{wado}/studies/{large[0].StudyInstanceUID}", api_user.headers),
    )
    assert large_received > large_bytes  # everything arrived (pixel data plus headers)
    assert small_received < large_received / 10
    growth = large_peak - small_peak
    # Buffering the study would add at least its size (26 MB); streaming adds a few buffers.
    assert growth < large_bytes * 0.35, (
        f"peak RSS grew by {growth / 2**20:.1f} MiB for a {large_bytes / 2**20:.1f} MiB study"
    )


def test_client_disconnect_stops_the_fetch(live_adit, orthanc_a, studies):
    """A client that goes away mid-stream ends the fetch (no thread keeps pulling from the PACS)."""
    import time

    import psutil

    _, large, _ = studies
    api_user, server = setup_user_and_server(orthanc_a, "dimse")
    wado = dicomweb_url(live_adit, server, "wadors")
    process = psutil.Process(live_adit.pid)
    # Warm up: the event loop's executor threads stay once created; they are not the fetch.
    _download(f"{wado}/studies/{large[0].StudyInstanceUID}", api_user.headers)
    time.sleep(1)
    baseline = process.num_threads()
    with requests.get(
        f"{wado}/studies/{large[0].StudyInstanceUID}",
        headers=api_user.headers,
        stream=True,
        timeout=60,
    ) as response:
        assert response.status_code == 200
        next(response.iter_content(chunk_size=64 * 1024))
        assert process.num_threads() > baseline  # the fetch (and C-GET) threads are running
    wait_until(lambda: process.num_threads() <= baseline, 20, interval=0.2, raising=False)
    assert process.num_threads() <= baseline, "fetch threads survived the disconnect"
    # The server still works.
    assert _download(f"{wado}/studies/{large[0].StudyInstanceUID}", api_user.headers) > 0
