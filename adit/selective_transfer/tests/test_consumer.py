"""The live query over the WebSocket (the consumer, driven by Channels' WebsocketCommunicator)."""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pydicom
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.test import Client, override_settings
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # pyright: ignore[reportAttributeAccessIssue]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from adit.core.dicom.testing.peers import free_port
from adit.core.dicom.testing.synthetic import make_study
from adit.core.factories import DicomServerFactory
from adit.core.statuses import Status
from adit.core.testing.workers import run_worker_burst
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


async def test_a_failure_while_streaming_is_reported_not_swallowed(
    researcher, slow_scp, slow_node, monkeypatch
):
    """Whatever breaks on the server side ends the query with an error the client shows."""

    def broken_download_url(*args, **kwargs):
        raise RuntimeError("a value the page cannot show")

    monkeypatch.setattr("adit.selective_transfer.consumers.download_url", broken_download_url)
    slow_scp.delay = 0.01
    communicator = await connect(researcher)
    await communicator.send_json_to(
        {"action": "query", "source": slow_node.pk, "patient_id": "SLOW"}
    )
    messages = await receive_until(communicator, "done", "error")
    assert messages[-1]["type"] == "error"
    assert "failed unexpectedly" in messages[-1]["html"]
    # The PACS is told to stop, and the connection still serves the next message.
    assert await database_sync_to_async(slow_scp.aborted.wait)(5)
    await communicator.send_json_to({"action": "cancel"})
    assert (await receive(communicator))["type"] == "canceled"
    await communicator.disconnect()


@pytest.mark.peers
async def test_patient_ids_with_any_character_stream_download_and_transfer(
    researcher, researchers, orthanc_a, orthanc_b
):
    """PatientIDs with "/", "%", "#" and "?" (all legal in DICOM) from a real Orthanc."""
    from .conftest import server_from_orthanc

    def setup():
        source = server_from_orthanc(orthanc_a, "Orthanc A")
        destination = server_from_orthanc(orthanc_b, "Orthanc B")
        give_access(researchers, source, source=True, destination=False)
        give_access(researchers, destination, source=False, destination=True)
        return source, destination

    source, destination = await database_sync_to_async(setup)()
    tag = "ANY" + make_study("x")[0].StudyInstanceUID[-8:]
    patient_ids = [f"{tag}a/b", f"{tag}a%b", f"{tag}a#b", f"{tag}a?b"]
    studies = {}
    for patient_id in patient_ids:
        datasets = make_study(patient_id, series=(("CT", 2),), compressed_series=False)
        await database_sync_to_async(orthanc_a.upload)(datasets)
        studies[patient_id] = str(datasets[0].StudyInstanceUID)
    pseudonym = f"PSN-{tag}"

    # 1. The live query streams every study, each with a download link.
    communicator = await connect(researcher)
    await communicator.send_json_to(
        {"action": "query", "source": source.pk, "patient_id": f"{tag}*", "pseudonym": pseudonym}
    )
    messages = await receive_until(communicator, "done", "error", timeout=60)
    assert messages[-1]["type"] == "done", messages[-1]
    rows_html = "".join(m["html"] for m in messages if m["type"] == "rows")
    keys = [
        html.unescape(k) for k in re.findall(r'name="selected_studies" value="([^"]*)"', rows_html)
    ]
    assert sorted(keys) == sorted(f"{pid}\\{uid}" for pid, uid in studies.items())
    links = [html.unescape(u) for u in re.findall(r'href="([^"]*)"', rows_html)]
    assert len(links) == len(patient_ids)

    # 2. Every link downloads its study (pseudonymized).
    client = Client()
    await database_sync_to_async(client.force_login)(researcher)
    for link in links:
        params = parse_qs(urlsplit(link).query)
        (patient_id,) = params["patient_id"]
        response = await database_sync_to_async(client.get)(link)
        assert response.status_code == 200, (patient_id, response.content[:300])
        content = await database_sync_to_async(lambda r=response: b"".join(r))()
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = archive.namelist()
            assert len(names) == 2, (patient_id, names)
            ds = pydicom.dcmread(io.BytesIO(archive.read(names[0])))
            assert ds.PatientID == pseudonym

    # 3. Transferring all of them creates a job that a real worker carries out.
    await communicator.send_json_to(
        {
            "action": "transfer",
            "source": source.pk,
            "destination": destination.pk,
            "patient_id": f"{tag}*",
            "pseudonym": pseudonym,
            "selected_studies": keys,
        }
    )
    form = await receive(communicator, timeout=30)
    assert form["type"] == "form" and "invalid-feedback" not in form["html"], form["html"]
    job_message = await receive(communicator, timeout=30)
    assert job_message["type"] == "job", job_message
    await communicator.disconnect()

    result = await asyncio.to_thread(run_worker_burst, "dicom", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    job = await database_sync_to_async(SelectiveTransferJob.objects.get)()
    tasks = await database_sync_to_async(
        lambda: sorted(job.tasks.values_list("patient_id", "status"))
    )()
    assert tasks == sorted((pid, Status.SUCCESS) for pid in patient_ids), tasks
    arrived = orthanc_b.rest(
        "POST",
        "/tools/find",
        json={"Level": "Study", "Query": {"PatientID": pseudonym}},
    ).json()
    assert len(arrived) == len(patient_ids)
