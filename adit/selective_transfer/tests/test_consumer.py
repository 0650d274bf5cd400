"""The live query over the WebSocket (the consumer, driven by Channels' WebsocketCommunicator)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.test import override_settings
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # pyright: ignore[reportAttributeAccessIssue]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from adit.core.dicom.testing.peers import free_port
from adit.core.dicom.testing.synthetic import make_study
from adit.core.factories import DicomServerFactory
from adit.selective_transfer.consumers import SelectiveTransferConsumer
from adit.selective_transfer.models import SelectiveTransferJob

from .conftest import give_access

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

PATH = "/ws/selective-transfer/"


class SlowFindScp:
    """A real C-FIND SCP (pynetdicom) that answers one study every `delay` seconds."""

    def __init__(self, total: int = 50, delay: float = 0.2) -> None:
        self.total, self.delay = total, delay
        self.sent = 0
        self.aborted = threading.Event()
        self.port = free_port()
        ae = AE(ae_title="SLOWSCP")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_C_FIND, self._find),
                (evt.EVT_ABORTED, lambda event: self.aborted.set()),
                (evt.EVT_CONN_OPEN, _no_delay),
            ],
        )

    def _find(self, event) -> Iterator:
        for n in range(self.total):
            if event.assoc.is_aborted or event.is_cancelled:
                return
            time.sleep(self.delay)
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.PatientID = "SLOW"
            ds.PatientName = "Slow^Patient"
            ds.StudyInstanceUID = f"1.2.826.0.1.3680043.9.7.{n + 1}"
            ds.StudyDate = f"2024{(n % 12) + 1:02d}01"
            ds.StudyTime = "101500"
            ds.ModalitiesInStudy = "CT"
            ds.StudyDescription = f"Slow study {n + 1}"
            self.sent += 1
            yield 0xFF00, ds

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def _no_delay(event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@pytest.fixture
def slow_scp():
    scp = SlowFindScp()
    yield scp
    scp.stop()


@pytest.fixture
def slow_node(slow_scp, researchers):
    server = DicomServerFactory(name="Slow PACS", ae_title="SLOWSCP", port=slow_scp.port)
    give_access(researchers, server)
    return server


async def connect(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(SelectiveTransferConsumer.as_asgi(), PATH)
    communicator.scope["user"] = user  # pyright: ignore[reportGeneralTypeIssues]
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive(communicator, timeout: float = 10) -> dict:
    return json.loads(await communicator.receive_from(timeout=timeout))


async def receive_until(communicator, *types: str, timeout: float = 20) -> list[dict]:
    """Messages up to and including the first of one of `types`."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        message = await receive(communicator, timeout=max(deadline - time.monotonic(), 0.1))
        messages.append(message)
        if message["type"] in types:
            return messages


def count_rows(messages: list[dict]) -> int:
    return sum(m["html"].count("<tr ") for m in messages if m["type"] == "rows")


async def test_unauthenticated_connection_is_closed_with_4401():
    communicator = WebsocketCommunicator(SelectiveTransferConsumer.as_asgi(), PATH)
    communicator.scope["user"] = AnonymousUser()  # pyright: ignore[reportGeneralTypeIssues]
    await communicator.connect()
    assert await communicator.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 4401,
    }


async def test_permission_is_checked_on_every_message(researcher, researchers, slow_node):
    communicator = await connect(researcher)
    await communicator.send_json_to({"action": "cancel"})
    assert (await receive(communicator))["type"] == "canceled"

    # Revoked while connected: the next message is refused.
    await database_sync_to_async(researchers.permissions.clear)()
    await communicator.send_json_to(
        {"action": "query", "source": slow_node.pk, "patient_id": "SLOW"}
    )
    message = await receive(communicator)
    assert message["type"] == "error"
    assert "may not use selective transfer" in message["html"]
    await communicator.disconnect()


async def test_node_of_another_group_is_refused(researcher, slow_scp):
    foreign = await database_sync_to_async(DicomServerFactory)(port=slow_scp.port)
    communicator = await connect(researcher)
    await communicator.send_json_to({"action": "query", "source": foreign.pk, "patient_id": "X"})
    message = await receive(communicator)
    assert message["type"] == "form"
    assert "unknown or your active group may not use it as source" in message["html"]
    assert await communicator.receive_nothing(timeout=0.5)
    assert slow_scp.sent == 0
    await communicator.disconnect()


async def test_bad_input_comes_back_as_form_errors(researcher, slow_node):
    communicator = await connect(researcher)
    await communicator.send_json_to(
        {"action": "query", "source": slow_node.pk, "study_date": "2024-13-01", "study_uid": "1.*"}
    )
    message = await receive(communicator)
    assert message["type"] == "form"
    assert "does not exist in the calendar" in message["html"]
    assert "Wildcards (* or ?) are not allowed here." in message["html"]
    # A malformed message is answered, not a crash.
    await communicator.send_to(text_data="not json")
    assert (await receive(communicator))["type"] == "error"
    await communicator.disconnect()


async def test_cancel_aborts_the_running_query_at_the_pacs(researcher, slow_scp, slow_node):
    communicator = await connect(researcher)
    await communicator.send_json_to(
        {"action": "query", "source": slow_node.pk, "patient_id": "SLOW"}
    )
    messages = await receive_until(communicator, "rows")
    assert [m["type"] for m in messages][:2] == ["form", "started"]
    assert "Cancel" in messages[1]["html"]
    assert "Slow study" in messages[-1]["html"]

    await communicator.send_json_to({"action": "cancel"})
    cancel_messages = await receive_until(communicator, "canceled")
    assert "The query was canceled." in cancel_messages[-1]["html"]

    # The association was aborted at the PACS and no further results arrive.
    assert await database_sync_to_async(slow_scp.aborted.wait)(5)
    assert await communicator.receive_nothing(timeout=1.0)
    assert slow_scp.sent < slow_scp.total / 2
    await communicator.disconnect()


async def test_new_query_replaces_the_running_one(researcher, slow_scp, slow_node, orthanc_a):
    from .conftest import server_from_orthanc

    node_a = await database_sync_to_async(server_from_orthanc)(orthanc_a, "Orthanc A")
    researchers = await database_sync_to_async(lambda: researcher.active_group)()
    await database_sync_to_async(give_access)(researchers, node_a)
    study = make_study("ST-WS-NEW-" + make_study("x")[0].StudyInstanceUID[-8:])
    await database_sync_to_async(orthanc_a.upload)(study)

    communicator = await connect(researcher)
    await communicator.send_json_to(
        {"action": "query", "source": slow_node.pk, "patient_id": "SLOW"}
    )
    await receive_until(communicator, "rows")
    await communicator.send_json_to(
        {"action": "query", "source": node_a.pk, "patient_id": study[0].PatientID}
    )
    messages = await receive_until(communicator, "done")
    rows_html = "".join(m["html"] for m in messages if m["type"] == "rows")
    assert study[0].StudyInstanceUID in rows_html
    assert "Slow study" not in rows_html
    assert await database_sync_to_async(slow_scp.aborted.wait)(5)
    await communicator.disconnect()


@pytest.mark.peers
@override_settings(SELECTIVE_TRANSFER_RESULT_LIMIT=3)
async def test_results_stop_at_the_limit_with_a_hint(researcher, slow_scp, slow_node):
    slow_scp.delay = 0.01
    communicator = await connect(researcher)
    await communicator.send_json_to(
        {"action": "query", "source": slow_node.pk, "patient_id": "SLOW"}
    )
    messages = await receive_until(communicator, "done", "error")
    assert messages[-1]["type"] == "done"
    assert count_rows(messages) == 3
    assert "More than 3 studies match" in messages[-1]["html"]
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_unreachable_server_is_reported_readably(researcher, researchers):
    dead = await database_sync_to_async(DicomServerFactory)(name="Dead PACS", port=free_port())
    await database_sync_to_async(give_access)(researchers, dead)
    communicator = await connect(researcher)
    await communicator.send_json_to({"action": "query", "source": dead.pk, "patient_id": "P1"})
    messages = await receive_until(communicator, "error", "done", timeout=30)
    assert messages[-1]["type"] == "error"
    assert "The server did not answer the query" in messages[-1]["html"]
    await communicator.disconnect()


async def test_transfer_creates_and_queues_a_job(researcher, slow_node):
    communicator = await connect(researcher)
    selected = ["SLOW\\1.2.826.0.1.3680043.9.7.1", "SLOW\\1.2.826.0.1.3680043.9.7.2"]
    await communicator.send_json_to(
        {
            "action": "transfer",
            "source": slow_node.pk,
            "destination": slow_node.pk,
            "patient_id": "SLOW",
            "pseudonym": "PSEUDO",
            "selected_studies": selected,
        }
    )
    messages = await receive_until(communicator, "job")
    job = await database_sync_to_async(SelectiveTransferJob.objects.get)()
    assert messages[-1]["url"] == f"/selective-transfer/jobs/{job.pk}/"
    assert "Follow its progress" in messages[-1]["html"]
    tasks = await database_sync_to_async(
        lambda: list(job.tasks.values_list("study_uid", "pseudonym"))
    )()
    assert sorted(tasks) == [(s.split("\\")[1], "PSEUDO") for s in selected]
    await communicator.disconnect()
