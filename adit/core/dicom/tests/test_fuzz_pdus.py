"""A bounded, seeded fuzz run against both sides of ADIT's DICOM upper layer.

Each case takes a valid exchange built with pynetdicom's PDU classes, mutates one PDU of it
(`adit.core.dicom.testing.raw_pdus`: bit flips, truncation, length fields of 0, huge or one off,
wrong PDU types, item types shuffled, items repeated, random bytes after a valid header) and
plays it over a real loopback connection:

* at the receiver (ADIT as acceptor): a pusher's A-ASSOCIATE-RQ, C-ECHO and C-STORE requests
  and A-RELEASE-RQ;
* at the requestor (`DimseConnector` doing C-FIND, C-GET and C-STORE): a PACS's
  A-ASSOCIATE-AC, responses, C-STORE sub-operations and A-RELEASE-RP.

The fuzzing side sends its PDUs, half-closes the connection and reads until ADIT closes it:
so no case waits for a timeout, and a case in which ADIT keeps the connection open is caught
as an association that never ended. What must hold for every case: no exception escapes a
receiver thread, the requestor returns or raises one of ADIT's own `DicomError`s (never another
exception type, never a hang), every association ends, and afterwards the process holds no more
threads or file descriptors than before, has grown by less than 64 MB, and the receiver still
serves a real association.

The run is reproducible: case `n` draws from `random.Random(f"{seed}-{side}-{n}")`. Set
``ADIT_FUZZ_SEED`` and ``ADIT_FUZZ_CASES`` for a longer or different run; a failure names the
seed, the case and its mutation.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    Verification,
)

from adit.core.dicom.config import LocalConfig, ServerConfig, Timeouts
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.receiver import Receiver
from adit.core.dicom.testing import raw_pdus
from adit.core.dicom.testing.peers import LOOPBACK
from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing import wait_until

SEED = int(os.environ.get("ADIT_FUZZ_SEED", "20261128"))
CASES = max(1000, int(os.environ.get("ADIT_FUZZ_CASES", "1000")))
MAX_RSS_GROWTH = 64 * 1024**2
# Seconds ADIT may keep a connection open after the fuzzing side has said all it will say.
END_OF_ASSOCIATION_TIMEOUT = 3.0
# Seconds one requestor operation may take before it counts as hung (its timeouts are 2 s).
HANG_TIMEOUT = 8.0
PUSHER_AE = "FUZZ_PUSHER"
# A run takes 1-15 s on a quiet machine; far beyond that, cases wait for timeouts instead of
# ending when the peer does (each would then take seconds).
TIME_LIMIT = 120.0


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for_threads(at_most: int, timeout: float = 5.0) -> int:
    wait_until(lambda: threading.active_count() <= at_most, timeout, raising=False)
    return threading.active_count()


def instances(count: int) -> list[Dataset]:
    study = make_study("FUZZ-PAT", series=(("CT", count),), compressed_series=False, seed=SEED)
    for ds in study:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return study


def framing_errors(stream: bytes, allowed_types: set[int]) -> str | None:
    """What is wrong with the framing of the PDUs ADIT sent (None: well framed)."""
    offset = 0
    while offset < len(stream):
        if offset + 6 > len(stream):
            return f"{len(stream) - offset} bytes after the last PDU"
        pdu_type, length = stream[offset], int.from_bytes(stream[offset + 2 : offset + 6])
        if pdu_type not in allowed_types:
            return f"PDU type 0x{pdu_type:02X} at byte {offset}"
        if offset + 6 + length > len(stream):
            return f"PDU 0x{pdu_type:02X} at byte {offset} runs past the end of the stream"
        offset += 6 + length
    return None


def pdu_types(stream: bytes) -> list[int]:
    """The types of the (well framed) PDUs in `stream`."""
    types, offset = [], 0
    while offset + 6 <= len(stream):
        types.append(stream[offset])
        offset += 6 + int.from_bytes(stream[offset + 2 : offset + 6])
    return types


@dataclass
class Findings:
    """What went wrong, by kind, with the cases (seed, number, mutation) it happened in."""

    problems: dict[str, list[str]] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, case: str) -> None:
        self.problems.setdefault(kind, []).append(case)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def total(self) -> int:
        return sum(len(cases) for cases in self.problems.values())

    def report(self) -> str:
        return "\n".join(
            f"{kind}: {len(cases)} cases, e.g. {'; '.join(cases[:3])}"
            for kind, cases in self.problems.items()
        )


@pytest.fixture
def thread_crashes(monkeypatch) -> list[str]:
    """Exceptions that escaped any thread while the test ran."""
    crashes: list[str] = []

    def record(args) -> None:  # reported by the test's assertion, not as a warning
        name = args.thread.name if args.thread else "?"
        crashes.append(f"{args.exc_type.__name__}: {args.exc_value} (thread {name})")

    monkeypatch.setattr(threading, "excepthook", record)
    return crashes


@pytest.fixture
def quiet_dicom_logs(caplog):
    # A thousand refused pushes log a thousand warnings; captured, they would count as growth.
    caplog.set_level(logging.CRITICAL, logger="adit.core.dicom")


# --- the receiver (ADIT as acceptor) ----------------------------------------------------------


def receiver_scripts(called_ae: str) -> list[list[bytes]]:
    """Valid exchanges of a pusher with the receiver: C-ECHO, C-STORE in several framings."""
    ds = instances(1)[0]
    request = raw_pdus.associate_rq(
        PUSHER_AE,
        called_ae,
        [
            raw_pdus.storage_context(Verification, ImplicitVRLittleEndian),
            raw_pdus.storage_context(CTImageStorage, ExplicitVRLittleEndian),
        ],
    )
    echo = raw_pdus.dimse_pdus("C_ECHO_RQ", 1, MessageID=1, AffectedSOPClassUID=Verification)

    def store(message_id: int) -> list[bytes]:
        return raw_pdus.dimse_pdus(
            "C_STORE_RQ",
            3,
            max_pdu=1024,
            MessageID=message_id,
            AffectedSOPClassUID=CTImageStorage,
            AffectedSOPInstanceUID=ds.SOPInstanceUID,
            Priority=0,
            DataSet=raw_pdus.encoded(ds),
        )

    release = raw_pdus.release_rq()
    return [
        [request, *echo, release],
        [request, *store(1), release],
        [request, raw_pdus.merged(store(1)), *echo, release],  # several PDVs per PDU
        [request, *raw_pdus.fragmented_command(store(1)), *store(2), release],
    ]


def play_at_receiver(port: int, pdus: list[bytes]) -> tuple[bool, bytes]:
    """Sends `pdus`, half-closes, and reads ADIT's answers; (connection ended, answers)."""
    answers = bytearray()
    with socket.create_connection((LOOPBACK, port), timeout=END_OF_ASSOCIATION_TIMEOUT) as sock:
        try:
            sock.sendall(b"".join(pdus))
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the receiver aborted and closed before all was sent
            pass
        try:
            while chunk := sock.recv(65536):
                answers += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            return False, bytes(answers)
    return True, bytes(answers)


def real_association_works(receiver: Receiver) -> tuple[int, int]:
    """(C-ECHO status, C-STORE status) from a pynetdicom SCU; the store is of an instance no
    C-MOVE asked for, which the receiver reads and refuses with 0x0124."""
    from pynetdicom import AE

    ae = AE(ae_title=PUSHER_AE)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, receiver.store_port, ae_title=receiver.ae_title)
    assert assoc.is_established
    try:
        echo = assoc.send_c_echo()
        store = assoc.send_c_store(instances(1)[0])
        return int(echo.Status), int(store.Status)
    finally:
        assoc.release()


# The phases of an association a case mutates a PDU of: (first, last) index in the script.
NEGOTIATION, DATA_TRANSFER = (0, 0), (1, None)
# A run stops after this many problems: enough to report, and a broken build is not held up by
# a thousand cases each waiting for its timeout.
PROBLEMS_TO_REPORT = 3


@pytest.mark.parametrize(
    "phase, cases",
    [
        pytest.param(
            NEGOTIATION,
            CASES // 2,
            id="negotiation",
        ),
        pytest.param(
            DATA_TRANSFER,
            CASES,
            id="data transfer",
        ),
    ],
)
def test_mutated_pdus_at_the_receiver(phase, cases, tmp_path, thread_crashes, quiet_dicom_logs):
    receiver = Receiver("FUZZ_RECV", 0, 0, tmp_path / "spool", {PUSHER_AE: None}, host=LOOPBACK)
    receiver.start()
    try:
        scripts = receiver_scripts(receiver.ae_title)
        findings = Findings()
        # The valid exchanges are answered (else the mutations would test nothing).
        for script in scripts:
            ended, answers = play_at_receiver(receiver.store_port, script)
            assert ended and answers[0] == 0x02 and answers.endswith(raw_pdus.release_rp())
        threads, descriptors = threading.active_count(), open_descriptors()
        rss_before = rss_bytes()
        started = time.monotonic()
        for case in range(cases):
            if case == 50:  # after warming up (first use of codecs, buffers, ...)
                rss_before = rss_bytes()
            rng = random.Random(f"{SEED}-receiver-{case}")
            mutated = raw_pdus.mutate_script(rng, rng.choice(scripts), *phase)
            name = f"seed {SEED} case {case}: {mutated.describe()}"
            crashes_before = len(thread_crashes)
            ended, answers = play_at_receiver(receiver.store_port, mutated.pdus)
            findings.count("ended" if ended else "open")
            if not ended:
                findings.add("association did not end", name)
            problem = framing_errors(answers, {0x02, 0x03, 0x04, 0x06, 0x07})
            if problem:
                findings.add(f"badly framed answer ({problem})", name)
            if not problem and 0x07 in pdu_types(answers):
                findings.count("aborted")
            time.sleep(0)  # let a dying receiver thread report before the next case
            if len(thread_crashes) > crashes_before:
                findings.add("receiver thread crashed", f"{name}: {thread_crashes[-1]}")
            if findings.total() >= PROBLEMS_TO_REPORT:
                break
        elapsed = time.monotonic() - started
        grown = rss_bytes() - rss_before
        threads_after = wait_for_threads(threads)
        descriptors_after = open_descriptors()
        statuses = real_association_works(receiver)
    finally:
        receiver.stop()

    assert not findings.problems, findings.report()
    assert thread_crashes == [], "\n".join(thread_crashes[:5])
    assert threads_after <= threads, f"{threads_after - threads} threads leaked"
    assert descriptors_after <= descriptors, f"{descriptors_after - descriptors} sockets leaked"
    assert grown < MAX_RSS_GROWTH, f"the receiver grew by {grown / 1024**2:.0f} MB"
    assert statuses == (0x0000, 0x0124)
    # The mutations reached ADIT's checks: many cases were aborted.
    assert findings.outcomes.get("aborted", 0) > cases // 20, findings.outcomes
    assert elapsed < TIME_LIMIT, f"{cases} cases took {elapsed:.0f} s"


# --- the requestor (DimseConnector against a PACS answering with mutated PDUs) ----------------

LOCAL = LocalConfig(
    calling_ae_title="ADIT_FUZZ", timeouts=Timeouts(connection=2, acse=2, dimse=2, network=2)
)
GET_INSTANCES = instances(2)
STORE_INSTANCES = instances(2)
INSTANCES = {"C-FIND": GET_INSTANCES, "C-GET": GET_INSTANCES, "C-STORE": STORE_INSTANCES}


@dataclass
class Played:
    ended: bool
    answers: bytes
    error: str = ""


class FuzzingPacs:
    """A PACS on one thread that answers each association with the PDUs `plan` makes of the
    request it got, half-closes, and reads until ADIT closes the connection."""

    def __init__(self) -> None:
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self.plan: Callable[[bytes], list[bytes]] = lambda request: []
        self.played: list[Played] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, name="fuzzing-pacs", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with sock:
                self.played.append(self._play(sock))

    def _play(self, sock: socket.socket) -> Played:
        sock.settimeout(END_OF_ASSOCIATION_TIMEOUT)
        try:
            request = raw_pdus.read_pdu(sock)
            if request is None:
                return Played(True, b"", "no association request")
            pdus = self.plan(request)
            sock.sendall(b"".join(pdus))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # ADIT closed first (e.g. it aborted on the A-ASSOCIATE-AC)
        except Exception as error:  # noqa: BLE001 - a broken plan is reported by the test
            return Played(True, b"", f"plan failed: {error!r}")
        answers = bytearray()
        try:
            while chunk := sock.recv(65536):
                answers += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            return Played(False, bytes(answers))
        return Played(True, bytes(answers))

    def close(self) -> None:
        self._stop = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()
        self._thread.join(5)


@pytest.fixture
def fuzzing_pacs() -> Iterator[FuzzingPacs]:
    pacs = FuzzingPacs()
    try:
        yield pacs
    finally:
        pacs.close()


def connector(port: int) -> DimseConnector:
    server = ServerConfig(
        name="Fuzzing PACS",
        ae_title="FUZZ_PACS",
        host=LOOPBACK,
        port=port,
        study_root_find_support=True,
        study_root_get_support=True,
        store_scp_support=True,
    )
    return DimseConnector(server, LOCAL)


OPERATIONS: dict[str, Callable[[DimseConnector], int]] = {
    "C-FIND": lambda dimse: len(
        list(dimse.send_c_find(QueryDataset.create(QueryRetrieveLevel="STUDY", PatientID="FUZZ")))
    ),
    "C-GET": lambda dimse: len(
        list(
            dimse.send_c_get(
                QueryDataset.create(
                    QueryRetrieveLevel="STUDY",
                    StudyInstanceUID=str(GET_INSTANCES[0].StudyInstanceUID),
                )
            )
        )
    ),
    "C-STORE": lambda dimse: dimse.send_c_store(STORE_INSTANCES).stored,
}


class Watchdog:
    """Aborts an operation that runs longer than `HANG_TIMEOUT` (and says it hung)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: tuple[float, DimseConnector] | None = None
        self.hung = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fuzz-watchdog", daemon=True)
        self._thread.start()

    def watch(self, dimse: DimseConnector | None) -> None:
        with self._lock:
            self._current = None if dimse is None else (time.monotonic(), dimse)
            self.hung = False

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                if self._current and time.monotonic() - self._current[0] > HANG_TIMEOUT:
                    self.hung = True
                    self._current[1].abort()
                    self._current = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def run_operation(operation: str, port: int, watchdog: Watchdog) -> tuple[str, int | None]:
    """('ok', result) or ('dicom error', None); anything else is named in the outcome."""
    dimse = connector(port)
    watchdog.watch(dimse)
    try:
        return "ok", OPERATIONS[operation](dimse)
    except DicomError:
        return "dicom error", None
    except Exception as error:  # noqa: BLE001 - what the fuzz run looks for
        return f"unexpected {type(error).__name__}: {error}", None
    finally:
        watchdog.watch(None)


@pytest.mark.parametrize(
    "phase, cases",
    [
        pytest.param(
            NEGOTIATION,
            CASES // 2,
            id="negotiation",
        ),
        pytest.param(DATA_TRANSFER, CASES, id="data transfer"),
    ],
)
def test_mutated_pdus_at_the_requestor(
    phase, cases, fuzzing_pacs, thread_crashes, quiet_dicom_logs
):
    answers_by_request: dict[tuple[str, bytes], list[bytes]] = {}

    def valid_answers(operation: str, request: bytes) -> list[bytes]:
        key = (operation, request)
        if key not in answers_by_request:
            answers_by_request[key] = raw_pdus.whole_exchange(
                request, operation, INSTANCES[operation]
            )
        return answers_by_request[key]

    watchdog = Watchdog()
    try:
        # The valid exchanges succeed (else the mutations would test nothing).
        for operation, expected in (("C-FIND", 2), ("C-GET", 2), ("C-STORE", 2)):
            fuzzing_pacs.plan = lambda request, op=operation: valid_answers(op, request)
            assert run_operation(operation, fuzzing_pacs.port, watchdog) == ("ok", expected)
        threads, descriptors = threading.active_count(), open_descriptors()
        findings = Findings()
        rss_before = rss_bytes()
        started = time.monotonic()
        for case in range(cases):
            if case == 50:
                rss_before = rss_bytes()
            rng = random.Random(f"{SEED}-requestor-{case}")
            operation = rng.choice(sorted(OPERATIONS))
            described: list[str] = []

            def plan(request: bytes, operation=operation, rng=rng, described=described):
                mutated = raw_pdus.mutate_script(rng, valid_answers(operation, request), *phase)
                described.append(mutated.describe())
                return mutated.pdus

            fuzzing_pacs.plan = plan
            played_before = len(fuzzing_pacs.played)
            outcome, _ = run_operation(operation, fuzzing_pacs.port, watchdog)
            wait_until(
                lambda before=played_before: len(fuzzing_pacs.played) != before,
                END_OF_ASSOCIATION_TIMEOUT + 1,
                interval=0.001,
                raising=False,
            )
            name = f"seed {SEED} case {case}: {operation}, {' '.join(described) or '-'}"
            findings.count(outcome if not outcome.startswith("unexpected") else "unexpected")
            if watchdog.hung:
                findings.add("hung (aborted by the watchdog)", name)
            if outcome.startswith("unexpected"):
                findings.add(outcome.split(":", 1)[0], f"{name}: {outcome}")
            if len(fuzzing_pacs.played) == played_before:
                findings.add("the PACS saw no association", name)
            else:
                played = fuzzing_pacs.played[-1]
                if played.error:
                    findings.add(played.error, name)
                if not played.ended:
                    findings.add("association did not end", name)
                problem = framing_errors(played.answers, {0x01, 0x04, 0x05, 0x06, 0x07})
                if problem:
                    findings.add(f"badly framed request ({problem})", name)
            if findings.total() >= PROBLEMS_TO_REPORT:
                break
        elapsed = time.monotonic() - started
        grown = rss_bytes() - rss_before
    finally:
        watchdog.stop()
    threads_after = wait_for_threads(threads - 1)  # the watchdog has ended too
    descriptors_after = open_descriptors()

    assert not findings.problems, findings.report()
    assert thread_crashes == [], "\n".join(thread_crashes[:5])
    assert threads_after <= threads - 1, f"{threads_after - threads + 1} threads leaked"
    assert descriptors_after <= descriptors, f"{descriptors_after - descriptors} sockets leaked"
    assert grown < MAX_RSS_GROWTH, f"ADIT grew by {grown / 1024**2:.0f} MB"
    # The mutations reached ADIT's checks: many cases failed with ADIT's own errors.
    assert findings.outcomes.get("dicom error", 0) > cases // 4, findings.outcomes
    assert elapsed < TIME_LIMIT, f"{cases} cases took {elapsed:.0f} s"


# --- what the fuzz run found, one case each ---------------------------------------------------


def with_unknown_first_item(pdu: bytes) -> bytes:
    """An A-ASSOCIATE PDU whose first item (the application context) has type 0x00."""
    offset = raw_pdus.ASSOCIATE_ITEMS_OFFSET
    return pdu[:offset] + b"\x00" + pdu[offset + 1 :]


def test_an_undecodable_association_request_is_aborted(tmp_path, thread_crashes):
    receiver = Receiver("FUZZ_RECV", 0, 0, tmp_path / "spool", {PUSHER_AE: None}, host=LOOPBACK)
    receiver.start()
    try:
        request = receiver_scripts(receiver.ae_title)[0][0]
        ended, answers = play_at_receiver(receiver.store_port, [with_unknown_first_item(request)])
    finally:
        receiver.stop()
    assert thread_crashes == []
    assert ended, "the receiver left the connection open"
    assert pdu_types(answers) == [0x07]  # PS3.8 9.2, AA-1: an invalid PDU is answered A-ABORT


@pytest.mark.parametrize("message", [0, 1], ids=["C-ECHO-RQ", "C-STORE-RQ"])
def test_a_request_with_a_non_ascii_uid_is_answered_not_a_crash(message, tmp_path, thread_crashes):
    receiver = Receiver("FUZZ_RECV", 0, 0, tmp_path / "spool", {PUSHER_AE: None}, host=LOOPBACK)
    receiver.start()
    try:
        script = receiver_scripts(receiver.ae_title)[message]
        command = bytearray(script[1])
        uid_at = command.find(b"1.2.840.10008.")
        command[uid_at + 2] = 0xC3  # "1.\xc3.840...": not even ASCII
        ended, answers = play_at_receiver(
            receiver.store_port, [script[0], bytes(command), *script[2:]]
        )
    finally:
        receiver.stop()
    assert thread_crashes == []
    assert ended
    # Answered with a failure status, or the association aborted: either way, not silence.
    assert pdu_types(answers)[1:2] in ([0x04], [0x07]), pdu_types(answers)


def test_an_undecodable_association_answer_is_a_retriable_dicom_error(fuzzing_pacs):
    def plan(request: bytes) -> list[bytes]:
        answers = raw_pdus.whole_exchange(request, "C-FIND", GET_INSTANCES)
        return [with_unknown_first_item(answers[0])]

    fuzzing_pacs.plan = plan
    with pytest.raises(RetriableDicomError, match="C-FIND on Fuzzing PACS"):
        OPERATIONS["C-FIND"](connector(fuzzing_pacs.port))
