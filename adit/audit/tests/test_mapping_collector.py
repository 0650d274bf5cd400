"""The mapping collector's bookkeeping (pure logic: datasets in memory, no database)."""

from pydicom import Dataset

from adit.audit.services import MappingCollector


def instance(patient_id: str, study: str, series: str) -> Dataset:
    ds = Dataset()
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = patient_id, study, series
    return ds


def test_maps_each_series_once_from_before_and_after_the_transform():
    collector = MappingCollector()
    for series, new_series in (("1.1", "9.1"), ("1.1", "9.1"), ("1.2", "9.2")):
        ds = instance("P1", "1", series)
        original = collector.before(ds)
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "PSN", "9", new_series
        collector.after(original, ds)
    assert collector.series == {("1", "1.1"): ("9", "9.1"), ("1", "1.2"): ("9", "9.2")}
    assert collector.pseudonymized_study_uids == ["9"]
    assert collector.patient_ids == {"P1"}


def test_disabled_collector_does_not_touch_instances():
    collector = MappingCollector(enabled=False)
    ds = instance("P1", "1", "1.1")
    collector.after(collector.before(ds), ds)
    assert collector.series == {}
