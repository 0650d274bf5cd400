"""Studies loaded into the session's peers for the DICOM layer tests (fresh UIDs per run)."""

import uuid

import pytest

from adit.core.dicom.testing.synthetic import make_study


@pytest.fixture
def reencoded(monkeypatch) -> list[str]:
    """SOP Instance UIDs that were encoded again for a C-STORE (not sent as received)."""
    from adit.core.dicom import dimse

    calls: list[str] = []
    original = dimse._encode_instance

    def counting_encode_instance(ds, transfer_syntax):
        calls.append(str(ds.SOPInstanceUID))
        return original(ds, transfer_syntax)

    monkeypatch.setattr(dimse, "_encode_instance", counting_encode_instance)
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
