"""Every item of the bad-input corpus through every entry point it applies to.

The entry points are the real ones: HTTP requests to a real daphne serving ADIT (batch
uploads of batch query and batch transfer, the jobs REST API, DICOMweb QIDO-RS and STOW-RS
with a real Orthanc behind it), the selective transfer live query over its WebSocket consumer
(Channels' communicator), and C-STORE to ADIT's real receiver. For each (item, entry point):

- the answer is a refusal (HTTP 4xx, a form error that stops the query, a DICOM failure
  status) whose text names the problem (one of the item's `words`), never a 5xx;
- nothing is stored: no job or task rows, no instance in Orthanc, no spooled file and nothing
  delivered to a subscriber;
- the process is still healthy afterwards (/health/ answers and daphne runs; the consumer
  answers the next message; the receiver answers a C-ECHO).

A valid input goes through each entry point as a control (`test_a_valid_input_is_accepted`),
so a refusal here is the item's doing and not a broken harness. The count of cases is printed
at the end of the session (`conftest.py` of this folder).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification  # pyright: ignore[reportAttributeAccessIssue]

from adit.batch_query.models import BatchQueryJob, BatchQueryTask
from adit.batch_transfer.models import BatchTransferJob, BatchTransferTask
from adit.core.dicom.config import Timeouts
from adit.core.dicom.file_transmit import FileTransmitClient, Topic
from adit.core.dicom.net import association, commands
from adit.core.dicom.receiver import Receiver
from adit.core.dicom.testing.peers import LOOPBACK, free_port
from adit.core.models import DicomServer
from adit.core.testing.sheets import csv_data
from adit.dicom_web.testing import ApiUser, LiveServer, grant_access, make_api_user
from adit.dicom_web.tests.helpers import orthanc_server
from adit.selective_transfer.consumers import SelectiveTransferConsumer
from adit.selective_transfer.models import SelectiveTransferJob, SelectiveTransferTask

from .bad_inputs import CORPUS, BadInput, Kind, base_instance, part10, split_part10

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

PERMISSIONS = (
    "batch_query.add_batchqueryjob",
    "batch_transfer.add_batchtransferjob",
    "batch_transfer.can_transfer_unpseudonymized",
    "selective_transfer.add_selectivetransferjob",
    "selective_transfer.can_transfer_unpseudonymized",
    "dicom_web.can_query",
    "dicom_web.can_store",
    "dicom_explorer.use_explorer",
)
SCU_AE = "BADINPUT_SCU"
STUDY_UID = "1.2.826.0.1.3680043.8.498.77"

ENTRY_POINTS: dict[str, frozenset[Kind]] = {
    "batch_query_upload": frozenset({Kind.SPREADSHEET, Kind.STRING, Kind.FORM_BODY}),
    "batch_transfer_upload": frozenset({Kind.SPREADSHEET, Kind.STRING, Kind.FORM_BODY}),
    "api_transfer": frozenset({Kind.STRING}),
    "api_batch_query": frozenset({Kind.STRING, Kind.FORM_BODY}),
    "qido": frozenset({Kind.STRING}),
    "websocket_query": frozenset({Kind.STRING}),
    "explorer_search": frozenset({Kind.STRING}),
    "explorer_patient": frozenset({Kind.STRING}),
    "stow": frozenset({Kind.DICOM, Kind.MULTIPART}),
    "receiver": frozenset({Kind.DICOM}),
}

CASES = [
    (item, entry_point)
    for item in CORPUS
    for entry_point, kinds in ENTRY_POINTS.items()
    if item.kind in kinds and entry_point not in item.skip
]


@dataclasses.dataclass
class World:
    """A user allowed everything the entry points need, with Orthanc as source/destination."""

    live: LiveServer
    api_user: ApiUser
    server: DicomServer
    http: requests.Session
    csrf_token: str
    orthanc: object

    def csrf(self, path: str) -> str:
        page = self.http.get(f"{self.live.url}{path}", timeout=30)
        assert page.status_code == 200, page.text[:500]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None
        return token.group(1)


@pytest.fixture
def world(live_adit, orthanc_a) -> World:
    api_user = make_api_user(permissions=PERMISSIONS)
    server = orthanc_server(orthanc_a, "dimse")
    grant_access(api_user.group, server)
    client = Client()
    client.force_login(api_user.user)
    http = requests.Session()
    http.cookies.set("sessionid", client.cookies["sessionid"].value)
    world = World(live_adit, api_user, server, http, "", orthanc_a)
    return world


def stored_rows() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (
            BatchQueryJob,
            BatchQueryTask,
            BatchTransferJob,
            BatchTransferTask,
            SelectiveTransferJob,
            SelectiveTransferTask,
        )
    }


def orthanc_instances(orthanc) -> int:
    return orthanc.rest("GET", "/statistics").json()["CountInstances"]


@dataclasses.dataclass
class Answer:
    refused: bool
    status: object
    text: str


# --- HTTP entry points ------------------------------------------------------------------------


def _spreadsheet(item: BadInput, entry_point: str) -> tuple[str, bytes]:
    """The item as the batch file of `entry_point`."""
    if entry_point == "batch_query_upload":
        header = ["PatientID", "Modality"]
    else:
        header = ["PatientID", "StudyInstanceUID", "Pseudonym"]
    if item.kind is Kind.SPREADSHEET:
        name, data = item.make(header)  # type: ignore[misc]
        return name, data
    value = item.make()
    row = [value, "CT"] if entry_point == "batch_query_upload" else [value, STUDY_UID, "PSN1"]
    return "batch.csv", csv_data([header, row])


def batch_upload(world: World, item: BadInput, entry_point: str) -> Answer:
    path = "/batch-query/" if entry_point == "batch_query_upload" else "/batch-transfer/"
    if item.kind is Kind.FORM_BODY:
        content_type, body = item.make()  # type: ignore[misc]
        token = world.csrf(path)  # also sets the csrftoken cookie
        response = world.http.post(
            f"{world.live.url}{path}",
            data=body,
            headers={"Content-Type": content_type, "X-CSRFToken": token},
            timeout=120,
            allow_redirects=False,
        )
        return Answer(400 <= response.status_code < 500, response.status_code, response.text)
    fields = {
        "csrfmiddlewaretoken": world.csrf(path),
        "source": world.server.pk,
        "project_name": "Bad input",
        "project_description": item.name,
    }
    if entry_point == "batch_transfer_upload":
        fields |= {"destination": world.server.pk, "ethics_application_id": "EK-1"}
    name, data = _spreadsheet(item, entry_point)
    response = world.http.post(
        f"{world.live.url}{path}",
        data=fields,
        files={"batch_file": (name, data)},
        timeout=120,
        allow_redirects=False,
    )
    return Answer(400 <= response.status_code < 500, response.status_code, response.text)


def api_job(world: World, item: BadInput, entry_point: str) -> Answer:
    if item.kind is Kind.FORM_BODY:
        content_type, body = item.make()  # type: ignore[misc]
        response = requests.post(
            f"{world.live.url}/api/batch-query-jobs/",
            data=body,
            headers={**world.api_user.headers, "Content-Type": content_type},
            timeout=60,
        )
        return Answer(400 <= response.status_code < 500, response.status_code, response.text)
    value = item.make()
    if entry_point == "api_transfer":
        url = "/api/transfer-jobs/"
        payload: dict = {
            "source": world.server.ae_title,
            "destination": world.server.ae_title,
            "studies": [{"study_uid": STUDY_UID, "patient_id": value}],
        }
    else:
        url = "/api/batch-query-jobs/"
        payload = {
            "source": world.server.ae_title,
            "project_name": "Bad input",
            "project_description": item.name,
            "queries": [{"PatientID": value, "Modality": "CT"}],
        }
    response = requests.post(
        f"{world.live.url}{url}", json=payload, headers=world.api_user.headers, timeout=60
    )
    return Answer(400 <= response.status_code < 500, response.status_code, response.text)


def qido(world: World, item: BadInput, entry_point: str) -> Answer:
    response = requests.get(
        f"{world.live.url}/api/dicom-web/{world.server.ae_title}/qidors/studies",
        params={"PatientID": str(item.make())},
        headers=world.api_user.headers,
        timeout=60,
    )
    return Answer(400 <= response.status_code < 500, response.status_code, response.text)


def stow(world: World, item: BadInput, entry_point: str) -> Answer:
    if item.kind is Kind.MULTIPART:
        content_type, body = item.make()  # type: ignore[misc]
    else:
        payload = item.make()
        assert isinstance(payload, bytes)
        content_type = 'multipart/related; type="application/dicom"; boundary=bnd'
        body = b"--bnd\r\nContent-Type: application/dicom\r\n\r\n" + payload + b"\r\n--bnd--\r\n"
    response = requests.post(
        f"{world.live.url}/api/dicom-web/{world.server.ae_title}/stowrs/studies",
        data=body,
        headers={**world.api_user.headers, "Content-Type": content_type},
        timeout=120,
    )
    return Answer(400 <= response.status_code < 500, response.status_code, response.text)


def explorer(world: World, item: BadInput, entry_point: str) -> Answer:
    """The DICOM explorer's search (wildcards allowed) and patient page (an exact PatientID)."""
    path = "" if entry_point == "explorer_search" else "patient/"
    response = world.http.get(
        f"{world.live.url}/explorer/servers/{world.server.pk}/{path}",
        params={"patient_id": str(item.make())},
        timeout=60,
    )
    return Answer(400 <= response.status_code < 500, response.status_code, response.text)


# --- the WebSocket live query -----------------------------------------------------------------


def websocket_query(world: World, item: BadInput, entry_point: str) -> Answer:
    async def run() -> Answer:
        communicator = WebsocketCommunicator(
            SelectiveTransferConsumer.as_asgi(), "/ws/selective-transfer/"
        )
        communicator.scope["user"] = world.api_user.user  # pyright: ignore[reportGeneralTypeIssues]
        connected, _ = await communicator.connect()
        assert connected
        try:
            await communicator.send_json_to(
                {"action": "query", "source": world.server.pk, "patient_id": item.make()}
            )
            message = json.loads(await communicator.receive_from(timeout=20))
            # A refused query ends with the form (and its errors): no "started", no rows.
            refused = message["type"] == "form" and await communicator.receive_nothing(1)
            # Still healthy: the consumer answers the next message.
            await communicator.send_json_to({"action": "cancel"})
            while (after := json.loads(await communicator.receive_from(timeout=20)))[
                "type"
            ] != "canceled":
                assert after["type"] in ("started", "rows", "done"), after
            return Answer(bool(refused), message["type"], message.get("html", ""))
        finally:
            await communicator.disconnect()

    return async_to_sync(run)()


# --- the receiver ---------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    port = free_port()
    instance = Receiver(f"RECV{port}", port, 0, tmp_path / "spool", lambda: {SCU_AE}, host=LOOPBACK)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def _association(receiver: Receiver, transfer_syntax: str, sop_class: str):
    return association.Association.request(
        LOOPBACK,
        receiver.store_port,
        calling_ae_title=SCU_AE,
        called_ae_title=receiver.ae_title,
        contexts=[build_context(sop_class, transfer_syntax)],
        timeouts=Timeouts(connection=5, acse=10, dimse=60, network=60),
    )


def c_store(receiver: Receiver, data: bytes) -> tuple[int, list]:
    """C-STORE of the data set in `data` (a Part-10 file, or taken as a bare data set) while a
    subscription expects the corpus's base instance; (status, files delivered)."""
    base = base_instance()
    try:
        head, dataset = split_part10(data)
        fp = io.BytesIO(head)
        read_preamble(fp, False)
        transfer_syntax = str(_read_file_meta_info(fp).TransferSyntaxUID)
    except Exception:  # noqa: BLE001 — not a Part-10 file: the bytes are the data set
        dataset, transfer_syntax = data, ExplicitVRLittleEndian
    if transfer_syntax not in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        transfer_syntax = ExplicitVRLittleEndian
    topic = Topic(SCU_AE, str(base.StudyInstanceUID))
    client = FileTransmitClient(LOOPBACK, receiver.transmit_port, connect_timeout=2)
    with client.subscribe(topic, [str(base.SOPInstanceUID)]) as subscription:
        assoc = _association(receiver, transfer_syntax, str(base.SOPClassUID))
        try:
            context = assoc.context_for(str(base.SOPClassUID), transfer_syntax)
            assert context is not None
            assoc.send_message(
                context.context_id,
                commands.c_store_rq(1, str(base.SOPClassUID), str(base.SOPInstanceUID)),
                dataset,
            )
            status = assoc.receive_message().status
        finally:
            assoc.release()
        delivered = []
        while (received := subscription.receive(0.5)) is not None:
            delivered.append(received)
    return status, delivered


def c_echo(receiver: Receiver) -> int:
    """The receiver is still healthy: it answers a C-ECHO (pynetdicom as the peer)."""
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, receiver.store_port, ae_title=receiver.ae_title)
    try:
        assert assoc.is_established
        status = assoc.send_c_echo()
        assert status is not None
        return int(status.Status)
    finally:
        assoc.release()


def spooled(receiver: Receiver) -> list[Path]:
    return sorted((receiver.spool_dir / "files").glob("*.dcm"))


# --- the harness ----------------------------------------------------------------------------

HTTP_ENTRY_POINTS: dict[str, Callable[[World, BadInput, str], Answer]] = {
    "batch_query_upload": batch_upload,
    "batch_transfer_upload": batch_upload,
    "api_transfer": api_job,
    "api_batch_query": api_job,
    "qido": qido,
    "stow": stow,
    "websocket_query": websocket_query,
    "explorer_search": explorer,
    "explorer_patient": explorer,
}


def _names_the_problem(item: BadInput, text: str) -> bool:
    return any(word.lower() in text.lower() for word in item.words)


@pytest.mark.parametrize(
    ("item", "entry_point"), CASES, ids=[f"{ep}-{item.name}" for item, ep in CASES]
)
def test_bad_input_is_refused_naming_the_problem(item: BadInput, entry_point: str, request):
    if entry_point == "receiver":
        _through_the_receiver(item, request.getfixturevalue("receiver"))
        return
    world: World = request.getfixturevalue("world")
    rows_before = stored_rows()
    instances_before = orthanc_instances(world.orthanc)
    answer = HTTP_ENTRY_POINTS[entry_point](world, item, entry_point)
    assert answer.refused, (answer.status, answer.text[:2000])
    assert _names_the_problem(item, answer.text), (item.words, answer.text[:3000])
    assert stored_rows() == rows_before
    assert orthanc_instances(world.orthanc) == instances_before
    assert world.live.process.poll() is None, world.live.log_tail()
    assert requests.get(f"{world.live.url}/health/", timeout=10).status_code == 200


def _through_the_receiver(item: BadInput, receiver: Receiver) -> None:
    data = item.make()
    assert isinstance(data, bytes)
    status, delivered = c_store(receiver, data)
    assert status & 0xF000 in (0xA000, 0xC000), f"{status:#06x}"  # a failure status
    # The receiver names the problem in its status: 0xC210 "cannot understand".
    assert _names_the_problem(item, f"{status:#06X}"), f"{status:#06x}"
    assert delivered == []
    assert spooled(receiver) == []
    assert c_echo(receiver) == 0x0000


# --- controls: a valid input passes every entry point ----------------------------------------


def test_a_valid_input_is_accepted(request, receiver):
    world: World = request.getfixturevalue("world")
    good = BadInput("valid", Kind.STRING, lambda: "PAT-0001", ())
    response_query = batch_upload(world, good, "batch_query_upload")
    assert response_query.status == 302, response_query.text[:2000]
    assert api_job(world, good, "api_batch_query").status == 201
    answer = qido(world, good, "qido")
    assert answer.status == 200, answer.text
    for entry_point in ("explorer_search", "explorer_patient"):
        answer = explorer(world, good, entry_point)
        assert answer.status == 200 and "did not answer" not in answer.text, answer.text[:2000]
    answer = websocket_query(world, good, "websocket_query")
    assert answer.status == "form" and not answer.refused
    valid = BadInput("valid-dicom", Kind.DICOM, lambda: part10(base_instance()), ())
    assert stow(world, valid, "stow").status == 200
    status, delivered = c_store(receiver, part10(base_instance()))
    assert status == 0x0000 and len(delivered) == 1
    BatchQueryJob.objects.all().delete()
