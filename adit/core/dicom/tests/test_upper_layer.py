"""ADIT's own DICOM upper layer (`net/`) and the DIMSE operations built on it.

Pure-logic tests check the command sets byte by byte against pydicom; the others run against
real peers: the session's Orthancs, a module Orthanc ("STRICT") that checks the called AE title
and refuses or delays instances by a Lua filter, and in-process pynetdicom SCPs where a peer has
to hold an operation open at a chosen point.
"""

from __future__ import annotations

import io
import math
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.filereader import read_dataset
from pydicom.uid import CTImageStorage
from pynetdicom import build_context, evt

from adit.core.dicom.config import ServerConfig
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.dimse import storage_contexts as dimse_storage_contexts
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.net import association, commands, errors, pdus
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing.peers import LOOPBACK, OrthancInstance, start_get_scp, start_orthanc
from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing import wait_until

from .conftest import new_patient_id

peers = pytest.mark.peers

CT = str(CTImageStorage)
FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET

# The STRICT Orthanc refuses instances with this ImageComments (a Lua error in its instance
# filter makes it answer the C-STORE with a failure status) and takes about half a second for
# each instance with SLOW_MARK (the filter runs under a lock, so one at a time).
REFUSE_MARK = "ADIT-REFUSE"
SLOW_MARK = "ADIT-SLOW"
STRICT_MAX_PDU = 8192
STRICT_LUA = f"""
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.ImageComments == "{REFUSE_MARK}" then
    error("refused by the test's instance filter")
  end
  if dicom.ImageComments == "{SLOW_MARK}" then
    local deadline = os.clock() + 0.5
    while os.clock() < deadline do end
  end
  return true
end
"""


# --- helpers ---------------------------------------------------------------------------------


def read_command(encoded: bytes) -> Dataset:
    """A command set decoded by pydicom (Implicit VR Little Endian, PS3.7 6.3.1)."""
    return read_dataset(io.BytesIO(encoded), is_implicit_VR=True, is_little_endian=True)


def element_boundaries(encoded: bytes) -> set[int]:
    """Offsets at which an element of `encoded` ends (walked independently of the code)."""
    offsets, offset = set(), 0
    while offset < len(encoded):
        _, _, length = struct.unpack_from("<HHI", encoded, offset)
        offset += 8 + length
        offsets.add(offset)
    return offsets


def study_query(datasets, level: str = "STUDY", **extra) -> QueryDataset:
    return QueryDataset.create(
        QueryRetrieveLevel=level, StudyInstanceUID=datasets[0].StudyInstanceUID, **extra
    )


def marked(datasets: list[Dataset], mark: str, indices) -> list[Dataset]:
    for index in indices:
        datasets[index].ImageComments = mark
    return datasets


def store_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("c-store-")]


def wait_for_no_store_threads(timeout: float = 2.0) -> list[str]:
    wait_until(lambda: not store_threads(), timeout, raising=False)
    return store_threads()


class Recorder:
    """Wraps the upper layer's `Association` to see associations and messages of an operation.

    Real associations, real sockets: only calls are recorded on the way through.
    """

    def __init__(self, monkeypatch) -> None:
        self.associations: list[association.Association] = []
        self.sent_instances: dict[str, int] = {}  # SOP Instance UID -> id(association)
        self.commands: list[dict[int, bytes]] = []
        self.statuses: list[int] = []
        self.aborts: list[int] = []
        self.releases: list[int] = []
        self.outgoing: list[bytes] = []
        self.incoming_pdu_types: list[int] = []
        self._lock = threading.Lock()
        cls = association.Association
        original_request = cls.request
        original_send = cls.send_message
        original_receive = cls.receive_message
        original_abort = cls.abort
        original_release = cls.release
        original_sendall = cls._sendall
        original_send_parts = cls._send_parts
        original_read_pdu = pdus.read_pdu
        recorder = self

        def request(*args, **kwargs):
            assoc = original_request(*args, **kwargs)
            with recorder._lock:
                recorder.associations.append(assoc)
            return assoc

        def send_message(self, context_id, command, data=None):
            elements = commands.decode_command(command)
            with recorder._lock:
                recorder.commands.append(elements)
                if commands.Message(context_id, elements).command_field == (commands.C_STORE_RQ):
                    uid = commands.Message(context_id, elements).ui(
                        commands.AFFECTED_SOP_INSTANCE_UID
                    )
                    recorder.sent_instances[uid] = id(self)
            return original_send(self, context_id, command, data)

        def receive_message(self):
            message = original_receive(self)
            with recorder._lock:
                recorder.statuses.append(message.status)
            return message

        def abort(self):
            with recorder._lock:
                recorder.aborts.append(id(self))
            return original_abort(self)

        def release(self):
            with recorder._lock:
                recorder.releases.append(id(self))
            return original_release(self)

        def sendall(self, data):
            with recorder._lock:
                recorder.outgoing.append(bytes(data))
            return original_sendall(self, data)

        def send_parts(self, parts):
            with recorder._lock:
                recorder.outgoing.append(b"".join(parts))
            return original_send_parts(self, parts)

        def read_pdu(reader):
            pdu = original_read_pdu(reader)
            with recorder._lock:
                recorder.incoming_pdu_types.append(pdu[0])
            return pdu

        monkeypatch.setattr(cls, "request", request)
        monkeypatch.setattr(cls, "send_message", send_message)
        monkeypatch.setattr(cls, "receive_message", receive_message)
        monkeypatch.setattr(cls, "abort", abort)
        monkeypatch.setattr(cls, "release", release)
        monkeypatch.setattr(cls, "_sendall", sendall)
        monkeypatch.setattr(cls, "_send_parts", send_parts)
        monkeypatch.setattr(association, "read_pdu", read_pdu)

    def outgoing_pdu_types(self) -> list[int]:
        return [pdu_type for pdu_type, _ in parse_pdus(b"".join(self.outgoing))]

    def instances_per_association(self) -> Counter:
        return Counter(self.sent_instances.values())


def parse_pdus(stream: bytes) -> list[tuple[int, bytes]]:
    """(PDU type, body) of every PDU in a byte stream ADIT sent."""
    pdus, offset = [], 0
    while offset < len(stream):
        pdu_type, _, length = struct.unpack_from(">BBI", stream, offset)
        pdus.append((pdu_type, stream[offset + 6 : offset + 6 + length]))
        offset += 6 + length
    assert offset == len(stream), "the stream ends inside a PDU"
    return pdus


def parse_pdvs(body: bytes) -> list[tuple[int, int, bytes]]:
    """(context ID, message control header, fragment) of the PDV items of a P-DATA-TF."""
    items, offset = [], 0
    while offset < len(body):
        length, context_id, control = struct.unpack_from(">IBB", body, offset)
        items.append((context_id, control, body[offset + 6 : offset + 4 + length]))
        offset += 4 + length
    assert offset == len(body), "a PDV item overruns its PDU"
    return items


# --- peers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_orthanc(tmp_path_factory) -> Iterator[OrthancInstance]:
    folder = tmp_path_factory.mktemp("strict_orthanc")
    script = folder / "filter.lua"
    script.write_text(STRICT_LUA)
    orthanc = start_orthanc(
        "STRICT",
        extra_config={
            "DicomCheckCalledAet": True,
            "MaximumPduLength": STRICT_MAX_PDU,
            "LuaScripts": [str(script)],
        },
    )
    try:
        yield orthanc
    finally:
        orthanc.stop()


class HoldingScp:
    """A real Query/Retrieve SCP (pynetdicom, in this process) that holds operations open.

    C-GET: sends the first instance, then waits for `gate` before sending the others.
    C-FIND: answers one match every `find_delay` seconds, `find_total` in all, and records
    whether it saw ADIT's C-CANCEL.
    """

    def __init__(self, instances: list[Dataset], find_total: int = 40, find_delay: float = 0.02):
        self.instances = instances
        self.find_total, self.find_delay = find_total, find_delay
        self.gate = threading.Event()
        self.find_sent = 0
        self.cancel_seen = threading.Event()
        self.aborted = threading.Event()
        self.server, self.port = start_get_scp(
            "HOLDING",
            [
                (evt.EVT_C_GET, self._get),
                (evt.EVT_C_FIND, self._find),
                (evt.EVT_ABORTED, lambda event: self.aborted.set()),
            ],
            with_find=True,
        )

    def server_config(self) -> ServerConfig:
        return ServerConfig(
            name="Holding",
            ae_title="HOLDING",
            host=LOOPBACK,
            port=self.port,
            study_root_find_support=True,
            study_root_get_support=True,
        )

    def _get(self, event) -> Iterator:
        yield len(self.instances)
        for index, ds in enumerate(self.instances):
            if index:
                self.gate.wait(20)
            if event.assoc.is_aborted:
                return
            yield 0xFF00, ds

    def _find(self, event) -> Iterator:
        for n in range(self.find_total):
            if event.is_cancelled:
                self.cancel_seen.set()
                yield 0xFE00, None
                return
            time.sleep(self.find_delay)
            ds = Dataset()
            ds.QueryRetrieveLevel = "IMAGE"
            ds.StudyInstanceUID = "1.2.826.0.1.3680043.9.7.1"
            ds.SOPInstanceUID = f"1.2.826.0.1.3680043.9.7.1.{n + 1}"
            self.find_sent += 1
            yield 0xFF00, ds

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()


@pytest.fixture
def holding_scp() -> Iterator[HoldingScp]:
    scp = HoldingScp(
        make_study(new_patient_id("HOLD"), series=(("CT", 3),), compressed_series=False)
    )
    try:
        yield scp
    finally:
        scp.stop()


# --- 1. command sets (pure logic) ------------------------------------------------------------

# An odd-length UID (padded with a NUL) and a 64-character one (no padding).
ODD_UID = "1.2.826.0.1.3680043.9.7.12345"
LONG_UID = "1.2.826.0.1.3680043.9.7." + "1" * 40
assert len(ODD_UID) % 2 == 1 and len(LONG_UID) == 64


@pytest.mark.parametrize("instance_uid", [ODD_UID, LONG_UID])
def test_c_store_rq_decodes_with_pydicom(instance_uid):
    encoded = commands.c_store_rq(7, CT, instance_uid)
    command = read_command(encoded)
    assert command.CommandGroupLength == len(encoded) - 12
    assert command.AffectedSOPClassUID == CT
    assert command.CommandField == 0x0001
    assert command.MessageID == 7
    assert command.Priority == 0x0000
    assert command.CommandDataSetType != 0x0101
    assert command.AffectedSOPInstanceUID == instance_uid
    assert "MessageIDBeingRespondedTo" not in command
    assert len(encoded) % 2 == 0


def test_c_store_rsp_decodes_with_pydicom():
    encoded = commands.c_store_rsp(65535, CT, ODD_UID, 0xB007)
    command = read_command(encoded)
    assert command.CommandGroupLength == len(encoded) - 12
    assert command.AffectedSOPClassUID == CT
    assert command.CommandField == 0x8001
    assert command.MessageIDBeingRespondedTo == 65535
    assert command.CommandDataSetType == 0x0101
    assert command.Status == 0xB007
    assert command.AffectedSOPInstanceUID == ODD_UID
    assert "MessageID" not in command


@pytest.mark.parametrize(
    "build, model, command_field",
    [
        (commands.c_find_rq, FIND_MODEL, 0x0020),
        (commands.c_get_rq, GET_MODEL, 0x0010),
    ],
)
def test_find_and_get_requests_decode_with_pydicom(build, model, command_field):
    encoded = build(12, model)
    command = read_command(encoded)
    assert command.CommandGroupLength == len(encoded) - 12
    assert command.AffectedSOPClassUID == model
    assert command.CommandField == command_field
    assert command.MessageID == 12
    assert command.Priority == 0x0000
    assert command.CommandDataSetType != 0x0101  # the identifier follows
    assert "AffectedSOPInstanceUID" not in command


def test_c_cancel_rq_decodes_with_pydicom():
    encoded = commands.c_cancel_rq(12)
    command = read_command(encoded)
    assert command.CommandGroupLength == len(encoded) - 12
    assert command.CommandField == 0x0FFF
    assert command.MessageIDBeingRespondedTo == 12
    assert command.CommandDataSetType == 0x0101
    assert "AffectedSOPClassUID" not in command
    assert "MessageID" not in command


ALL_COMMANDS = [
    commands.c_store_rq(1, CT, ODD_UID),
    commands.c_store_rsp(1, CT, LONG_UID, 0x0000),
    commands.c_find_rq(2, FIND_MODEL),
    commands.c_get_rq(3, GET_MODEL),
    commands.c_cancel_rq(2),
]


@pytest.mark.parametrize("encoded", ALL_COMMANDS)
def test_decode_command_round_trips_in_ascending_order(encoded):
    elements = commands.decode_command(encoded)
    pydicom_view = read_command(encoded)
    # Same elements as pydicom sees, group length first, ascending (PS3.7 6.3.1).
    assert list(elements) == sorted(elements)
    assert list(elements) == [tag.element for tag in pydicom_view.keys()]
    assert int.from_bytes(elements[0x0000], "little") == len(encoded) - 12
    message = commands.Message(1, elements)
    assert message.command_field == pydicom_view.CommandField
    for keyword, element in [
        ("MessageID", commands.MESSAGE_ID),
        ("MessageIDBeingRespondedTo", commands.MESSAGE_ID_BEING_RESPONDED_TO),
        ("Status", commands.STATUS),
        ("CommandDataSetType", commands.COMMAND_DATA_SET_TYPE),
    ]:
        if keyword in pydicom_view:
            assert message.us(element) == pydicom_view[keyword].value
    for keyword, element in [
        ("AffectedSOPClassUID", commands.AFFECTED_SOP_CLASS_UID),
        ("AffectedSOPInstanceUID", commands.AFFECTED_SOP_INSTANCE_UID),
    ]:
        if keyword in pydicom_view:
            assert message.ui(element) == pydicom_view[keyword].value


@pytest.mark.parametrize("encoded", ALL_COMMANDS)
def test_decode_command_rejects_every_truncation(encoded):
    boundaries = element_boundaries(encoded)
    for cut in range(1, len(encoded)):
        if cut in boundaries:  # a shorter but complete command set
            assert len(commands.decode_command(encoded[:cut])) >= 1
            continue
        with pytest.raises(errors.UpperLayerError):
            commands.decode_command(encoded[:cut])


def test_decode_command_keeps_elements_of_other_groups_under_their_whole_tag():
    # Orthanc puts a final C-GET response's Failed SOP Instance UID List into the command set.
    data_element = struct.pack("<HHI", 0x0008, 0x0058, 4) + b"1.2\0"
    command = commands.decode_command(commands.c_cancel_rq(1) + data_element)
    assert command[0x00080058] == b"1.2\0"
    assert 0x0058 not in command  # never mistaken for a command element
    with pytest.raises(errors.UpperLayerError, match="0008,0058"):
        commands.decode_command(commands.c_cancel_rq(1) + data_element[:-1])


def test_rejection_is_permanent_only_for_the_permanent_reasons():
    def rejected(result, source, diagnostic):
        return errors.AssociationRejected(result, source, diagnostic, "text").is_permanent

    # Permanent, by the service user: no reason, application context, calling or called AE.
    assert rejected(1, 1, 2) and rejected(1, 1, 3) and rejected(1, 1, 7)
    assert not rejected(2, 1, 7)  # transient
    assert not rejected(1, 1, 1)  # no reason given
    assert not rejected(1, 3, 2)  # by the presentation layer (e.g. congestion)


# --- 2. an instance far larger than the peer's maximum PDU -------------------------------------


def large_ct(prefix: str) -> Dataset:
    ds = make_study(
        new_patient_id(prefix),
        series=(("CT", 1),),
        compressed_series=False,
        rows=1024,
        columns=1024,
    )[0]
    pixels = np.random.default_rng().integers(0, 4096, size=(1024, 1024), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    return ds


@peers
def test_instance_larger_than_the_peer_pdu_round_trips(strict_orthanc, local_config, monkeypatch):
    ds = large_ct("BIG")
    original_pixels = bytes(ds.PixelData)
    connector = DimseConnector(strict_orthanc.server_config(), local_config)
    recorder = Recorder(monkeypatch)

    assert connector.send_c_store([ds]).stored == 1
    store_assoc = recorder.associations[0]
    assert store_assoc.max_fragment == STRICT_MAX_PDU - 6  # as Orthanc announced
    outgoing = parse_pdus(b"".join(recorder.outgoing))
    data_fragments = []
    for pdu_type, body in outgoing:
        if pdu_type == pdus.P_DATA_TF_PDU:
            assert len(body) <= STRICT_MAX_PDU  # the peer's limit holds for every PDU
            data_fragments += [item for item in parse_pdvs(body) if not item[1] & 0x01]
    assert len(data_fragments) >= math.ceil(len(original_pixels) / STRICT_MAX_PDU)
    assert [control for _, control, _ in data_fragments] == [0x00] * (len(data_fragments) - 1) + [
        0x02
    ]
    stored = dcmread(io.BytesIO(strict_orthanc.instance_file(ds.SOPInstanceUID)))
    assert stored.PixelData == original_pixels

    recorder.incoming_pdu_types.clear()
    received = list(connector.send_c_get(study_query([ds])))
    assert [r.SOPInstanceUID for r in received] == [ds.SOPInstanceUID]
    assert received[0].PixelData == original_pixels
    # The instance came in many P-DATA-TF PDUs as well.
    assert recorder.incoming_pdu_types.count(pdus.P_DATA_TF_PDU) > 4
    assert connector.warnings == []


# --- 3. association rejected ------------------------------------------------------------------


@peers
def test_wrong_called_ae_title_is_a_permanent_rejection(strict_orthanc, local_config):
    wrong = strict_orthanc.server_config(ae_title="NOT_STRICT")
    study = make_study(new_patient_id("REJ"), series=(("CT", 1),), compressed_series=False)
    connector = DimseConnector(wrong, local_config)
    operations = {
        "C-FIND": lambda: list(connector.send_c_find(study_query(study))),
        "C-GET": lambda: list(connector.send_c_get(study_query(study))),
        "C-STORE": lambda: connector.send_c_store(study),
        "C-MOVE": lambda: connector.send_c_move(study_query(study), "NOBODY"),
        "C-ECHO": connector.send_c_echo,
    }
    for operation, call in operations.items():
        with pytest.raises(DicomError, match=rf"{operation} on STRICT \(NOT_STRICT\)") as info:
            call()
        assert not isinstance(info.value, RetriableDicomError), operation
        assert "rejected-permanent: called AE title not recognized" in str(info.value)

    with pytest.raises(errors.AssociationRejected) as rejection:
        association.Association.request(
            LOOPBACK,
            strict_orthanc.dicom_port,
            calling_ae_title=local_config.calling_ae_title,
            called_ae_title="NOT_STRICT",
            contexts=[build_context(FIND_MODEL)],
            timeouts=local_config.timeouts,
        )
    rejected = rejection.value
    assert (rejected.result, rejected.source, rejected.diagnostic) == (1, 1, 7)
    assert rejected.is_permanent

    # The same Orthanc under its own AE title answers: the AE title was the reason.
    right = DimseConnector(strict_orthanc.server_config(), local_config)
    assert right.send_c_store(study).stored == 1
    assert [
        r.SOPInstanceUID
        for r in right.send_c_find(study_query(study, "IMAGE", SOPInstanceUID=None))
    ] == [study[0].SOPInstanceUID]


# --- 4. abort from another thread ------------------------------------------------------------


@peers
def test_abort_while_c_get_is_blocked_ends_it_at_once(holding_scp, local_config):
    connector = DimseConnector(holding_scp.server_config(), local_config)
    iterator = connector.send_c_get(study_query(holding_scp.instances))
    first = next(iterator)
    assert first.SOPInstanceUID == holding_scp.instances[0].SOPInstanceUID
    # The peer holds back the next instance: the next read blocks until abort() ends it.
    timer = threading.Timer(0.3, connector.abort)
    timer.start()
    started = time.monotonic()
    rest = list(iterator)  # no error
    elapsed = time.monotonic() - started
    timer.join()
    assert rest == []
    assert 0.25 <= elapsed < 5, elapsed
    # The peer's handler runs on its association thread; once let go, it sees the A-ABORT.
    holding_scp.gate.set()
    assert holding_scp.aborted.wait(5)
    with pytest.raises(DicomError, match="aborted"):
        list(connector.send_c_get(study_query(holding_scp.instances)))


@peers
def test_abort_while_iterating_c_get_from_orthanc(orthanc_a, local_config):
    study = make_study(new_patient_id("GAB"), series=(("CT", 8),), compressed_series=False)
    orthanc_a.upload(study)
    connector = DimseConnector(orthanc_a.server_config(), local_config)
    iterator = connector.send_c_get(study_query(study))
    received = [next(iterator)]
    aborter = threading.Thread(target=connector.abort)
    aborter.start()
    aborter.join(5)
    received += list(iterator)  # ends without error
    assert len(received) == 1  # nothing more after the abort
    assert connector.aborted
    with pytest.raises(DicomError, match="C-FIND on ORTHANC_A.*aborted"):
        list(connector.send_c_find(study_query(study)))


# --- 5. C-STORE on two associations side by side --------------------------------------------


@peers
def test_store_on_two_associations_stores_everything(orthanc_b, local_config, monkeypatch):
    recorder = Recorder(monkeypatch)
    study = make_study(new_patient_id("SBS"), series=(("CT", 25), ("MR", 15)))
    stored_callbacks: list[str] = []
    connector = DimseConnector(orthanc_b.server_config(), local_config)

    result = connector.send_c_store(
        iter(study), on_stored=lambda ds: stored_callbacks.append(ds.SOPInstanceUID), associations=2
    )

    uids = {ds.SOPInstanceUID for ds in study}
    assert result.stored == 40 and result.failed_sop_instance_uids == []
    assert orthanc_b.study_instance_uids(study[0].StudyInstanceUID) == uids
    assert sorted(stored_callbacks) == sorted(uids)
    assert len(recorder.associations) == 2
    per_association = recorder.instances_per_association()
    assert set(per_association) == {id(assoc) for assoc in recorder.associations}
    assert sum(per_association.values()) == 40 and min(per_association.values()) >= 1
    # Both ended with an orderly release: A-RELEASE-RQ sent, A-RELEASE-RP received.
    assert sorted(recorder.releases) == sorted(id(a) for a in recorder.associations)
    assert recorder.aborts == []
    assert recorder.outgoing_pdu_types().count(pdus.A_RELEASE_RQ_PDU) == 2
    assert recorder.incoming_pdu_types.count(pdus.A_RELEASE_RP_PDU) == 2
    assert wait_for_no_store_threads() == []


@peers
def test_store_on_two_associations_reports_instances_the_server_refused(
    strict_orthanc, local_config, monkeypatch
):
    recorder = Recorder(monkeypatch)
    study = make_study(new_patient_id("SBR"), series=(("CT", 40),), compressed_series=False)
    refused = {study[i].SOPInstanceUID for i in (3, 17, 30)}
    marked(study, REFUSE_MARK, (3, 17, 30))
    connector = DimseConnector(strict_orthanc.server_config(), local_config)

    with pytest.raises(RetriableDicomError, match=r"C-STORE on STRICT.*: 3 of 40 instances failed"):
        connector.send_c_store(iter(study), associations=2)

    assert len(recorder.associations) == 2
    per_association = recorder.instances_per_association()
    assert len(per_association) == 2 and sum(per_association.values()) == 40
    assert refused <= set(recorder.sent_instances)  # the server refused them, not ADIT
    held = strict_orthanc.study_instance_uids(study[0].StudyInstanceUID)
    assert held == {ds.SOPInstanceUID for ds in study} - refused
    assert all(f"{uid} refused with 0x" in " ".join(connector.warnings) for uid in refused)


# --- 6. C-FIND with a limit ends with C-CANCEL ----------------------------------------------


@peers
def test_c_find_limit_cancels_and_releases(orthanc_b, local_config, monkeypatch):
    study = make_study(new_patient_id("CAN"), series=(("CT", 12),), compressed_series=False)
    orthanc_b.upload(study)
    query = study_query(study, "IMAGE", SOPInstanceUID=None)
    connector = DimseConnector(orthanc_b.server_config(), local_config)
    recorder = Recorder(monkeypatch)

    assert len(list(connector.send_c_find(query, limit_results=2))) == 2

    cancels = [
        c
        for c in recorder.commands
        if c[commands.COMMAND_FIELD] == b"\xff\x0f"  # 0x0FFF
    ]
    assert len(cancels) == 1
    find_rq = recorder.commands[0]
    assert cancels[0][commands.MESSAGE_ID_BEING_RESPONDED_TO] == find_rq[commands.MESSAGE_ID]
    assert recorder.statuses[-1] in (0xFE00, 0x0000)  # read to the final answer
    assert len(recorder.associations) == 1 and not recorder.associations[0].is_open
    assert recorder.releases == [id(recorder.associations[0])] and recorder.aborts == []
    assert recorder.outgoing_pdu_types().count(pdus.A_RELEASE_RQ_PDU) == 1
    assert recorder.incoming_pdu_types.count(pdus.A_RELEASE_RP_PDU) == 1
    # Right away usable again, on the same connector.
    assert {r.SOPInstanceUID for r in connector.send_c_find(query)} == {
        ds.SOPInstanceUID for ds in study
    }


@peers
def test_c_find_limit_cancel_is_understood_by_the_peer(holding_scp, local_config, monkeypatch):
    recorder = Recorder(monkeypatch)
    connector = DimseConnector(holding_scp.server_config(), local_config)
    query = QueryDataset.create(
        QueryRetrieveLevel="IMAGE",
        StudyInstanceUID="1.2.826.0.1.3680043.9.7.1",
        SOPInstanceUID=None,
    )
    started = time.monotonic()
    assert len(list(connector.send_c_find(query, limit_results=3))) == 3
    assert time.monotonic() - started < 0.02 * holding_scp.find_total  # did not wait for all
    assert holding_scp.cancel_seen.is_set()
    assert recorder.statuses[-1] == 0xFE00
    assert holding_scp.find_sent < holding_scp.find_total
    assert recorder.aborts == [] and not holding_scp.aborted.is_set()
    assert len(list(connector.send_c_find(query, limit_results=1))) == 1


# --- 7. an error in the fed iterator ---------------------------------------------------------


@peers
def test_error_in_fed_iterator_propagates_and_ends_all_associations(
    orthanc_b, local_config, monkeypatch
):
    recorder = Recorder(monkeypatch)
    study = make_study(new_patient_id("ERR"), series=(("CT", 20),), compressed_series=False)
    connector = DimseConnector(orthanc_b.server_config(), local_config)

    def instances() -> Iterator[Dataset]:
        yield from study[:7]
        raise ValueError("the fetch broke")

    with pytest.raises(ValueError, match="the fetch broke"):
        connector.send_c_store(instances(), associations=2)

    assert len(recorder.associations) == 2
    assert all(not assoc.is_open for assoc in recorder.associations)
    assert wait_for_no_store_threads() == []
    held = orthanc_b.study_instance_uids(study[0].StudyInstanceUID)
    assert held <= {ds.SOPInstanceUID for ds in study[:7]}
    # The connector is not spoilt: it stores the rest at once.
    assert connector.send_c_store(study[7:], associations=2).stored == 13
    assert orthanc_b.study_instance_uids(study[0].StudyInstanceUID) >= {
        ds.SOPInstanceUID for ds in study[7:]
    }


# --- 4b. abort during C-STORE on two associations ----------------------------------------


@peers
def test_abort_during_store_on_two_associations_returns(strict_orthanc, local_config, monkeypatch):
    recorder = Recorder(monkeypatch)
    # Orthanc takes ~0.5 s per instance here, so both lanes are still waiting for their first
    # answer when the generator calls abort() and four more instances wait in the hand-over.
    study = make_study(new_patient_id("SAB"), series=(("CT", 12),), compressed_series=False)
    marked(study, SLOW_MARK, range(len(study)))
    connector = DimseConnector(strict_orthanc.server_config(), local_config)

    def instances() -> Iterator[Dataset]:
        for index, ds in enumerate(study):
            if index == 6:
                connector.abort()
            yield ds

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = connector.send_c_store(instances(), associations=2)
        except BaseException as error:
            outcome["error"] = error

    runner = threading.Thread(target=run, name="abort-store-runner", daemon=True)
    runner.start()
    runner.join(3)
    assert not runner.is_alive(), "send_c_store did not return after abort()"
    assert "error" not in outcome, outcome
    assert len(recorder.associations) == 2
    assert outcome["result"].stored <= 2
    assert all(not assoc.is_open for assoc in recorder.associations)
    assert wait_for_no_store_threads() == []
    with pytest.raises(DicomError, match="aborted"):
        connector.send_c_store(study[:1])


@peers
def test_orthanc_answers_the_scp_role_selection_for_c_get(orthanc_a, local_config):
    """ADIT's requestor reads the role answer of a real PACS (PS3.7 D.3.3.4)."""
    assoc = association.Association.request(
        LOOPBACK,
        orthanc_a.dicom_port,
        calling_ae_title=local_config.calling_ae_title,
        called_ae_title=orthanc_a.ae_title,
        contexts=[build_context(GET_MODEL), build_context(CTImageStorage)],
        timeouts=local_config.timeouts,
        scp_role_sop_classes=[CTImageStorage],
    )
    try:
        assert assoc.scp_role_answer == frozenset({CTImageStorage})
    finally:
        assoc.release()


def test_negotiation_is_encoded_once_and_leaves_shared_contexts_as_they_are(
    orthanc_a, local_config
):
    """The second association with the same proposal reuses the encoded A-ASSOCIATE-RQ and the
    decoded answer, and gets the same contexts accepted; the proposed context objects (shared
    by the cached context lists) are not renumbered."""
    contexts = [build_context(GET_MODEL), *dimse_storage_contexts(reserved=1)]
    ids_before = [context.context_id for context in contexts]
    association._association_request.cache_clear()
    association._read_acceptance.cache_clear()

    def open_and_release() -> dict:
        assoc = association.Association.request(
            LOOPBACK,
            orthanc_a.dicom_port,
            calling_ae_title=local_config.calling_ae_title,
            called_ae_title=orthanc_a.ae_title,
            contexts=contexts,
            timeouts=local_config.timeouts,
            scp_role_sop_classes=[CTImageStorage],
        )
        try:
            assert assoc.scp_role_answer == frozenset({CTImageStorage})
            return dict(assoc.accepted)
        finally:
            assoc.release()

    first = open_and_release()
    second = open_and_release()

    assert first == second
    assert first[1].abstract_syntax == GET_MODEL  # IDs 1, 3, 5, ... in the proposal's order
    assert any(c.abstract_syntax == CTImageStorage for c in first.values())
    assert association._association_request.cache_info().hits == 1
    assert association._read_acceptance.cache_info().hits == 1
    assert [context.context_id for context in contexts] == ids_before
