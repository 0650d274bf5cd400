"""DIMSE connector against real peers (Orthanc, pynetdicom's qrscp)."""

import io

import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless

from adit.core.dicom.config import ServerConfig
from adit.core.dicom.dimse import DimseConnector, storage_contexts
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.net import association
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing.peers import free_port
from adit.core.dicom.testing.synthetic import make_study

from .conftest import new_patient_id

pytestmark = pytest.mark.peers


def study_query(datasets, level="STUDY", **extra):
    return QueryDataset.create(
        QueryRetrieveLevel=level, StudyInstanceUID=datasets[0].StudyInstanceUID, **extra
    )


def test_storage_contexts_fit_into_one_association():
    assert len(storage_contexts(reserved=1)) <= 127


def test_c_echo(orthanc_a, qrscp, local_config):
    DimseConnector(orthanc_a.server_config(), local_config).send_c_echo()
    DimseConnector(qrscp.server_config(), local_config).send_c_echo()


def test_refused_connection_is_retriable_and_names_server(local_config):
    server = ServerConfig(name="Nobody", ae_title="NOBODY", host="127.0.0.1", port=free_port())
    with pytest.raises(RetriableDicomError, match=r"C-ECHO on Nobody"):
        DimseConnector(server, local_config).send_c_echo()


def test_unsupported_model_is_permanent(orthanc_a, local_config):
    server = orthanc_a.server_config(study_root_find_support=False)
    query = QueryDataset.create(QueryRetrieveLevel="STUDY", PatientID="*")
    with pytest.raises(DicomError, match="C-FIND on ORTHANC_A") as info:
        list(DimseConnector(server, local_config).send_c_find(query))
    assert not isinstance(info.value, RetriableDicomError)


@pytest.mark.parametrize("peer", ["orthanc", "qrscp"])
def test_c_find_all_levels(peer, request, local_config):
    if peer == "orthanc":
        server, datasets = (
            request.getfixturevalue("orthanc_a").server_config(),
            request.getfixturevalue("study_on_orthanc_a"),
        )
    else:
        server, datasets = (
            request.getfixturevalue("qrscp").server_config(),
            request.getfixturevalue("study_on_qrscp"),
        )
    first = datasets[0]
    connector = DimseConnector(server, local_config)

    patients = list(
        connector.send_c_find(
            QueryDataset.create(
                QueryRetrieveLevel="PATIENT", PatientID=first.PatientID, PatientName=None
            )
        )
    )
    assert {p.PatientID for p in patients} == {first.PatientID}
    assert patients[0].PatientName == str(first.PatientName)

    studies = list(
        connector.send_c_find(
            QueryDataset.create(
                QueryRetrieveLevel="STUDY",
                PatientID=first.PatientID,
                StudyInstanceUID=None,
                StudyDate=None,
            )
        )
    )
    assert {s.StudyInstanceUID for s in studies} == {first.StudyInstanceUID}
    assert studies[0].StudyDate is not None

    series = list(
        connector.send_c_find(
            study_query(datasets, "SERIES", SeriesInstanceUID=None, Modality=None)
        )
    )
    assert {s.SeriesInstanceUID for s in series} == {ds.SeriesInstanceUID for ds in datasets}
    assert {s.Modality for s in series} == {"CT", "MR"}

    images = list(
        connector.send_c_find(
            study_query(
                datasets, "IMAGE", SeriesInstanceUID=first.SeriesInstanceUID, SOPInstanceUID=None
            )
        )
    )
    expected = {
        ds.SOPInstanceUID for ds in datasets if ds.SeriesInstanceUID == first.SeriesInstanceUID
    }
    assert {i.SOPInstanceUID for i in images} == expected


def test_c_find_limit_stops_cleanly(orthanc_a, study_on_orthanc_a, local_config):
    first = study_on_orthanc_a[0]
    connector = DimseConnector(orthanc_a.server_config(), local_config)
    query = study_query(
        study_on_orthanc_a, "IMAGE", SeriesInstanceUID=first.SeriesInstanceUID, SOPInstanceUID=None
    )
    assert len(list(connector.send_c_find(query, limit_results=2))) == 2
    # The association ended properly: the same connector works at once for the full answer.
    assert len(list(connector.send_c_find(query))) == 5


@pytest.mark.parametrize("peer", ["orthanc", "qrscp"])
def test_c_get_keeps_compressed_transfer_syntax(peer, request, local_config):
    if peer == "orthanc":
        server = request.getfixturevalue("orthanc_a").server_config()
        datasets = request.getfixturevalue("study_on_orthanc_a")
    else:
        server = request.getfixturevalue("qrscp").server_config()
        datasets = request.getfixturevalue("study_on_qrscp")
    connector = DimseConnector(server, local_config)
    received = {ds.SOPInstanceUID: ds for ds in connector.send_c_get(study_query(datasets))}
    assert set(received) == {ds.SOPInstanceUID for ds in datasets}
    for ds in datasets:
        syntax = received[ds.SOPInstanceUID].file_meta.TransferSyntaxUID
        assert (syntax == RLELossless) == (ds.Modality == "MR"), (ds.Modality, syntax.name)
    mr = next(d for d in received.values() if d.Modality == "MR")
    assert mr.pixel_array.shape == (16, 16)
    assert connector.warnings == []


def test_c_get_consumer_stopping_early_ends_the_association(
    orthanc_a, study_on_orthanc_a, local_config
):
    connector = DimseConnector(orthanc_a.server_config(), local_config)
    iterator = connector.send_c_get(study_query(study_on_orthanc_a))
    next(iterator)
    iterator.close()
    connector.send_c_echo()  # still usable


def test_c_store_many_instances_on_one_association(orthanc_b, local_config, monkeypatch):
    datasets = make_study(
        new_patient_id("ST"), series=(("CT", 6), ("MR", 4)), compressed_series=True
    )
    associations = []
    original = association.Association.request

    def counting_request(*args, **kwargs):
        assoc = original(*args, **kwargs)
        associations.append(assoc)
        return assoc

    monkeypatch.setattr(association.Association, "request", counting_request)
    result = DimseConnector(orthanc_b.server_config(), local_config).send_c_store(datasets)
    assert result.stored == 10
    assert len(associations) == 1
    study_uid = datasets[0].StudyInstanceUID
    assert orthanc_b.study_instance_uids(study_uid) == {ds.SOPInstanceUID for ds in datasets}
    mr_uid = next(ds.SOPInstanceUID for ds in datasets if ds.Modality == "MR")
    assert orthanc_b.instance_transfer_syntax(mr_uid) == RLELossless


def test_c_store_of_an_iterator_uses_the_broad_contexts(orthanc_b, local_config):
    datasets = make_study(
        new_patient_id("SI"), series=(("CT", 2), ("MR", 2)), compressed_series=True
    )
    result = DimseConnector(orthanc_b.server_config(), local_config).send_c_store(iter(datasets))
    assert result.stored == 4
    mr_uid = next(ds.SOPInstanceUID for ds in datasets if ds.Modality == "MR")
    assert orthanc_b.instance_transfer_syntax(mr_uid) == RLELossless


def test_c_move_orthanc_to_orthanc(orthanc_a, orthanc_b, local_config):
    datasets = make_study(new_patient_id("MV"), series=(("CT", 3),), compressed_series=False)
    orthanc_a.upload(datasets)
    connector = DimseConnector(orthanc_a.server_config(), local_config)
    result = connector.send_c_move(study_query(datasets), orthanc_b.ae_title)
    assert (result.completed, result.failed) == (3, 0)
    assert orthanc_b.study_instance_uids(datasets[0].StudyInstanceUID) == {
        ds.SOPInstanceUID for ds in datasets
    }


def test_c_move_qrscp_to_orthanc(qrscp, orthanc_a, local_config):
    datasets = make_study(new_patient_id("QM"), series=(("CT", 2),), compressed_series=False)
    qrscp.upload(datasets)
    result = DimseConnector(qrscp.server_config(), local_config).send_c_move(
        study_query(datasets), orthanc_a.ae_title
    )
    assert result.completed == 2
    assert len(orthanc_a.study_instance_uids(datasets[0].StudyInstanceUID)) == 2


def test_c_move_to_unknown_destination_fails_permanently(
    orthanc_a, study_on_orthanc_a, local_config
):
    connector = DimseConnector(orthanc_a.server_config(), local_config)
    with pytest.raises(DicomError, match="C-MOVE on ORTHANC_A") as info:
        connector.send_c_move(study_query(study_on_orthanc_a), "NOT_KNOWN")
    assert not isinstance(info.value, RetriableDicomError)


def test_unchanged_instances_are_relayed_as_received(orthanc_a, orthanc_b, local_config, reencoded):
    study = make_study(new_patient_id("RAW"), series=(("CT", 4), ("MR", 3)), compressed_series=True)
    orthanc_a.upload(study)
    query = QueryDataset.create(
        QueryRetrieveLevel="STUDY",
        PatientID=study[0].PatientID,
        StudyInstanceUID=study[0].StudyInstanceUID,
    )
    fetched = DimseConnector(orthanc_a.server_config(), local_config).send_c_get(query)
    result = DimseConnector(orthanc_b.server_config(), local_config).send_c_store(
        fetched, reuse_received_encoding=True
    )

    assert result.stored == len(study)
    assert reencoded == []  # nothing was encoded again
    for ds in study:
        relayed = orthanc_b.instance_file(ds.SOPInstanceUID)
        original_file = orthanc_a.instance_file(ds.SOPInstanceUID)
        # Same data set bytes (file meta may differ in the implementation UIDs).
        assert relayed[-2000:] == original_file[-2000:]
    mr_uid = next(ds.SOPInstanceUID for ds in study if ds.Modality == "MR")
    assert orthanc_b.instance_transfer_syntax(mr_uid) == RLELossless


def test_changed_instances_are_encoded_again(orthanc_a, orthanc_b, local_config):
    study = make_study(new_patient_id("ENC"), series=(("CT", 2),))
    orthanc_a.upload(study)
    query = QueryDataset.create(
        QueryRetrieveLevel="STUDY",
        PatientID=study[0].PatientID,
        StudyInstanceUID=study[0].StudyInstanceUID,
    )

    def renamed(instances):
        for ds in instances:
            ds.PatientName = "Changed^Name"
            yield ds

    fetched = DimseConnector(orthanc_a.server_config(), local_config).send_c_get(query)
    DimseConnector(orthanc_b.server_config(), local_config).send_c_store(renamed(fetched))
    for ds in study:
        relayed = dcmread(io.BytesIO(orthanc_b.instance_file(ds.SOPInstanceUID)))
        assert relayed.PatientName == "Changed^Name"


def test_relaying_as_received_fails_closed_for_a_changed_instance(
    orthanc_a, orthanc_b, local_config, reencoded
):
    # A transform that changes instances but does not drop their received bytes, and a caller
    # that asks for relaying as received: the changes must arrive all the same.
    study = make_study(new_patient_id("FC"), series=(("CT", 3),))
    study[1].PatientComments = "to be removed"
    orthanc_a.upload(study)
    query = QueryDataset.create(
        QueryRetrieveLevel="STUDY",
        PatientID=study[0].PatientID,
        StudyInstanceUID=study[0].StudyInstanceUID,
    )
    first, second, third = (str(ds.SOPInstanceUID) for ds in study)

    def careless_transform(instances):
        for ds in instances:
            uid = str(ds.SOPInstanceUID)  # reading converts only this element
            if uid == first:
                ds.PatientName = "Changed^Name"
            elif uid == second:
                del ds.PatientComments
            yield ds

    fetched = DimseConnector(orthanc_a.server_config(), local_config).send_c_get(query)
    DimseConnector(orthanc_b.server_config(), local_config).send_c_store(
        careless_transform(fetched), reuse_received_encoding=True
    )

    assert dcmread(io.BytesIO(orthanc_b.instance_file(first))).PatientName == "Changed^Name"
    assert "PatientComments" not in dcmread(io.BytesIO(orthanc_b.instance_file(second)))
    # Even the instance that was only read is encoded again: a read is not a proof of no change.
    assert sorted(reencoded) == sorted([first, second, third])


def test_received_bytes_count_only_while_the_instance_is_untouched():
    from pydicom.uid import ExplicitVRLittleEndian

    from adit.core.dicom.dimse import (
        _decode_from,
        _encode_for,
        received_encoding,
        remember_received_encoding,
    )

    original = make_study(new_patient_id("RB"), series=(("CT", 1),))[0]
    encoded = _encode_for(original, ExplicitVRLittleEndian)

    def received():
        ds = _decode_from(encoded, ExplicitVRLittleEndian)
        remember_received_encoding(ds, ExplicitVRLittleEndian, encoded)
        return ds

    assert received_encoding(received()) == (ExplicitVRLittleEndian, encoded)
    changes = [
        lambda ds: setattr(ds, "PatientName", "Other^Name"),
        lambda ds: delattr(ds, "PatientID"),
        lambda ds: setattr(ds, "PatientComments", "added"),
        lambda ds: ds.PatientName,  # a read converts the element: no longer provably the same
        lambda ds: ds.__setitem__(0x00100010, ds[0x00100010]),
    ]
    for change in changes:
        ds = received()
        change(ds)
        assert received_encoding(ds) is None


def test_uid_of_reads_raw_and_converted_elements_alike():
    from pydicom.uid import ImplicitVRLittleEndian

    from adit.core.dicom.dimse import SOP_INSTANCE_UID, _decode_from, _encode_for, uid_of

    ds = make_study(new_patient_id("UID"), series=(("CT", 1),))[0]
    ds.SOPInstanceUID = "1.2.3.45"  # odd length: padded with a NUL byte when encoded
    decoded = _decode_from(_encode_for(ds, ImplicitVRLittleEndian), ImplicitVRLittleEndian)
    assert uid_of(decoded, SOP_INSTANCE_UID) == "1.2.3.45"  # raw bytes
    assert decoded.SOPInstanceUID == "1.2.3.45"  # converts it
    assert uid_of(decoded, SOP_INSTANCE_UID) == "1.2.3.45"
    del decoded.SOPInstanceUID
    assert uid_of(decoded, SOP_INSTANCE_UID) == ""
