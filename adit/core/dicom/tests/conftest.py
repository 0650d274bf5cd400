"""Studies loaded into the session's peers for the DICOM layer tests (fresh UIDs per run)."""

import uuid

import pytest

from adit.core.dicom.testing.synthetic import make_study


@pytest.fixture
def reencoded(monkeypatch) -> list[str]:
    """SOP Instance UIDs that pynetdicom encoded for a C-STORE (not sent as received)."""
    from pynetdicom.association import Association

    calls: list[str] = []
    original = Association.send_c_store

    def counting_send_c_store(self, dataset, *args, **kwargs):
        calls.append(str(dataset.SOPInstanceUID))
        return original(self, dataset, *args, **kwargs)

    monkeypatch.setattr(Association, "send_c_store", counting_send_c_store)
    return calls


def new_patient_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10].upper()}"


@pytest.fixture(scope="module")
def study_on_orthanc_a(orthanc_a):
    """A CT+MR study (MR stored RLE Lossless) in ORTHANC_A; returns its datasets."""
    datasets = make_study(
        new_patient_id("DC"),
        "Layer^Test",
        series=(("CT", 5), ("MR", 3)),
        compressed_series=True,
        study_description="Chest CT",
    )
    orthanc_a.upload(datasets)
    return datasets


@pytest.fixture(scope="module")
def study_on_qrscp(qrscp):
    datasets = make_study(
        new_patient_id("QR"),
        "Query^Retrieve",
        series=(("CT", 3), ("MR", 2)),
        compressed_series=True,
    )
    qrscp.upload(datasets)
    return datasets
