"""Pytest fixtures for real DICOM peers (Orthanc, DCMTK, pynetdicom's qrscp).

Session-scoped peers are shared by every test of a run, so tests must not rely on an empty
server: upload studies with fresh UIDs/patient IDs (synthetic data without a seed does that) and
look for exactly those. For an Orthanc with extra modalities use
`adit.core.dicom.testing.peers.start_orthanc` or `orthanc_a.add_modality(...)`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adit.core.dicom.config import LocalConfig, Timeouts
from adit.core.dicom.testing.peers import (
    OrthancInstance,
    QrScpInstance,
    require_binary,
    require_orthanc,
    start_qrscp,
)


@pytest.fixture(scope="session")
def _orthanc_pair(tmp_path_factory) -> Iterator[tuple[OrthancInstance, OrthancInstance]]:
    require_orthanc()
    a = OrthancInstance("ORTHANC_A", base_dir=tmp_path_factory.mktemp("orthanc_a"))
    b = OrthancInstance("ORTHANC_B", base_dir=tmp_path_factory.mktemp("orthanc_b"))
    a.modalities["ORTHANC_B"] = b.as_modality
    b.modalities["ORTHANC_A"] = a.as_modality
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="session")
def orthanc_a(_orthanc_pair) -> OrthancInstance:
    """Orthanc "ORTHANC_A" with DICOMweb; knows ORTHANC_B as a modality."""
    return _orthanc_pair[0]


@pytest.fixture(scope="session")
def orthanc_b(_orthanc_pair) -> OrthancInstance:
    """Orthanc "ORTHANC_B" with DICOMweb; knows ORTHANC_A as a modality."""
    return _orthanc_pair[1]


@pytest.fixture(scope="session")
def qrscp(tmp_path_factory, _orthanc_pair) -> Iterator[QrScpInstance]:
    """pynetdicom's qrscp (AE "QRSCP") with its own database; may C-MOVE to ORTHANC_A/B."""
    a, b = _orthanc_pair
    instance = start_qrscp(
        move_destinations={
            a.ae_title: (a.as_modality[1], a.dicom_port),
            b.ae_title: (b.as_modality[1], b.dicom_port),
        },
        base_dir=tmp_path_factory.mktemp("qrscp"),
    )
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def dcmtk() -> dict[str, str]:
    """Paths of the DCMTK tools the tests use (skips/fails when DCMTK is missing)."""
    return {
        name: require_binary(name)
        for name in ("storescu", "findscu", "getscu", "movescu", "storescp", "dcmdump")
    }


@pytest.fixture
def local_config() -> LocalConfig:
    """ADIT's side of DICOM networking for tests (short timeouts so failures show fast)."""
    return LocalConfig(
        calling_ae_title="ADIT_TEST",
        timeouts=Timeouts(connection=5, acse=10, dimse=30, network=30, http=30),
    )
