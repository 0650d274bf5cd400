"""Benchmark of ADIT's DICOM layer against Orthanc's own C-MOVE, all in one run.

Starts two Orthanc instances (A and B, own temporary folders) and ADIT's receiver in-process,
uploads a synthetic study to A, then moves it from A to B in several ways and prints
instances/s per way and the ratio to Orthanc's own C-MOVE A→B measured in the same run:

* reference: B asks A for a C-MOVE to B (Orthanc pushes to Orthanc, no ADIT involved);
* ADIT: fetch from A with C-GET, C-MOVE through the receiver, or WADO-RS, and store each
  instance into B as it arrives (C-STORE on one association; STOW-RS as an extra line);
* fetch only (instances into memory), to tell fetch and store costs apart.

The study is deleted from B between runs and every run is checked to have delivered every
instance. Run it with::

    uv run python benchmarks/dicom_layer.py [--instances 500] [--rows 64] [--repeat 1]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from adit.core.dicom.config import LocalConfig, ServerConfig, Timeouts  # noqa: E402
from adit.core.dicom.dimse import DimseConnector  # noqa: E402
from adit.core.dicom.operator import DicomOperator  # noqa: E402
from adit.core.dicom.testing.peers import (  # noqa: E402
    LOOPBACK,
    ORTHANC_BINARY,
    ORTHANC_DICOMWEB_PLUGIN,
    OrthancInstance,
)
from adit.core.dicom.testing.synthetic import make_large_study  # noqa: E402

CALLING_AE = "ADIT_BENCH"
RECEIVER_AE = "BENCH_RECV"
PATIENT_ID = "BENCH0001"


@dataclass
class Measurement:
    label: str
    instances: int
    seconds: float | None
    note: str = ""
    # CPU seconds of this process (ADIT, with the in-process receiver; Orthanc not counted):
    # far steadier than wall time on a shared machine, so it tells ADIT's own cost apart.
    cpu_seconds: float | None = None

    @property
    def rate(self) -> float | None:
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.instances / self.seconds


def _process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Bench:
    def __init__(
        self, work_dir: Path, n_instances: int, rows: int, timeout: float, only: str = ""
    ) -> None:
        self.only = only.lower()
        self.work_dir = work_dir
        self.n_instances = n_instances
        self.rows = rows
        self.receiver = None
        self.receiver_note = ""
        self.orthanc_a = OrthancInstance("BENCH_A", base_dir=work_dir / "orthanc-a")
        self.orthanc_b = OrthancInstance("BENCH_B", base_dir=work_dir / "orthanc-b")
        self.local = LocalConfig(
            calling_ae_title=CALLING_AE,
            receiver_ae_title=RECEIVER_AE,
            file_transmit_host=LOOPBACK,
            timeouts=Timeouts(connection=10, acse=30, dimse=timeout, network=timeout, http=timeout),
        )
        self.study_uid = ""
        self.results: list[Measurement] = []
        self._cpu_started = 0.0

    # --- set-up -------------------------------------------------------------------------------

    def start(self) -> None:
        self._start_receiver()
        a, b = self.orthanc_a, self.orthanc_b
        a.modalities[b.ae_title] = b.as_modality
        b.modalities[a.ae_title] = a.as_modality
        if self.receiver is not None:
            a.modalities[RECEIVER_AE] = (RECEIVER_AE, LOOPBACK, self.receiver.store_port)
        a.start()
        b.start()

    def _start_receiver(self) -> None:
        try:
            from adit.core.dicom.move import ReceiverMoveFetcher  # noqa: F401
            from adit.core.dicom.receiver import Receiver
        except ImportError as error:
            self.receiver_note = f"receiver not usable ({error})"
            return
        try:
            receiver = Receiver(
                RECEIVER_AE,
                0,
                0,
                self.work_dir / "receiver-spool",
                [self.orthanc_a.ae_title],
                host=LOOPBACK,
            )
            receiver.start()
        except Exception as error:  # report and go on without the C-MOVE line
            self.receiver_note = f"receiver did not start ({error})"
            return
        self.receiver = receiver

    def stop(self) -> None:
        self.orthanc_a.stop()
        self.orthanc_b.stop()
        if self.receiver is not None:
            self.receiver.stop()

    def upload_study(self) -> None:
        print(f"Generating a synthetic study of {self.n_instances} instances...", flush=True)
        study = make_large_study(
            self.n_instances, patient_id=PATIENT_ID, rows=self.rows, columns=self.rows
        )
        self.study_uid = str(study[0].StudyInstanceUID)
        source = self.orthanc_a.server_config()
        started = self._start()
        DimseConnector(source, self.local).send_c_store(study)
        self._record("C-STORE ADIT → A (set-up upload)", self.n_instances, started)
        stored = len(self.orthanc_a.study_instance_uids(self.study_uid))
        if stored != self.n_instances:
            raise SystemExit(f"Orthanc A holds {stored} of {self.n_instances} instances")

    # --- configurations forcing one method ----------------------------------------------------

    def source(self, method: str) -> ServerConfig:
        """Orthanc A with only the retrieve method under test enabled (C-FIND stays on)."""
        off: dict[str, bool] = dict(
            patient_root_get_support=False,
            study_root_get_support=False,
            patient_root_move_support=False,
            study_root_move_support=False,
            dicomweb_wado_support=False,
        )
        enabled: dict[str, bool] = {
            "C-GET": {"study_root_get_support": True},
            "C-MOVE": {"study_root_move_support": True},
            "WADO-RS": {"dicomweb_wado_support": True},
        }[method]
        return self.orthanc_a.server_config(None, **{**off, **enabled})

    def destination(self, method: str) -> ServerConfig:
        if method == "C-STORE":
            return self.orthanc_b.server_config(dicomweb_stow_support=False)
        return self.orthanc_b.server_config(store_scp_support=False)

    def operator(self, method: str) -> DicomOperator:
        fetcher = None
        if method == "C-MOVE":
            from adit.core.dicom.move import ReceiverMoveFetcher

            assert self.receiver is not None
            fetcher = ReceiverMoveFetcher(
                host=LOOPBACK, port=self.receiver.transmit_port, inactivity_timeout=60
            )
        operator = DicomOperator(self.source(method), self.local, move_fetcher=fetcher)
        # Orthanc A has no association limit here: C-GET may list the study beside itself.
        operator.side_association = lambda: contextlib.nullcontext(True)
        return operator

    # --- runs ---------------------------------------------------------------------------------

    def _start(self) -> float:
        self._cpu_started = _process_cpu_seconds()
        return time.perf_counter()

    def _record(self, label: str, instances: int, started: float, note: str = "") -> Measurement:
        seconds = time.perf_counter() - started
        cpu = _process_cpu_seconds() - self._cpu_started
        measurement = Measurement(label, instances, seconds, note, cpu)
        self.results.append(measurement)
        rate = measurement.rate or 0.0
        print(f"  {label:<44} {measurement.seconds:7.2f} s  {rate:8.1f} inst/s", flush=True)
        return measurement

    def _skip(self, label: str, note: str) -> None:
        self.results.append(Measurement(label, 0, None, note))
        print(f"  {label:<44} skipped: {note}", flush=True)

    def _clear_b(self) -> None:
        self.orthanc_b.delete_study(self.study_uid)
        if self.orthanc_b.study_instance_uids(self.study_uid):
            raise SystemExit("Orthanc B still holds the study after deleting it")

    def _check_b(self, label: str) -> None:
        stored = len(self.orthanc_b.study_instance_uids(self.study_uid))
        if stored != self.n_instances:
            raise SystemExit(f"{label}: Orthanc B holds {stored} of {self.n_instances} instances")

    def orthanc_c_move(self) -> Measurement:
        """B asks A to C-MOVE the study to B: Orthanc's own speed, the yardstick."""
        self._clear_b()
        a, b = self.orthanc_a, self.orthanc_b
        started = self._start()
        b.rest(
            "POST",
            f"/modalities/{a.ae_title}/move",
            json={
                "Level": "Study",
                "Resources": [{"StudyInstanceUID": self.study_uid}],
                "TargetAet": b.ae_title,
                "Synchronous": True,
                "Timeout": 600,
            },
        )
        measurement = self._record("Orthanc C-MOVE A → B (reference)", self.n_instances, started)
        self._check_b(measurement.label)
        return measurement

    def _selected(self, label: str) -> bool:
        return not self.only or self.only in label.lower()

    def fetch_only(self, method: str) -> None:
        label = f"fetch {method} from A (into memory)"
        if not self._selected(label):
            return
        if method == "C-MOVE" and self.receiver is None:
            self._skip(label, self.receiver_note)
            return
        operator = self.operator(method)
        started = self._start()
        count = sum(1 for _ in operator.fetch_study(PATIENT_ID, self.study_uid))
        self._record(label, count, started)
        if count != self.n_instances:
            raise SystemExit(f"{label}: got {count} of {self.n_instances} instances")

    def transfer(self, fetch_method: str, store_method: str) -> None:
        label = f"ADIT {fetch_method} A → {store_method} B"
        if not self._selected(label):
            return
        if fetch_method == "C-MOVE" and self.receiver is None:
            self._skip(label, self.receiver_note)
            return
        self._clear_b()
        source = self.operator(fetch_method)
        destination = DicomOperator(self.destination(store_method), self.local)
        started = self._start()
        stored = destination.upload(source.fetch_study(PATIENT_ID, self.study_uid), unchanged=True)
        self._record(label, stored, started)
        self._check_b(label)

    def run(self, repeat: int) -> None:
        print("Runs (each moves the whole study; B is emptied before each transfer):", flush=True)
        for round_number in range(repeat):
            if repeat > 1:
                print(f" round {round_number + 1}/{repeat}", flush=True)
            self.orthanc_c_move()
            for method in ("C-GET", "C-MOVE", "WADO-RS"):
                self.transfer(method, "C-STORE")
            self.transfer("WADO-RS", "STOW-RS")
            self.transfer("C-GET", "STOW-RS")
            for method in ("C-GET", "C-MOVE", "WADO-RS"):
                self.fetch_only(method)

    # --- report -------------------------------------------------------------------------------

    def report(self) -> None:
        reference = _best(m for m in self.results if m.label.startswith("Orthanc C-MOVE"))
        print()
        print(f"Summary ({self.n_instances} instances of {self.rows}x{self.rows} px, best run)")
        print(f"  {'way':<44} {'inst/s':>8}  {'vs Orthanc C-MOVE':>17}  {'ADIT CPU s (min)':>16}")
        labels = list(dict.fromkeys(m.label for m in self.results))
        for label in labels:
            runs = [m for m in self.results if m.label == label]
            best = _best(runs)
            if best is None:
                note = next((m.note for m in runs if m.note), "no result")
                print(f"  {label:<44} {'-':>8}  {'-':>17}  ({note})")
                continue
            ratio = ""
            if reference is not None and reference.rate and best.rate:
                ratio = f"{best.rate / reference.rate:.2f}x"
            cpu_values = [m.cpu_seconds for m in runs if m.cpu_seconds is not None]
            cpu = "-" if label.startswith("Orthanc") or not cpu_values else f"{min(cpu_values):.2f}"
            print(f"  {label:<44} {best.rate or 0:8.1f}  {ratio:>17}  {cpu:>16}")


def _best(measurements: Iterable[Measurement]) -> Measurement | None:
    timed = [m for m in measurements if m.rate is not None]
    return max(timed, key=lambda m: m.rate or 0.0, default=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=500, help="Study size (default 500).")
    parser.add_argument("--rows", type=int, default=64, help="Image rows/columns (default 64).")
    parser.add_argument("--repeat", type=int, default=1, help="Rounds of all runs (default 1).")
    parser.add_argument("--timeout", type=float, default=120.0, help="Network timeout (s).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder.")
    parser.add_argument(
        "--only",
        default="",
        help="Run only the ways whose label contains this text, e.g. 'fetch C-MOVE' "
        "(the Orthanc reference always runs).",
    )
    args = parser.parse_args(argv)
    if args.instances < 1 or args.repeat < 1 or args.rows < 1:
        parser.error("--instances, --rows and --repeat must be at least 1")
    for path, what in ((ORTHANC_BINARY, "Orthanc"), (ORTHANC_DICOMWEB_PLUGIN, "its DICOMweb")):
        if not Path(path).is_file():
            print(f"{what} not found at {path}; install Debian's orthanc and orthanc-dicomweb.")
            return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)

    work_dir = Path(tempfile.mkdtemp(prefix="adit-bench-"))
    bench = Bench(work_dir, args.instances, args.rows, args.timeout, args.only)
    try:
        bench.start()
        if bench.receiver_note:
            print(f"Note: C-MOVE through the receiver is skipped: {bench.receiver_note}")
        bench.upload_study()
        bench.run(args.repeat)
        bench.report()
    finally:
        bench.stop()
        if args.keep:
            print(f"Kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
