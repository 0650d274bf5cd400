"""C-CANCEL (PS3.7 9.3.3.2.1 for C-GET, 9.3.4.2.1 for C-MOVE): ADIT asks a PACS to stop a
retrieve it no longer wants, instead of dropping the association.

* C-GET, spoken in raw PDUs: the consumer takes one instance and stops. ADIT sends C-CANCEL-RQ
  for the C-GET's Message ID, refuses (A700) the sub-operation already on its way, reads the
  PACS's final response (Cancel, FE00) and releases the association (no A-ABORT).
* C-MOVE, against a real Orthanc moving a study to another Orthanc: `cancel_moves()` from
  another thread stops the move part-way; the C-MOVE call returns with fewer sub-operations
  completed than the study has, and the destination holds fewer instances.
"""

from __future__ import annotations

import socket
import threading

from adit.core.dicom.config import LocalConfig, ServerConfig, Timeouts
from adit.core.dicom.dimse import DimseConnector, RetrieveResult
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing import raw_pdus
from adit.core.dicom.testing.peers import LOOPBACK
from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing import wait_until

from .conftest import new_patient_id

A_ABORT, A_RELEASE_RQ, P_DATA_TF = 0x07, 0x05, 0x04
C_STORE_RSP, C_CANCEL_RQ = 0x8001, 0x0FFF


def command_field(message: list[bytes]) -> int | None:
    value = raw_pdus.command_value(message, 0x0100)
    return None if value is None else int.from_bytes(value[:2], "little")


def test_a_c_get_the_consumer_stops_is_cancelled_and_released():
    study = make_study("CANCEL-GET", series=(("CT", 4),), compressed_series=False)

    def pacs(sock: socket.socket) -> dict:
        request = raw_pdus.read_pdu(sock)
        assert request is not None
        accept, messages = raw_pdus.pacs_answers(request, "C-GET", study)
        sock.sendall(accept)
        get_rq = raw_pdus.read_message(sock)
        get_context = get_rq[0][10]  # the first PDV's presentation context ID
        # Sub-operation 1, its pending response and sub-operation 2 are on their way at once.
        sock.sendall(b"".join(pdu for message in messages[:3] for pdu in message))
        seen: list[tuple[int | None, int | None]] = []
        while True:
            message = raw_pdus.read_message(sock)
            if not message or message[0][0] != P_DATA_TF:
                raise AssertionError(f"ADIT ended the association early: {message}")
            seen.append((command_field(message), raw_pdus.status_of(message)))
            if command_field(message) == C_CANCEL_RQ:
                cancel_answer_to = raw_pdus.command_value(message, 0x0120)
                break
        # ADIT still answers sub-operation 2, which crossed its C-CANCEL-RQ.
        message = raw_pdus.read_message(sock)
        seen.append((command_field(message), raw_pdus.status_of(message)))
        final = raw_pdus._get_rsp(get_context, 0xFE00, 2, 1)
        sock.sendall(b"".join(final))
        ending = [pdu[0] for pdu in raw_pdus.read_until(sock, A_RELEASE_RQ)]
        sock.sendall(raw_pdus.release_rp())
        return {"seen": seen, "cancel_for": cancel_answer_to, "ending": ending}

    server = ServerConfig(
        name="Raw PACS",
        ae_title="RAW_PACS",
        host=LOOPBACK,
        port=0,
        study_root_find_support=True,
        study_root_get_support=True,
    )
    local = LocalConfig(calling_ae_title="ADIT_RAW", timeouts=Timeouts(5, 5, 5, 5))
    with raw_pdus.raw_peer(pacs) as peer:
        server = ServerConfig(**{**server.__dict__, "port": peer.port})
        dimse = DimseConnector(server, local)
        query = QueryDataset.create(
            QueryRetrieveLevel="STUDY", StudyInstanceUID=str(study[0].StudyInstanceUID)
        )
        instances = dimse.send_c_get(query)
        first = next(instances)
        instances.close()  # the consumer stops (e.g. its destination failed)
        outcome = peer.result()

    assert first.SOPInstanceUID == study[0].SOPInstanceUID
    assert outcome["seen"][0] == (C_STORE_RSP, 0x0000)  # sub-operation 1 was stored
    assert (C_CANCEL_RQ, None) in outcome["seen"]
    assert outcome["cancel_for"] == (1).to_bytes(2, "little")  # the C-GET-RQ's Message ID
    assert outcome["seen"][-1] == (C_STORE_RSP, 0xA700)  # sub-operation 2 refused
    assert A_ABORT not in outcome["ending"]
    assert outcome["ending"][-1] == A_RELEASE_RQ


def test_cancel_moves_stops_a_running_c_move_part_way(orthanc_a, orthanc_b, local_config):
    patient_id = new_patient_id("CANCELMOVE")
    study = make_study(patient_id, series=(("CT", 300),), compressed_series=False)
    orthanc_a.upload(study)
    study_uid = str(study[0].StudyInstanceUID)
    dimse = DimseConnector(orthanc_a.server_config(), local_config)
    query = QueryDataset.create(QueryRetrieveLevel="STUDY", StudyInstanceUID=study_uid)
    outcome: dict[str, object] = {}

    def move() -> None:
        try:
            outcome["result"] = dimse.send_c_move(query, orthanc_b.ae_title)
        except Exception as error:  # reported below
            outcome["error"] = error

    thread = threading.Thread(target=move, daemon=True)
    try:
        thread.start()
        wait_until(
            lambda: orthanc_b.study_instance_uids(study_uid), 30, raising=False, interval=0.02
        )
        dimse.cancel_moves()
        thread.join(30)
        assert not thread.is_alive(), "the C-MOVE went on after C-CANCEL"
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        assert isinstance(result, RetrieveResult)
        assert result.completed < len(study)
        held = orthanc_b.study_instance_uids(study_uid)
        assert 0 < len(held) < len(study)
    finally:
        orthanc_a.delete_study(study_uid)
        orthanc_b.delete_study(study_uid)
