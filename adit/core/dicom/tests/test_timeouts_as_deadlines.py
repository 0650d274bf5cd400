"""ARTIM and DIMSE timeouts are deadlines for a whole PDU, not for each `recv()`.

A scripted PACS trickles its PDUs a few bytes at a time, each piece well inside the timeout.
With a per-`recv()` timeout ADIT would wait for as long as the peer likes (here: the 60-odd
seconds of the trickle); with a deadline the operation fails retriably once the timeout has
passed since ADIT started waiting for the PDU. A prompt peer's operation is unaffected (the
other raw-PDU suites run with the same reader).
"""

from __future__ import annotations

import socket
import time

import pytest

from adit.core.dicom.config import LocalConfig, ServerConfig, Timeouts
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.errors import RetriableDicomError
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing import raw_pdus
from adit.core.dicom.testing.peers import LOOPBACK
from adit.core.dicom.testing.synthetic import make_study

TIMEOUT = 1.0
PIECE_INTERVAL = 0.25  # well inside the timeout: a per-recv timeout never fires


def connector(port: int) -> DimseConnector:
    server = ServerConfig(
        name="Slow PACS",
        ae_title="SLOW_PACS",
        host=LOOPBACK,
        port=port,
        study_root_find_support=True,
    )
    timeouts = Timeouts(connection=5, acse=TIMEOUT, dimse=TIMEOUT, network=5)
    return DimseConnector(server, LocalConfig(calling_ae_title="ADIT_SLOW", timeouts=timeouts))


def trickle(sock: socket.socket, data: bytes, pieces: int = 250) -> bool:
    """Sends `data` in `pieces` pieces, one every PIECE_INTERVAL; False once ADIT hung up."""
    step = max(1, len(data) // pieces)
    for offset in range(0, len(data), step):
        try:
            sock.sendall(data[offset : offset + step])
        except OSError:
            return False
        time.sleep(PIECE_INTERVAL)
    return True


def find_query() -> QueryDataset:
    return QueryDataset.create(QueryRetrieveLevel="STUDY", PatientID="SLOW", StudyInstanceUID="")


@pytest.mark.parametrize("what", ["A-ASSOCIATE-AC", "C-FIND-RSP"])
def test_a_peer_trickling_a_pdu_fails_the_operation_after_the_timeout(what):
    study = make_study("SLOW", series=(("CT", 1),), compressed_series=False)

    def pacs(sock: socket.socket) -> bool:
        request = raw_pdus.read_pdu(sock)
        assert request is not None
        accept, messages = raw_pdus.pacs_answers(request, "C-FIND", study)
        if what == "A-ASSOCIATE-AC":
            return trickle(sock, accept)
        sock.sendall(accept)
        raw_pdus.read_message(sock)  # the C-FIND-RQ
        return trickle(sock, b"".join(messages[0]))

    with raw_pdus.raw_peer(pacs, timeout=90) as peer:
        started = time.monotonic()
        with pytest.raises(RetriableDicomError) as raised:
            list(connector(peer.port).send_c_find(find_query()))
        elapsed = time.monotonic() - started
        finished_trickle = peer.result(timeout=120)

    assert "timed out" in str(raised.value) or "timeout" in str(raised.value).lower()
    # Bounded by the timeout (plus one piece interval), not by the peer's pace.
    assert elapsed < TIMEOUT + 2 * PIECE_INTERVAL + 1.0, elapsed
    assert not finished_trickle, "ADIT kept the connection until the peer was done"
