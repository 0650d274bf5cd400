"""DicomOperator: method choice, client-side re-filtering and fallbacks, against real peers."""

import pytest
from pydicom.uid import RLELossless

from adit.core.dicom.config import LocalConfig, ServerConfig
from adit.core.dicom.dicomweb import DicomWebConnector
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.errors import DicomError
from adit.core.dicom.operator import DicomOperator, MoveRequest
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing.synthetic import make_study

from .conftest import new_patient_id

pytestmark = pytest.mark.peers

DIMSE_OFF = dict(
    patient_root_find_support=False,
    patient_root_get_support=False,
    patient_root_move_support=False,
    study_root_find_support=False,
    study_root_get_support=False,
    study_root_move_support=False,
    store_scp_support=False,
)


def spy(monkeypatch, cls, name):
    calls = []
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        calls.append(name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


def test_find_studies_refilters_modalities_the_server_ignores(qrscp, study_on_qrscp, local_config):
    first = study_on_qrscp[0]
    operator = DicomOperator(qrscp.server_config(), local_config)
    base = dict(PatientID=first.PatientID)
    found = list(operator.find_studies(QueryDataset.create(**base, ModalitiesInStudy=["MR"])))
    # qrscp answers one match per instance: the operator de-duplicates.
    assert [s.StudyInstanceUID for s in found] == [first.StudyInstanceUID]
    assert set(found[0].ModalitiesInStudy) == {"CT", "MR"}
    assert list(operator.find_studies(QueryDataset.create(**base, ModalitiesInStudy=["US"]))) == []


def test_find_studies_description_matches_whole_value(orthanc_a, study_on_orthanc_a, local_config):
    patient_id = study_on_orthanc_a[0].PatientID
    operator = DicomOperator(orthanc_a.server_config(), local_config)

    def find(description):
        query = QueryDataset.create(PatientID=patient_id, StudyDescription=description)
        return list(operator.find_studies(query))

    assert len(find("Chest*")) == 1
    assert find("CT") == []


def test_find_patients_via_patient_root_and_via_qido(orthanc_a, study_on_orthanc_a, local_config):
    first = study_on_orthanc_a[0]
    by_name = QueryDataset.create(PatientName="layer, t*")  # converted, case-insensitive
    patients = [
        p
        for p in DicomOperator(orthanc_a.server_config(), local_config).find_patients(by_name)
        if p.PatientID == first.PatientID
    ]
    assert len(patients) == 1 and patients[0].PatientBirthDate is not None
    # Orthanc 1.10's DICOMweb plugin does not match PatientName in QIDO; query by ID there.
    by_id = QueryDataset.create(PatientID=first.PatientID)
    qido_only = DicomOperator(orthanc_a.server_config(**DIMSE_OFF), local_config)
    patients = [p for p in qido_only.find_patients(by_id) if p.PatientID == first.PatientID]
    assert len(patients) == 1  # the study-level answers are collapsed to one patient
    assert patients[0].PatientName == "Layer^Test"


def test_find_series_and_images_with_limit(orthanc_a, study_on_orthanc_a, local_config):
    first = study_on_orthanc_a[0]
    operator = DicomOperator(orthanc_a.server_config(), local_config)
    series = list(
        operator.find_series(
            QueryDataset.create(StudyInstanceUID=first.StudyInstanceUID, SeriesNumber=2)
        )
    )
    assert [s.Modality for s in series] == ["MR"]
    images = list(
        operator.find_images(
            QueryDataset.create(
                StudyInstanceUID=first.StudyInstanceUID, SeriesInstanceUID=first.SeriesInstanceUID
            ),
            limit_results=2,
        )
    )
    assert len(images) == 2
    with pytest.raises(DicomError, match="StudyInstanceUID"):
        list(operator.find_series(QueryDataset.create(Modality="CT")))


def test_fetch_prefers_c_get(orthanc_a, study_on_orthanc_a, local_config, monkeypatch):
    get_calls = spy(monkeypatch, DimseConnector, "send_c_get")
    wado_calls = spy(monkeypatch, DicomWebConnector, "send_wado_rs")
    first = study_on_orthanc_a[0]
    operator = DicomOperator(orthanc_a.server_config(), local_config)
    received = list(operator.fetch_study(first.PatientID, first.StudyInstanceUID))
    assert len(received) == len(study_on_orthanc_a)
    assert (get_calls, wado_calls) == (["send_c_get"], [])


def test_fetch_leaves_out_a_patient_id_with_wildcards(orthanc_a, local_config, monkeypatch):
    """DICOM cannot escape * or ?: such a PatientID (legal at a PACS) would be a pattern, so
    the fetch identifies the study by its UID alone; an ordinary PatientID is sent."""
    sent = []
    original = DimseConnector.send_c_get

    def recording(self, query, *args, **kwargs):
        sent.append(query.get_str("PatientID"))
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(DimseConnector, "send_c_get", recording)
    operator = DicomOperator(orthanc_a.server_config(), local_config)
    for patient_id in (new_patient_id("A?B"), new_patient_id("A*B"), new_patient_id("A/B%#")):
        study = make_study(patient_id, series=(("CT", 2),), compressed_series=False)
        orthanc_a.upload(study)
        received = list(operator.fetch_study(patient_id, study[0].StudyInstanceUID))
        assert {ds.SOPInstanceUID for ds in received} == {ds.SOPInstanceUID for ds in study}
        assert {ds.PatientID for ds in received} == {patient_id}
    assert sent[0] == sent[1] == ""
    assert sent[2].startswith("A/B%#")


def test_fetch_falls_back_to_wado(orthanc_a, study_on_orthanc_a, local_config):
    first = study_on_orthanc_a[0]
    operator = DicomOperator(orthanc_a.server_config(**DIMSE_OFF), local_config)
    received = list(
        operator.fetch_series(first.PatientID, first.StudyInstanceUID, first.SeriesInstanceUID)
    )
    assert {ds.SOPInstanceUID for ds in received} == {
        ds.SOPInstanceUID
        for ds in study_on_orthanc_a
        if ds.SeriesInstanceUID == first.SeriesInstanceUID
    }
    image = list(
        operator.fetch_image(
            first.PatientID, first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID
        )
    )
    assert [ds.SOPInstanceUID for ds in image] == [first.SOPInstanceUID]


def test_fetch_through_move_fetcher_hook(orthanc_a, orthanc_b, local_config):
    """C-MOVE path: the hook gets the expected UIDs and a C-MOVE to the receiver AE.

    ORTHANC_B stands in for ADIT's receiver here; the real one is tested with receiver.py.
    """
    datasets = make_study(
        new_patient_id("HK"), series=(("CT", 3), ("MR", 2)), compressed_series=True
    )
    orthanc_a.upload(datasets)
    requests_seen: list[MoveRequest] = []

    def fetcher(request: MoveRequest):
        requests_seen.append(request)
        result = request.send_c_move()
        assert result.completed == len(request.expected_sop_instance_uids)
        study_uid = request.query.get_str("StudyInstanceUID")
        yield from DicomWebConnector(orthanc_b.server_config(), request.local).iter_study(study_uid)

    local = LocalConfig(
        calling_ae_title=local_config.calling_ae_title,
        receiver_ae_title=orthanc_b.ae_title,
        timeouts=local_config.timeouts,
    )
    server = orthanc_a.server_config(
        study_root_get_support=False, patient_root_get_support=False, dicomweb_wado_support=False
    )
    operator = DicomOperator(server, local, move_fetcher=fetcher)
    received = list(operator.fetch_study(datasets[0].PatientID, datasets[0].StudyInstanceUID))
    assert {ds.SOPInstanceUID for ds in received} == {ds.SOPInstanceUID for ds in datasets}
    assert requests_seen[0].expected_sop_instance_uids == {ds.SOPInstanceUID for ds in datasets}


def test_fetch_without_any_method_is_a_clear_error(local_config):
    operator = DicomOperator(
        ServerConfig(name="Mute", dicomweb_root_url="http://127.0.0.1:1"), local_config
    )
    with pytest.raises(DicomError, match="Fetch from Mute.*no retrieve method"):
        list(operator.fetch_study("P", "1.2.3"))


def test_upload_uses_c_store_else_stow(orthanc_b, local_config, monkeypatch):
    store_calls = spy(monkeypatch, DimseConnector, "send_c_store")
    stow_calls = spy(monkeypatch, DicomWebConnector, "send_stow_rs")
    first = make_study(new_patient_id("U1"), series=(("CT", 2),), compressed_series=False)
    second = make_study(new_patient_id("U2"), series=(("MR", 2),), compressed_series=True)
    assert DicomOperator(orthanc_b.server_config(), local_config).upload(first) == 2
    assert DicomOperator(orthanc_b.server_config(**DIMSE_OFF), local_config).upload(second) == 2
    assert (store_calls, stow_calls) == (["send_c_store"], ["send_stow_rs"])
    mr_uid = second[0].SOPInstanceUID
    assert orthanc_b.instance_transfer_syntax(mr_uid) == RLELossless


def test_abort_ends_an_interactive_query(orthanc_a, study_on_orthanc_a, local_config):
    first = study_on_orthanc_a[0]
    operator = DicomOperator(orthanc_a.server_config(), local_config)
    query = QueryDataset.create(
        StudyInstanceUID=first.StudyInstanceUID, SeriesInstanceUID=first.SeriesInstanceUID
    )
    results = operator.find_images(query)
    next(results)
    operator.abort()
    assert len(list(results)) <= 4  # ends without error, nothing hangs
    with pytest.raises(DicomError, match="aborted"):
        list(operator.find_images(query))


def _series_on(orthanc, prefix):
    study = make_study(new_patient_id(prefix), series=(("CT", 4),))
    orthanc.upload(study)
    uids = {str(ds.SOPInstanceUID) for ds in study}
    return str(study[0].StudyInstanceUID), str(study[0].SeriesInstanceUID), uids


def test_instances_held_asks_c_find_once_when_it_has_everything(
    orthanc_b, local_config, monkeypatch
):
    study_uid, series_uid, uids = _series_on(orthanc_b, "HELD")
    qido = spy(monkeypatch, DicomWebConnector, "send_qido_rs")
    c_find = spy(monkeypatch, DimseConnector, "send_c_find")
    operator = DicomOperator(orthanc_b.server_config(), local_config)

    assert operator.instances_held(study_uid, series_uid, expected=uids) == uids
    assert (c_find, qido) == (["send_c_find"], [])


def test_instances_held_asks_qido_too_when_c_find_comes_up_short(
    orthanc_b, local_config, monkeypatch
):
    study_uid, series_uid, uids = _series_on(orthanc_b, "CAPPED")
    original = DimseConnector.send_c_find

    def capped_c_find(self, query, limit_results=None):
        return iter(list(original(self, query))[:2])  # like a server that caps its matches

    monkeypatch.setattr(DimseConnector, "send_c_find", capped_c_find)
    qido = spy(monkeypatch, DicomWebConnector, "send_qido_rs")
    operator = DicomOperator(orthanc_b.server_config(), local_config)

    assert operator.instances_held(study_uid, series_uid, expected=uids) == uids
    assert qido == ["send_qido_rs"]
    missing_one = uids | {"1.2.3.4.5.6.7.8.9"}
    assert operator.instances_held(study_uid, series_uid, expected=missing_one) == uids


def test_instances_held_over_qido_alone(orthanc_b, local_config):
    study_uid, series_uid, uids = _series_on(orthanc_b, "QIDOONLY")
    config = orthanc_b.server_config(study_root_find_support=False, patient_root_find_support=False)
    assert DicomOperator(config, local_config).instances_held(study_uid, series_uid) == uids


def test_instances_held_over_c_find_alone(orthanc_b, local_config):
    study_uid, series_uid, uids = _series_on(orthanc_b, "CFONLY")
    config = orthanc_b.server_config(dicomweb_qido_support=False)
    assert DicomOperator(config, local_config).instances_held(study_uid, series_uid) == uids
