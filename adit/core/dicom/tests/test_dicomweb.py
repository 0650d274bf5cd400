"""DICOMweb connector against Orthanc's DICOMweb plugin (and a tiny HTTP peer for errors)."""

import http.server
import threading

import pytest
import requests
from pydicom.uid import RLELossless

from adit.core.dicom.config import ServerConfig
from adit.core.dicom.dicomweb import DicomWebConnector
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing.synthetic import make_study

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
