"""The mapping collector's bookkeeping (pure logic, no database)."""

from adit.audit.services import MappingCollector
from adit.core.dicom.pseudonymizer import PseudonymizedInstance


def replaced(series: str, new_series: str, sop: str) -> PseudonymizedInstance:
    return PseudonymizedInstance(
        original_patient_id="P1",
        pseudonym="PSN",
        original_study_uid="1",
        study_uid="9",
        original_series_uid=series,
        series_uid=new_series,
        original_sop_instance_uid=f"{series}.{sop}",
        sop_instance_uid=f"{new_series}.{sop}",
    )


def test_maps_each_series_once():
    collector = MappingCollector()
    for series, new_series, sop in (("1.1", "9.1", "1"), ("1.1", "9.1", "2"), ("1.2", "9.2", "1")):
        collector.add(replaced(series, new_series, sop))
    assert collector.series == {("1", "1.1"): ("9", "9.1"), ("1", "1.2"): ("9", "9.2")}
    assert collector.pseudonymized_study_uids == ["9"]
    assert collector.patient_ids == {"P1"}
    assert collector.pseudonymized_patient_ids == {"PSN"}


def test_a_transfer_without_pseudonymized_instances_maps_nothing():
    assert MappingCollector().series == {}
