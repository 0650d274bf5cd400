"""DICOMweb connector against Orthanc's DICOMweb plugin (and a tiny HTTP peer for errors)."""

import http.server
import threading

import pytest
import requests
from pydicom.uid import RLELossless

from adit.core.dicom.config import ServerConfig
from adit.core.dicom.dicomweb import DicomWebConnector
from adit.core.dicom.dimse import SOP_INSTANCE_UID, uid_of
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing import wait_until

from .conftest import new_patient_id

pytestmark = pytest.mark.peers


def test_qido_study_series_instance_with_fields_and_limit(
    orthanc_a, study_on_orthanc_a, local_config
):
    first = study_on_orthanc_a[0]
    connector = DicomWebConnector(orthanc_a.server_config(), local_config)
    studies = connector.send_qido_rs(
        QueryDataset.create(
            QueryRetrieveLevel="STUDY",
            PatientID=first.PatientID,
            StudyDate=None,
            ModalitiesInStudy=None,
        )
    )
    assert [s.StudyInstanceUID for s in studies] == [first.StudyInstanceUID]
    assert studies[0].StudyDate is not None
    assert set(studies[0].ModalitiesInStudy) == {"CT", "MR"}

    series = connector.send_qido_rs(
        QueryDataset.create(
            QueryRetrieveLevel="SERIES",
            StudyInstanceUID=first.StudyInstanceUID,
            SeriesDescription=None,
        )
    )
    assert len(series) == 2
    assert {s.SeriesDescription for s in series} == {
        ds.SeriesDescription for ds in study_on_orthanc_a
    }

    images = connector.send_qido_rs(
        QueryDataset.create(
            QueryRetrieveLevel="IMAGE",
            StudyInstanceUID=first.StudyInstanceUID,
            SeriesInstanceUID=first.SeriesInstanceUID,
        ),
        limit_results=3,
    )
    assert len(images) == 3


def test_wado_streams_study_series_and_instance_as_stored(
    orthanc_a, study_on_orthanc_a, local_config
):
    first = study_on_orthanc_a[0]
    connector = DicomWebConnector(orthanc_a.server_config(), local_config)
    iterator = connector.iter_study(first.StudyInstanceUID)
    assert not isinstance(iterator, list)
    received = {ds.SOPInstanceUID: ds for ds in iterator}
    assert set(received) == {ds.SOPInstanceUID for ds in study_on_orthanc_a}
    mr = next(ds for ds in received.values() if ds.Modality == "MR")
    assert mr.file_meta.TransferSyntaxUID == RLELossless

    series = list(connector.iter_series(first.StudyInstanceUID, first.SeriesInstanceUID))
    assert len(series) == 5
    instance = connector.retrieve_instance(
        first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID
    )
    assert instance.SOPInstanceUID == first.SOPInstanceUID


def test_stow_stores_many_instances_in_few_requests(orthanc_b, local_config, monkeypatch):
    datasets = make_study(
        new_patient_id("SW"), series=(("CT", 5), ("MR", 3)), compressed_series=True
    )
    posts = []
    original = requests.Session.post

    def counting_post(self, *args, **kwargs):
        posts.append(args[0] if args else kwargs.get("url"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "post", counting_post)
    result = DicomWebConnector(orthanc_b.server_config(), local_config).send_stow_rs(
        iter(datasets), batch_size=3
    )
    assert result.stored == 8
    assert len(posts) == 3
    uids = orthanc_b.study_instance_uids(datasets[0].StudyInstanceUID)
    assert uids == {ds.SOPInstanceUID for ds in datasets}
    mr_uid = next(ds.SOPInstanceUID for ds in datasets if ds.Modality == "MR")
    assert orthanc_b.instance_transfer_syntax(mr_uid) == RLELossless


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    status = 200
    seen_headers: list = []
    posted_bodies: list = []

    def do_GET(self):
        type(self).seen_headers.append(dict(self.headers))
        self._answer(b"[]")

    def do_POST(self):
        type(self).seen_headers.append(dict(self.headers))
        type(self).posted_bodies.append(self._read_body())
        self._answer(b"{}")

    def _answer(self, body: bytes) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted_http_server():
    _ScriptedHandler.seen_headers = []
    _ScriptedHandler.posted_bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _scripted_config(server, **extra):
    return ServerConfig(
        name="Scripted",
        dicomweb_root_url=f"http://127.0.0.1:{server.server_address[1]}/dicom-web",
        dicomweb_qido_support=True,
        **extra,
    )


@pytest.mark.parametrize("status", [408, 409, 429, 500, 503])
def test_transient_http_statuses_are_retriable(scripted_http_server, local_config, status):
    _ScriptedHandler.status = status
    connector = DicomWebConnector(_scripted_config(scripted_http_server), local_config)
    with pytest.raises(RetriableDicomError, match=f"QIDO-RS on Scripted.*HTTP {status}"):
        connector.send_qido_rs(QueryDataset.create(QueryRetrieveLevel="STUDY", PatientID="X"))


def test_other_http_errors_are_permanent(scripted_http_server, local_config):
    _ScriptedHandler.status = 404
    connector = DicomWebConnector(_scripted_config(scripted_http_server), local_config)
    with pytest.raises(DicomError, match="HTTP 404") as info:
        connector.send_qido_rs(QueryDataset.create(QueryRetrieveLevel="STUDY", PatientID="X"))
    assert not isinstance(info.value, RetriableDicomError)


def test_authorization_header_is_sent(scripted_http_server, local_config):
    _ScriptedHandler.status = 200
    config = _scripted_config(scripted_http_server, dicomweb_authorization_header="Bearer s3cret")
    assert (
        DicomWebConnector(config, local_config).send_qido_rs(
            QueryDataset.create(QueryRetrieveLevel="STUDY", PatientID="X")
        )
        == []
    )
    assert _ScriptedHandler.seen_headers[-1]["Authorization"] == "Bearer s3cret"


def test_connection_refused_is_retriable(local_config):
    from adit.core.dicom.testing.peers import free_port

    config = ServerConfig(
        name="Gone", dicomweb_root_url=f"http://127.0.0.1:{free_port()}/dicom-web"
    )
    with pytest.raises(RetriableDicomError, match="QIDO-RS on Gone"):
        DicomWebConnector(config, local_config).send_qido_rs(
            QueryDataset.create(QueryRetrieveLevel="STUDY", PatientID="X")
        )


def test_stow_sends_part10_files_even_for_instances_received_over_dimse(
    scripted_http_server, local_config
):
    # Instances from a C-GET/C-MOVE carry neither preamble nor complete file meta.
    datasets = make_study(new_patient_id("P10"), series=(("CT", 2),))
    for ds in datasets:
        ds.preamble = None
        del ds.file_meta.MediaStorageSOPInstanceUID
    _ScriptedHandler.status = 200
    config = _scripted_config(scripted_http_server, dicomweb_stow_support=True)
    result = DicomWebConnector(config, local_config).send_stow_rs(iter(datasets))

    assert result.stored == 2
    body = b"".join(_ScriptedHandler.posted_bodies)
    assert body.count(b"\x00" * 128 + b"DICM") == 2
    for ds in datasets:
        assert ds.SOPInstanceUID.encode() in body


def _counting(monkeypatch, module, name: str) -> list:
    calls: list = []
    original = getattr(module, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def _data_set_bytes(part10: bytes) -> bytes:
    """What follows the file meta of a Part-10 file (group length after preamble + DICM)."""
    import struct

    (group_length,) = struct.unpack_from("<I", part10, 140)
    return part10[144 + group_length :]


def test_wado_to_stow_sends_unchanged_instances_as_received(
    orthanc_a, orthanc_b, study_on_orthanc_a, local_config, monkeypatch
):
    from adit.core.dicom import dicomweb

    encoded = _counting(monkeypatch, dicomweb, "_encode_part10")
    study_uid = study_on_orthanc_a[0].StudyInstanceUID
    orthanc_b.delete_study(study_uid)
    source = DicomWebConnector(orthanc_a.server_config(), local_config)
    destination = DicomWebConnector(orthanc_b.server_config(), local_config)

    result = destination.send_stow_rs(source.iter_study(study_uid), batch_size=3, unchanged=True)

    assert result.stored == len(study_on_orthanc_a)
    assert encoded == []  # not one instance was encoded again
    held = orthanc_b.study_instance_uids(study_uid)
    assert held == {ds.SOPInstanceUID for ds in study_on_orthanc_a}
    for uid in held:  # byte for byte the data sets A serves, RLE-compressed MR included
        assert _data_set_bytes(orthanc_b.instance_file(uid)) == _data_set_bytes(
            orthanc_a.instance_file(uid)
        )
    mr_uid = next(ds.SOPInstanceUID for ds in study_on_orthanc_a if ds.Modality == "MR")
    assert orthanc_b.instance_transfer_syntax(mr_uid) == RLELossless


def test_wado_to_stow_encodes_a_changed_instance_again(
    orthanc_a, orthanc_b, study_on_orthanc_a, local_config, monkeypatch
):
    # Fail closed: an instance changed after the fetch must not go out as the bytes it came as.
    from adit.core.dicom import dicomweb

    encoded = _counting(monkeypatch, dicomweb, "_encode_part10")
    study_uid = study_on_orthanc_a[0].StudyInstanceUID
    orthanc_b.delete_study(study_uid)
    source = DicomWebConnector(orthanc_a.server_config(), local_config)
    changed_uid = study_on_orthanc_a[0].SOPInstanceUID

    def changing(instances):
        for ds in instances:
            # uid_of reads without converting (reading ds.SOPInstanceUID counts as a change).
            if uid_of(ds, SOP_INSTANCE_UID) == changed_uid:
                ds.InstitutionName = "Changed After Fetch"
            yield ds

    DicomWebConnector(orthanc_b.server_config(), local_config).send_stow_rs(
        changing(source.iter_study(study_uid)), unchanged=True
    )

    assert len(encoded) == 1
    stored = orthanc_b.instance_file(changed_uid)
    assert b"Changed After Fetch" in stored
    assert len(orthanc_b.study_instance_uids(study_uid)) == len(study_on_orthanc_a)


def test_stow_posts_while_the_source_still_delivers(orthanc_b, local_config, monkeypatch):
    # Streamed both ways: the first batch is stored while later instances are still to come,
    # so a study is never held whole in memory.
    datasets = make_study(new_patient_id("PIPE"), series=(("CT", 8),), compressed_series=False)
    consumed = 0
    consumed_at_post: list[int] = []
    original = requests.Session.post

    def recording_post(self, *args, **kwargs):
        consumed_at_post.append(consumed)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "post", recording_post)

    def source():
        nonlocal consumed
        for index, ds in enumerate(datasets):
            if index == len(datasets) - 2:
                # A sender that waited for the whole study would never post: this fails.
                wait_until(lambda: consumed_at_post, 30, "a STOW-RS request before the end")
            consumed += 1
            yield ds

    result = DicomWebConnector(orthanc_b.server_config(), local_config).send_stow_rs(
        source(), batch_size=2
    )
    assert result.stored == 8
    assert len(consumed_at_post) == 4
    assert consumed_at_post[0] <= len(datasets) - 2
    held = orthanc_b.study_instance_uids(datasets[0].StudyInstanceUID)
    assert held == {ds.SOPInstanceUID for ds in datasets}


def test_stow_conflict_without_failed_sequence_is_an_error(scripted_http_server, local_config):
    _ScriptedHandler.status = 409
    config = _scripted_config(scripted_http_server, dicomweb_stow_support=True)
    datasets = make_study(new_patient_id("CF"), series=(("CT", 2),))
    with pytest.raises(RetriableDicomError, match="STOW-RS on Scripted.*HTTP 409"):
        DicomWebConnector(config, local_config).send_stow_rs(iter(datasets))


@pytest.mark.parametrize("version", ["ODD_NAME", "EVEN_NAME1"])
def test_file_meta_bytes_equal_what_pydicom_writes(version):
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID

    from adit.core.dicom.part10 import file_meta_bytes

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")  # even length
    meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5")  # odd length: padded with NUL
    meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.5")
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    if version:
        meta.ImplementationVersionName = version
    buffer = DicomBytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)

    assert (
        file_meta_bytes(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3.4.5",
            "1.2.840.10008.1.2.5",
            "1.2.826.0.1.3680043.8.498.1",
            version,
        )
        == buffer.getvalue()
    )


def test_file_meta_bytes_without_version_name_read_back():
    from io import BytesIO

    from pydicom.filereader import _read_file_meta_info, read_preamble

    from adit.core.dicom.part10 import file_meta_bytes

    fp = BytesIO(file_meta_bytes("1.2.3", "1.2.3.4", "1.2.840.10008.1.2.1", "1.2.3.4.5.6"))
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    assert (meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID) == ("1.2.3", "1.2.3.4")
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert meta.ImplementationClassUID == "1.2.3.4.5.6"
    assert "ImplementationVersionName" not in meta
