"""A C-GET sub-operation's data set is taken only whole (raw PDUs from a scripted PACS).

The receiver walks every pushed data set's structure before it answers success
(`adit.core.dicom.completeness`); an instance that arrives over C-GET deserves the same: a
data set cut short inside an element, properly framed in its PDVs, must get a failure status,
must not be handed on, and must not let the retrieve end as if it were complete.
"""

from __future__ import annotations

import dataclasses
import socket

from pydicom.uid import ExplicitVRLittleEndian

from adit.core.dicom.config import LocalConfig, ServerConfig, Timeouts
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.errors import DicomError
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing import raw_pdus
from adit.core.dicom.testing.peers import LOOPBACK
from adit.core.dicom.testing.synthetic import make_study

LOCAL = LocalConfig(
    calling_ae_title="ADIT_RAW", timeouts=Timeouts(connection=5, acse=5, dimse=5, network=5)
)


def test_a_truncated_instance_in_a_c_get_is_refused_and_not_handed_on():
    truncated, whole = make_study("CUT-GET", series=(("CT", 2),), compressed_series=False)
    for ds in (truncated, whole):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    data_set = raw_pdus.encoded(truncated)

    def handler(sock: socket.socket) -> list[int | None]:
        request = raw_pdus.read_pdu(sock)
        assert request is not None
        accept, messages = raw_pdus.pacs_answers(request, "C-GET", [truncated, whole])
        _, accepted = raw_pdus.associate_ac(request)
        context = {syntaxes: cid for cid, syntaxes in accepted.items()}[
            (str(truncated.SOPClassUID), ExplicitVRLittleEndian)
        ]
        # The first sub-operation: its data set ends 100 bytes early, inside Pixel Data.
        messages[0] = raw_pdus.dimse_pdus(
            "C_STORE_RQ",
            context,
            MessageID=1,
            AffectedSOPClassUID=str(truncated.SOPClassUID),
            AffectedSOPInstanceUID=str(truncated.SOPInstanceUID),
            Priority=0,
            DataSet=data_set[:-100],
        )
        sent = b"".join(pdu for message in messages for pdu in message)
        sock.sendall(accept + sent + raw_pdus.release_rp())
        # ADIT's answers: the C-GET request (no Status), then one C-STORE-RSP per sub-operation.
        statuses = []
        while message := raw_pdus.read_message(sock):
            if message[0][0] != 0x04:
                break
            statuses.append(raw_pdus.status_of(message))
        return statuses

    server = ServerConfig(
        name="Raw PACS", ae_title="RAW_PACS", host=LOOPBACK, study_root_get_support=True
    )
    with raw_pdus.raw_peer(handler) as pacs:
        dimse = DimseConnector(dataclasses.replace(server, port=pacs.port), LOCAL)
        query = QueryDataset.create(
            QueryRetrieveLevel="STUDY", StudyInstanceUID=str(truncated.StudyInstanceUID)
        )
        delivered: list = []
        error = None
        try:
            for ds in dimse.send_c_get(query):
                delivered.append(ds)
        except DicomError as raised:
            error = raised
        statuses = pacs.result()

    assert [str(ds.SOPInstanceUID) for ds in delivered] == [str(whole.SOPInstanceUID)]
    refused, stored = statuses[1], statuses[2]
    assert refused is not None and refused & 0xF000 in (0xA000, 0xC000), statuses
    assert stored == 0x0000
    # The retrieve does not end as complete: an error or a warning names what is missing.
    assert error is not None or any(str(truncated.SOPInstanceUID) in w for w in dimse.warnings)
