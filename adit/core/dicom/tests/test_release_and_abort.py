"""How associations end, and how messages are framed, spoken in raw PDUs at both sides of ADIT.

A peer built from pynetdicom's PDU classes (`adit.core.dicom.testing.raw_pdus`) plays a PACS
for `DimseConnector` (C-FIND, C-GET, C-STORE) or a pusher for the receiver, and checks what
PS3.8 asks of ADIT:

* A release collision (7.2.2, both sides send A-RELEASE-RQ): the operation still succeeds;
  ADIT, the association requestor, answers the peer's request with A-RELEASE-RP and then waits
  for the peer's A-RELEASE-RP before it closes the connection (states Sta9 → Sta11 → Sta1).
* An A-ABORT or A-RELEASE-RQ from the peer in the middle of an operation: the operation fails
  retriably with what arrived before kept, A-ABORT is never answered, A-RELEASE-RQ is answered
  with A-RELEASE-RP, and the connection is closed; at the receiver nothing of the interrupted
  instance is stored and the next association is served.
* Fragments: a command set in several PDVs of PDUs of their own, and several PDVs (a command
  and data fragments) in one PDU, are put together on both sides.

The receiver never sends A-RELEASE-RQ itself (its peers release), so a collision can only
happen on ADIT's requestor side.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from adit.core.dicom.config import LocalConfig, ServerConfig, Timeouts
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.file_transmit import FileTransmitClient, Topic
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.receiver import Receiver
from adit.core.dicom.testing import raw_pdus
from adit.core.dicom.testing.peers import LOOPBACK
from adit.core.dicom.testing.synthetic import make_study

LOCAL = LocalConfig(
    calling_ae_title="ADIT_RAW", timeouts=Timeouts(connection=5, acse=5, dimse=5, network=5)
)
PUSHER_AE = "RAW_PUSHER"
A_RELEASE_RQ, A_RELEASE_RP, A_ABORT, P_DATA_TF = 0x05, 0x06, 0x07, 0x04


def instances(patient_id: str, count: int = 2) -> list[Dataset]:
    study = make_study(patient_id, series=(("CT", count),), compressed_series=False)
    for ds in study:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return study


def connector(port: int) -> DimseConnector:
    server = ServerConfig(
        name="Raw PACS",
        ae_title="RAW_PACS",
        host=LOOPBACK,
        port=port,
        study_root_find_support=True,
        study_root_get_support=True,
        store_scp_support=True,
    )
    return DimseConnector(server, LOCAL)


def run(
    operation: str, dimse: DimseConnector, datasets: list[Dataset]
) -> tuple[list, DicomError | None]:
    """What the operation delivered (matches, instances or stored count) and the error it
    raised (None on success)."""
    delivered: list = []
    try:
        if operation == "C-FIND":
            query = QueryDataset.create(QueryRetrieveLevel="STUDY", PatientID=datasets[0].PatientID)
            for match in dimse.send_c_find(query):
                delivered.append(match)
        elif operation == "C-GET":
            study_uid = str(datasets[0].StudyInstanceUID)
            query = QueryDataset.create(QueryRetrieveLevel="STUDY", StudyInstanceUID=study_uid)
            for ds in dimse.send_c_get(query):
                delivered.append(ds)
        else:
            delivered.append(dimse.send_c_store(datasets).stored)
    except DicomError as error:
        return delivered, error
    return delivered, None


def read_to_the_end(sock: socket.socket) -> tuple[list[int], bool]:
    """The types of the PDUs ADIT sent until it closed the connection, and whether it did."""
    types = []
    try:
        while (pdu := raw_pdus.read_pdu(sock)) is not None:
            types.append(pdu[0])
    except ConnectionResetError:
        pass
    except TimeoutError:
        return types, False
    return types, True


# --- release collision (ADIT as association requestor) ----------------------------------------


@dataclass
class Collision:
    types: list[int]  # what ADIT sent after its A-ASSOCIATE-RQ, up to its A-RELEASE-RP
    closed_before_our_release_response: bool
    closed_after_it: bool


def colliding_pacs(operation: str, datasets: list[Dataset]) -> Callable[[socket.socket], Collision]:
    """A PACS that sends A-RELEASE-RQ right after its last answer, as ADIT sends its own."""

    def handler(sock: socket.socket) -> Collision:
        request = raw_pdus.read_pdu(sock)
        assert request is not None
        accept, messages = raw_pdus.pacs_answers(request, operation, datasets)
        sock.sendall(accept + b"".join(pdu for message in messages for pdu in message))
        sock.sendall(raw_pdus.release_rq())
        sent = raw_pdus.read_until(sock, A_RELEASE_RQ)  # ADIT's own request: the collision
        answer = raw_pdus.read_pdu(sock)  # ADIT answers ours (Sta9 → Sta11) ...
        sent += [answer] if answer else []
        # ... and waits for our A-RELEASE-RP (Sta11) instead of closing the connection.
        closed_early = raw_pdus.closed_within(sock, 0.5) is not False
        try:
            sock.sendall(raw_pdus.release_rp())  # as the acceptor in Sta12 answers
        except OSError:
            pass
        closed_after = closed_early or raw_pdus.closed_within(sock, 3) is True
        return Collision([pdu[0] for pdu in sent], closed_early, closed_after)

    return handler


@pytest.mark.parametrize("operation", ["C-FIND", "C-GET", "C-STORE"])
def test_a_release_collision_still_ends_the_operation_normally(operation):
    datasets = instances(f"COLLIDE-{operation}")
    with raw_pdus.raw_peer(colliding_pacs(operation, datasets)) as pacs:
        delivered, error = run(operation, connector(pacs.port), datasets)
        collision = pacs.result()

    assert error is None
    assert len(delivered) == 2 if operation != "C-STORE" else delivered == [2]
    # ADIT's request, then its answer to ours; never an A-ABORT.
    assert collision.types[-2:] == [A_RELEASE_RQ, A_RELEASE_RP], collision.types
    assert A_ABORT not in collision.types
    assert collision.closed_after_it


def test_in_a_release_collision_adit_waits_for_the_acceptors_release_response():
    datasets = instances("COLLIDE-WAIT")
    with raw_pdus.raw_peer(colliding_pacs("C-FIND", datasets)) as pacs:
        _, error = run("C-FIND", connector(pacs.port), datasets)
        collision = pacs.result()
    assert error is None
    assert not collision.closed_before_our_release_response
    assert collision.closed_after_it


# --- the peer aborts or releases in the middle of an operation (ADIT as requestor) -----------

# How many of the PACS's answer messages go out before it ends the association, and what ADIT
# must have delivered by then: one C-FIND match; one C-GET instance (its C-STORE sub-operation
# and the pending C-GET response); one stored instance of two.
CUTS = {"C-FIND": 1, "C-GET": 2, "C-STORE": 1}


def interrupting_pacs(
    operation: str, datasets: list[Dataset], ending: bytes
) -> Callable[[socket.socket], tuple[list[int], bool]]:
    def handler(sock: socket.socket) -> tuple[list[int], bool]:
        request = raw_pdus.read_pdu(sock)
        assert request is not None
        accept, messages = raw_pdus.pacs_answers(request, operation, datasets)
        before = messages[: CUTS[operation]]
        sock.sendall(accept + b"".join(pdu for message in before for pdu in message) + ending)
        return read_to_the_end(sock)

    return handler


@pytest.mark.parametrize("operation", ["C-FIND", "C-GET", "C-STORE"])
@pytest.mark.parametrize(
    "ending, words, answer",
    [
        (raw_pdus.abort(0, 0), "aborted", []),  # A-ABORT is never answered (PS3.8 7.3.1)
        (raw_pdus.release_rq(), "released", [A_RELEASE_RP]),
    ],
    ids=["A-ABORT", "A-RELEASE-RQ"],
)
def test_the_peer_ending_the_association_mid_operation_fails_it_retriably(
    operation, ending, words, answer
):
    datasets = instances(f"CUT-{operation}")
    with raw_pdus.raw_peer(interrupting_pacs(operation, datasets, ending)) as pacs:
        delivered, error = run(operation, connector(pacs.port), datasets)
        types, closed = pacs.result()

    assert isinstance(error, RetriableDicomError)
    assert words in str(error) and f"{operation} on Raw PACS" in str(error)
    if operation == "C-STORE":
        assert "after 1 instances" in str(error)
    else:  # what arrived before the end was delivered, nothing more
        assert len(delivered) == 1
    assert [t for t in types if t != P_DATA_TF] == answer, types
    assert closed


# --- the pusher aborts or releases in the middle of a C-STORE (ADIT's receiver) ---------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    instance = Receiver("RAW_RECV", 0, 0, tmp_path / "spool", {PUSHER_AE: None}, host=LOOPBACK)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def subscribe(receiver: Receiver, datasets: list[Dataset]):
    """A worker's subscription expecting `datasets` (the receiver takes only these)."""
    client = FileTransmitClient(LOOPBACK, receiver.transmit_port, connect_timeout=2)
    topic = Topic(PUSHER_AE, str(datasets[0].StudyInstanceUID))
    return client.subscribe(topic, [str(ds.SOPInstanceUID) for ds in datasets])


def store_pdus(ds: Dataset, message_id: int, context_id: int = 1) -> list[bytes]:
    return raw_pdus.dimse_pdus(
        "C_STORE_RQ",
        context_id,
        max_pdu=512,
        MessageID=message_id,
        AffectedSOPClassUID=CTImageStorage,
        AffectedSOPInstanceUID=str(ds.SOPInstanceUID),
        Priority=0,
        DataSet=raw_pdus.encoded(ds),
    )


def associate(receiver: Receiver) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, receiver.store_port), timeout=5)
    sock.sendall(
        raw_pdus.associate_rq(
            PUSHER_AE, receiver.ae_title, [raw_pdus.storage_context(CTImageStorage)]
        )
    )
    answer = raw_pdus.read_pdu(sock)
    assert answer is not None and answer[0] == 0x02, "the receiver did not accept"
    return sock


def push_with_pynetdicom(receiver: Receiver, ds: Dataset) -> int:
    from pynetdicom import AE

    ae = AE(ae_title=PUSHER_AE)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, receiver.store_port, ae_title=receiver.ae_title)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


@pytest.mark.parametrize(
    "ending, answer",
    [(raw_pdus.abort(0, 0), []), (raw_pdus.release_rq(), [A_RELEASE_RP])],
    ids=["A-ABORT", "A-RELEASE-RQ"],
)
def test_a_pusher_ending_the_association_mid_c_store_gets_nothing_stored(receiver, ending, answer):
    interrupted, whole = instances("CUT-PUSH")
    with subscribe(receiver, [interrupted, whole]) as subscription:
        store = store_pdus(interrupted, 1)
        assert len(store) >= 3, "the data set must span several PDUs"
        with associate(receiver) as sock:
            sock.sendall(b"".join(store[:2]) + ending)  # the command, half of the data set
            types, closed = read_to_the_end(sock)
        status = push_with_pynetdicom(receiver, whole)  # the next association is served
        delivered = subscription.receive(5)
        nothing_more = subscription.receive(0.5)

    assert types == answer and closed
    assert status == 0x0000
    assert delivered is not None and delivered.sop_instance_uid == whole.SOPInstanceUID
    assert nothing_more is None


# --- several PDVs per PDU and fragmented command sets ------------------------------------------


def test_the_receiver_puts_fragmented_command_sets_and_several_pdvs_per_pdu_together(receiver):
    first, second = instances("FRAGMENTS-PUSH")
    with subscribe(receiver, [first, second]) as subscription:
        with associate(receiver) as sock:
            # The command in three PDUs, then all data fragments as PDVs of one PDU; then a
            # whole message, command and data, in one PDU.
            sock.sendall(b"".join(raw_pdus.reframed(store_pdus(first, 1))))
            first_answer = raw_pdus.read_message(sock)
            sock.sendall(raw_pdus.merged(store_pdus(second, 2)))
            second_answer = raw_pdus.read_message(sock)
            sock.sendall(raw_pdus.release_rq())
            types, closed = read_to_the_end(sock)
        received = [subscription.receive(5) for _ in range(2)]

    assert raw_pdus.status_of(first_answer) == 0x0000
    assert raw_pdus.status_of(second_answer) == 0x0000
    assert types == [A_RELEASE_RP] and closed
    by_uid = {file.sop_instance_uid: file.dataset() for file in received if file}
    for original in (first, second):
        assert by_uid[str(original.SOPInstanceUID)].PixelData == original.PixelData


@pytest.mark.parametrize("operation", ["C-FIND", "C-GET"])
def test_the_requestor_puts_fragmented_command_sets_and_several_pdvs_per_pdu_together(
    operation,
):
    datasets = instances(f"FRAGMENTS-{operation}")

    def handler(sock: socket.socket) -> tuple[list[int], bool]:
        request = raw_pdus.read_pdu(sock)
        assert request is not None
        accept, messages = raw_pdus.pacs_answers(request, operation, datasets)
        # Every answer: its command set in three PDUs, its data fragments in one PDU.
        reframed = [pdu for message in messages for pdu in raw_pdus.reframed(message)]
        sock.sendall(accept + b"".join(reframed) + raw_pdus.release_rp())
        return read_to_the_end(sock)

    with raw_pdus.raw_peer(handler) as pacs:
        delivered, error = run(operation, connector(pacs.port), datasets)
        types, closed = pacs.result()

    assert error is None
    assert len(delivered) == 2
    if operation == "C-GET":
        by_uid = {str(ds.SOPInstanceUID): ds for ds in delivered}
        for original in datasets:
            assert by_uid[str(original.SOPInstanceUID)].PixelData == original.PixelData
    else:
        assert {str(m.dataset.StudyInstanceUID) for m in delivered} == {
            str(datasets[0].StudyInstanceUID)
        }
    assert [t for t in types if t != P_DATA_TF] == [A_RELEASE_RQ] and closed
