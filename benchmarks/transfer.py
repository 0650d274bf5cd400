"""Benchmark of the whole transfer engine against Orthanc's own C-MOVE, in one run.

Starts two Orthanc instances (A and B, own temporary folders), stores a synthetic study
(`make_large_study`: 5 CT series, 64×64 px) into A, and creates a throwaway database (on the
server of DATABASE_URL, or ADIT's embedded PostgreSQL). Then it moves the study from A to B:

* reference: B asks A for a C-MOVE to B (Orthanc to Orthanc, no ADIT involved);
* ADIT unmodified: a job with one task → the queue → a real `manage.py bg_worker` process →
  `TransferTaskProcessor` (C-GET from A, C-STORE to B, C-FIND check of every instance at B);
* ADIT pseudonymized: the same with a pseudonym (the PS3.15 Basic Profile, ADIT's default, on
  every instance).

B is emptied before each run and checked afterwards to hold every instance. It prints
instances/s per way, the ratio to the reference of the same run, and the worker's memory (RSS
sampled while the job runs, and the process's high-water mark). Run it with::

    uv run python benchmarks/transfer.py [--instances 500] [--rows 64] [--repeat 1]

The wall time of an ADIT run counts from `job.submit()` to the job's final status, so queue
pickup and status bookkeeping are included; the task's own start→end time is printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from adit.core.dicom.testing.peers import OrthancInstance, require_orthanc  # noqa: E402

RECEIVER_AE = "ADIT_RECV"
# What A offers while a transfer goes through the receiver (AE titles are unique, so A's own
# entry is switched for that run).
C_MOVE_ONLY = {
    "study_root_get_support": False,
    "patient_root_get_support": False,
    "dicomweb_root_url": "",
}
PATIENT_ID = "BENCH0001"
PSEUDONYM = "BENCHPSN01"
WORKER_START_TIMEOUT = 60
# A study larger than two of these is made and stored into A a series of this size at a time.
UPLOAD_CHUNK = 500
WAYS = ("unmodified", "pseudonymized", "c-move", "c-move-pseudonymized")


@dataclass
class Measurement:
    label: str
    instances: int
    seconds: float
    task_seconds: float | None = None
    peak_rss: int | None = None
    cpu: str = ""

    @property
    def rate(self) -> float:
        return self.instances / self.seconds if self.seconds > 0 else 0.0


class MemoryWatcher:
    """Samples a process's resident set size in a thread; `peak` is the largest sample."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples: list[tuple[float, int]] = []  # (seconds since start, RSS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
            except Exception:  # the process is gone; keep what we have
                return
            self.peak = max(self.peak, rss)
            self.samples.append((time.monotonic() - started, rss))
            self._stop.wait(self.interval)


class SpoolWatcher:
    """Counts the files in the receiver's spool every `interval` seconds, in a thread."""

    def __init__(self, spool_dir: Path, interval: float = 0.5) -> None:
        self.spool_dir = spool_dir
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (seconds, files, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SpoolWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            files, size = spool_contents(self.spool_dir)
            self.samples.append((time.monotonic() - started, files, size))
            self._stop.wait(self.interval)


class CpuMeter:
    """CPU seconds (user + system) each named process spent within the block: where a run's
    work went on a machine whose cores all take part (Orthanc A and B, worker, receiver)."""

    def __init__(self, processes: dict[str, int | None]) -> None:
        import psutil

        self.processes = {
            name: psutil.Process(pid) for name, pid in processes.items() if pid is not None
        }
        self.seconds: dict[str, float] = {}
        self._start: dict[str, float] = {}

    @staticmethod
    def _cpu(process) -> float:
        try:
            times = process.cpu_times()
        except Exception:  # the process is gone
            return 0.0
        return times.user + times.system

    def __enter__(self) -> CpuMeter:
        self._start = {name: self._cpu(process) for name, process in self.processes.items()}
        return self

    def __exit__(self, *exc_info) -> None:
        for name, process in self.processes.items():
            self.seconds[name] = self._cpu(process) - self._start[name]

    def summary(self) -> str:
        total = sum(self.seconds.values())
        parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in self.seconds.items())
        return f"CPU-s {total:.2f} ({parts})"


def spool_contents(spool_dir: Path) -> tuple[int, int]:
    """(files, bytes) in the receiver's spool; files vanish while they are counted."""
    files = size = 0
    if not spool_dir.exists():
        return 0, 0
    for path in spool_dir.rglob("*"):
        try:
            if path.is_file():
                files += 1
                size += path.stat().st_size
        except OSError:
            pass
    return files, size


def print_timeline(
    worker: MemoryWatcher, receiver: MemoryWatcher | None, spool: SpoolWatcher | None
) -> None:
    """The largest RSS (and spool) in each tenth of a run: flat, or growing with the study?"""
    if not worker.samples:
        return
    end = worker.samples[-1][0] or 1.0
    print(f"    {'time':>13} {'worker RSS':>11} {'receiver RSS':>13} {'spool files':>12}")
    for tenth in range(10):
        low, high = end * tenth / 10, end * (tenth + 1) / 10

        def peak(samples, low=low, high=high):
            inside = [sample[1] for sample in samples if low <= sample[0] <= high]
            return max(inside) if inside else None

        receiver_rss = peak(receiver.samples) if receiver is not None else None
        spooled = peak(spool.samples) if spool is not None else None
        print(
            f"    {low:5.0f}–{high:5.0f} s {mib(peak(worker.samples)):>11} "
            f"{mib(receiver_rss):>13} {'-' if spooled is None else spooled:>12}"
        )


def high_water_mark(pid: int) -> int | None:
    """VmHWM of a live process in bytes (Linux), the peak RSS over its whole life."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 1024**2:.0f} MiB"


class Bench:
    def __init__(self, work_dir: Path, n_instances: int, rows: int, modality: str = "CT") -> None:
        self.n_instances = n_instances
        self.rows = rows
        self.modality = modality
        self.receiver_peak = 0
        self.timeline = False
        self.spool_after: list[tuple[int, int]] = []
        # AE titles differ per size, so a size scaling run's servers never clash in the database.
        self.orthanc_a = OrthancInstance(f"BENCH_A{n_instances}", base_dir=work_dir / "orthanc-a")
        self.orthanc_b = OrthancInstance(f"BENCH_B{n_instances}", base_dir=work_dir / "orthanc-b")
        self.work_dir = work_dir
        self.study_uid = ""
        self.results: list[Measurement] = []
        self.worker = None
        self.receiver = None
        self.idle_rss: int | None = None
        from adit.core.dicom.testing.peers import free_port

        # Worker and receiver read these settings from the environment; A pushes C-MOVEs there.
        self.store_scp_port = free_port()
        self.process_env = {
            # The receiver's spool lives here, so the benchmark can look into it after each move.
            "ADIT_DATA_DIR": str(work_dir / "adit-data"),
            "RECEIVER_AE_TITLE": RECEIVER_AE,
            "STORE_SCP_PORT": str(self.store_scp_port),
            "FILE_TRANSMIT_PORT": str(free_port()),
        }

    # --- peers --------------------------------------------------------------------------------

    def start_peers(self) -> None:
        a, b = self.orthanc_a, self.orthanc_b
        a.modalities[b.ae_title] = b.as_modality
        b.modalities[a.ae_title] = a.as_modality
        a.modalities[RECEIVER_AE] = (RECEIVER_AE, "127.0.0.1", self.store_scp_port)
        a.start()
        b.start()

    def start_receiver(self) -> None:
        """`manage.py receiver` as its own process, as in production."""
        import socket
        import subprocess

        from adit.core.testing.workers import PROJECT_DIR, worker_environment

        log_path = self.work_dir / "receiver.log"
        with open(log_path, "a") as log:
            self.receiver = subprocess.Popen(
                [sys.executable, str(PROJECT_DIR / "manage.py"), "receiver", "--refresh", "1"],
                env=worker_environment(self.process_env),
                cwd=PROJECT_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.receiver.poll() is not None:
                raise SystemExit(f"The receiver exited at start:\n{log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.store_scp_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"The receiver did not listen within {WORKER_START_TIMEOUT} s")

    def stop(self) -> None:
        from adit.core.testing.workers import stop_worker

        if self.worker is not None:
            stop_worker(self.worker)
        if self.receiver is not None:
            self.receiver.terminate()
            try:
                self.receiver.wait(timeout=10)
            except Exception:
                self.receiver.kill()
        self.orthanc_a.stop()
        self.orthanc_b.stop()

    def upload_study(self) -> None:
        from adit.core.dicom.config import LocalConfig
        from adit.core.dicom.dimse import DimseConnector
        from adit.core.dicom.testing.synthetic import make_large_study, make_study

        print(f"Storing a synthetic study of {self.n_instances} instances into A ...", flush=True)
        connector = DimseConnector(
            self.orthanc_a.server_config(), LocalConfig(calling_ae_title="ADIT_BENCH")
        )
        if self.n_instances <= UPLOAD_CHUNK * 2:
            study = make_large_study(
                self.n_instances,
                patient_id=PATIENT_ID,
                rows=self.rows,
                columns=self.rows,
                modality=self.modality,
            )
            self.study_uid = str(study[0].StudyInstanceUID)
            connector.send_c_store(study)
        else:
            # A large study (10,000 CT instances are 5 GB) is made and stored a series of
            # UPLOAD_CHUNK instances at a time, so the benchmark never holds it in memory.
            chunks = -(-self.n_instances // UPLOAD_CHUNK)
            for chunk in range(chunks):
                count = min(UPLOAD_CHUNK, self.n_instances - chunk * UPLOAD_CHUNK)
                series = make_study(
                    PATIENT_ID,
                    "Bench^Mark",
                    series=((self.modality, count),),
                    compressed_series=False,
                    seed=f"adit-benchmark-{chunk}",
                    study_instance_uid=self.study_uid or None,
                    rows=self.rows,
                    columns=self.rows,
                )
                self.study_uid = str(series[0].StudyInstanceUID)
                connector.send_c_store(series)
                del series
        stored = len(self.orthanc_a.study_instance_uids(self.study_uid))
        if stored != self.n_instances:
            raise SystemExit(f"Orthanc A holds {stored} of {self.n_instances} instances")

    def _instances_at_b(self, patient_id: str) -> int:
        found = self.orthanc_b.rest(
            "POST", "/tools/find", json={"Level": "Instance", "Query": {"PatientID": patient_id}}
        ).json()
        return len(found)

    def _clear_b(self) -> None:
        b = self.orthanc_b
        for patient in b.rest("GET", "/patients").json():
            # Deleting thousands of instances takes Orthanc longer than `rest()` waits.
            b.session.delete(f"{b.url}/patients/{patient}", timeout=1800).raise_for_status()
        if self.orthanc_b.rest("GET", "/instances").json():
            raise SystemExit("Orthanc B still holds instances after deleting everything")

    def _check_b(self, label: str, patient_id: str) -> None:
        stored = self._instances_at_b(patient_id)
        if stored != self.n_instances:
            raise SystemExit(f"{label}: Orthanc B holds {stored} of {self.n_instances} instances")

    # --- the ways -----------------------------------------------------------------------------

    def orthanc_c_move(self) -> None:
        """B asks A to C-MOVE the study to B: Orthanc's own speed, the yardstick."""
        self._clear_b()
        a, b = self.orthanc_a, self.orthanc_b
        with self.cpu_meter(worker=False) as cpu:
            started = time.perf_counter()
            # Not `rest()`: its 60 s read timeout is too short for a move of thousands.
            b.session.post(
                f"{b.url}/modalities/{a.ae_title}/move",
                json={
                    "Level": "Study",
                    "Resources": [{"StudyInstanceUID": self.study_uid}],
                    "TargetAet": b.ae_title,
                    "Synchronous": True,
                    "Timeout": 3600,
                },
                timeout=3600,
            ).raise_for_status()
            seconds = time.perf_counter() - started
        label = "Orthanc C-MOVE A → B (reference)"
        self._record(Measurement(label, self.n_instances, seconds, cpu=cpu.summary()))
        self._check_b(label, PATIENT_ID)

    def cpu_meter(self, worker: bool = True, receiver: bool = False) -> CpuMeter:
        def pid(process) -> int | None:
            return process.pid if process is not None else None

        processes = {
            "Orthanc A": pid(self.orthanc_a.process),
            "Orthanc B": pid(self.orthanc_b.process),
        }
        if worker:
            processes["worker"] = pid(self.worker)
        if receiver:
            processes["receiver"] = pid(self.receiver)
        return CpuMeter(processes)

    def start_worker(self) -> None:
        from django.db import connection

        from adit.core.testing.workers import start_worker

        log_path = self.work_dir / "worker.log"
        self.worker = start_worker("dicom", env=self.process_env, log_path=log_path)
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.worker.poll() is not None:
                raise SystemExit(f"The worker exited at start:\n{log_path.read_text()}")
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM procrastinate_workers")
                row = cursor.fetchone()
            if row and row[0]:
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"The worker did not start within {WORKER_START_TIMEOUT} s")
        time.sleep(0.5)  # let it settle (periodic task deferral at start)
        self.idle_rss = MemoryWatcher(self.worker.pid).process.memory_info().rss

    def adit_transfer(self, pseudonymized: bool, timeout: float, via_c_move: bool = False) -> None:
        from adit.core.models import DicomServer

        assert self.worker is not None
        kind = "pseudonymized" if pseudonymized else "unmodified"
        label = (
            f"ADIT engine A → B via C-MOVE, {kind}" if via_c_move else f"ADIT engine A → B, {kind}"
        )
        source = DicomServer.objects.get(ae_title=self.orthanc_a.ae_title)
        if via_c_move:
            assert self.receiver is not None
            with (
                using_only_c_move(source),
                MemoryWatcher(self.receiver.pid) as receiver_memory,
                SpoolWatcher(self.spool_dir) as spool,
            ):
                self._run_job(label, source, pseudonymized, timeout, receiver_memory, spool)
            self.receiver_peak = max(self.receiver_peak, receiver_memory.peak)
            if spool.samples:
                most = max(sample[1] for sample in spool.samples)
                print(f"    receiver spool at most {most} files during the move")
            self.report_spool()
        else:
            self._run_job(label, source, pseudonymized, timeout)

    @property
    def spool_dir(self) -> Path:
        return self.work_dir / "adit-data" / "receiver-spool"

    def report_spool(self) -> None:
        """What the receiver still holds once the move ended (it should be nothing)."""
        files, size = spool_contents(self.spool_dir)
        self.spool_after.append((files, size))
        print(f"    receiver spool after the move: {files} files, {mib(size)}", flush=True)

    def _run_job(
        self,
        label: str,
        source,
        pseudonymized: bool,
        timeout: float,
        receiver_memory: MemoryWatcher | None = None,
        spool: SpoolWatcher | None = None,
    ) -> None:
        from adit.accounts.models import User
        from adit.core.models import DicomJob, DicomServer
        from adit.core.tests.example_app.models import ExampleTransferJob, ExampleTransferTask

        assert self.worker is not None
        self._clear_b()
        owner, _ = User.objects.get_or_create(username="benchmark")
        job = ExampleTransferJob.objects.create(owner=owner)
        ExampleTransferTask.objects.create(
            job=job,
            source=source,
            destination=DicomServer.objects.get(ae_title=self.orthanc_b.ae_title),
            patient_id=PATIENT_ID,
            study_uid=self.study_uid,
            pseudonym=PSEUDONYM if pseudonymized else "",
        )
        with (
            MemoryWatcher(self.worker.pid) as memory,
            self.cpu_meter(receiver=receiver_memory is not None) as cpu,
        ):
            started = time.perf_counter()
            job.submit(by_staff=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                status = ExampleTransferJob.objects.values_list("status", flat=True).get(pk=job.pk)
                if status in DicomJob.FINAL_STATUSES:
                    break
                time.sleep(0.02)
            else:
                raise SystemExit(f"{label}: the job did not finish within {timeout} s")
            seconds = time.perf_counter() - started
        if self.timeline:
            print_timeline(memory, receiver_memory, spool)
        task = job.tasks.get()
        if status != DicomJob.Status.SUCCESS:
            raise SystemExit(f"{label}: the job ended {status}: {task.message}\n{task.log}")
        task_seconds = (task.end - task.start).total_seconds() if task.start and task.end else None
        if task.attempts > 1:
            print(f"  ! {label}: needed {task.attempts} attempts:\n{task.log}", flush=True)
        self._record(
            Measurement(
                label, self.n_instances, seconds, task_seconds, memory.peak, cpu=cpu.summary()
            )
        )
        self._check_b(label, PSEUDONYM if pseudonymized else PATIENT_ID)

    def _record(self, measurement: Measurement) -> None:
        self.results.append(measurement)
        extra = ""
        if measurement.task_seconds is not None:
            extra += f", task itself {measurement.task_seconds:.2f} s"
        if measurement.peak_rss is not None:
            extra += f", worker peak RSS {mib(measurement.peak_rss)}"
        print(
            f"  {measurement.label}: {measurement.seconds:.2f} s, "
            f"{measurement.rate:.0f} instances/s{extra}",
            flush=True,
        )
        if measurement.cpu:
            print(f"    {measurement.cpu}", flush=True)

    # --- report -------------------------------------------------------------------------------

    def report(self) -> None:
        best: dict[str, Measurement] = {}
        for measurement in self.results:
            current = best.get(measurement.label)
            if current is None or measurement.seconds < current.seconds:
                best[measurement.label] = measurement
        reference = next(m for label, m in best.items() if "reference" in label)
        print(f"\nBest of each ({self.n_instances} instances, {self.rows}×{self.rows} px):")
        print(f"  {'way':<44} {'inst/s':>8} {'ratio':>7} {'task inst/s':>12} {'peak RSS':>10}")
        for label, measurement in best.items():
            ratio = measurement.rate / reference.rate if reference.rate else 0.0
            task_rate = (
                f"{self.n_instances / measurement.task_seconds:.0f}"
                if measurement.task_seconds
                else "-"
            )
            rss = mib(measurement.peak_rss) if measurement.peak_rss else "-"
            print(f"  {label:<44} {measurement.rate:>8.0f} {ratio:>7.2f} {task_rate:>12} {rss:>10}")
        assert self.worker is not None
        print(
            f"\nWorker memory: {mib(self.idle_rss)} when idle, high-water mark "
            f"{mib(high_water_mark(self.worker.pid))} over its whole life."
        )
        if self.receiver_peak:
            print(f"Receiver peak RSS during the moves through it: {mib(self.receiver_peak)}.")
        if self.spool_after:
            files, size = max(self.spool_after)
            print(f"Receiver spool after the moves: at most {files} files, {mib(size)}.")
        load = os.getloadavg()
        print(f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


class SmallStudiesBench(Bench):
    """Many small studies (CR/DX cohorts): N studies of a few instances, one task per study.

    The reference is Orthanc's own C-MOVE of all N studies (one request naming them all, which
    Orthanc sends as one C-MOVE per study). ADIT's line is a batch transfer job of N tasks
    through the queue and one real `manage.py bg_worker`; what it takes beyond Orthanc's time,
    divided by N, is the per-task overhead.
    """

    def __init__(
        self, work_dir: Path, n_studies: int, per_study: int, rows: int, modality: str
    ) -> None:
        super().__init__(work_dir, n_studies * per_study, rows, modality)
        self.n_studies = n_studies
        self.per_study = per_study
        self.studies: list[tuple[str, str]] = []  # (PatientID, StudyInstanceUID)
        self.task_seconds: dict[str, list[float]] = {}

    def upload_study(self) -> None:
        from adit.core.dicom.config import LocalConfig
        from adit.core.dicom.dimse import DimseConnector
        from adit.core.dicom.testing.synthetic import make_study

        print(
            f"Storing {self.n_studies} studies × {self.per_study} instances into A ...", flush=True
        )
        datasets = []
        for number in range(self.n_studies):
            study = make_study(
                f"SMALL{number:05d}",
                f"Small^Study{number}",
                series=((self.modality, self.per_study),),
                compressed_series=False,
                seed=f"adit-small-{number}",
                rows=self.rows,
                columns=self.rows,
            )
            self.studies.append((str(study[0].PatientID), str(study[0].StudyInstanceUID)))
            datasets += study
        config = self.orthanc_a.server_config()
        DimseConnector(config, LocalConfig(calling_ae_title="ADIT_BENCH")).send_c_store(datasets)
        stored = len(self.orthanc_a.rest("GET", "/instances").json())
        if stored != self.n_instances:
            raise SystemExit(f"Orthanc A holds {stored} of {self.n_instances} instances")

    def _check_b(self, label: str, patient_id: str) -> None:
        stored = len(self.orthanc_b.rest("GET", "/instances").json())
        if stored != self.n_instances:
            raise SystemExit(f"{label}: Orthanc B holds {stored} of {self.n_instances} instances")

    def orthanc_c_move(self) -> None:
        self._clear_b()
        a, b = self.orthanc_a, self.orthanc_b
        started = time.perf_counter()
        b.rest(
            "POST",
            f"/modalities/{a.ae_title}/move",
            json={
                "Level": "Study",
                "Resources": [{"StudyInstanceUID": uid} for _, uid in self.studies],
                "TargetAet": b.ae_title,
                "Synchronous": True,
                "Timeout": 600,
            },
        )
        label = f"Orthanc C-MOVE A → B, {self.n_studies} studies (reference)"
        self._record(Measurement(label, self.n_instances, time.perf_counter() - started))
        self._check_b(label, "")

    def _run_job(
        self,
        label: str,
        source,
        pseudonymized: bool,
        timeout: float,
        receiver_memory: MemoryWatcher | None = None,
        spool: SpoolWatcher | None = None,
    ) -> None:
        from adit.accounts.models import User
        from adit.batch_transfer.models import BatchTransferJob, create_batch_transfer_job
        from adit.batch_transfer.parsers import StudyRequest
        from adit.core.models import DicomJob, DicomServer

        assert self.worker is not None
        label = f"ADIT batch job of {self.n_studies} tasks" + (
            " via C-MOVE" if "C-MOVE" in label else ""
        )
        self._clear_b()
        owner, _ = User.objects.get_or_create(username="benchmark", defaults={"is_staff": True})
        requests = [
            StudyRequest(patient_id=patient_id, study_uid=study_uid, pseudonym="", lines=[n + 2])
            for n, (patient_id, study_uid) in enumerate(self.studies)
        ]
        destination = DicomServer.objects.get(ae_title=self.orthanc_b.ae_title)
        with MemoryWatcher(self.worker.pid) as memory:
            started = time.perf_counter()
            job = create_batch_transfer_job(
                owner, source, destination, requests, project_name="Bench", project_description="-"
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                status = BatchTransferJob.objects.values_list("status", flat=True).get(pk=job.pk)
                if status in DicomJob.FINAL_STATUSES:
                    break
                time.sleep(0.02)
            else:
                raise SystemExit(f"{label}: the job did not finish within {timeout} s")
            seconds = time.perf_counter() - started
        if status != DicomJob.Status.SUCCESS:
            failed = job.tasks.exclude(status="SU").first()
            detail = f"{failed.message}\n{failed.log}" if failed else ""
            raise SystemExit(f"{label}: the job ended {status}: {detail}")
        durations = [
            (task.end - task.start).total_seconds() for task in job.tasks.all() if task.start
        ]
        self.task_seconds[label] = durations
        self._record(Measurement(label, self.n_instances, seconds, sum(durations), memory.peak))
        self._check_b(label, "")

    def report(self) -> None:
        super().report()
        reference = min(
            (m for m in self.results if "reference" in m.label), key=lambda m: m.seconds
        )
        print(f"\nPer task ({self.n_studies} studies × {self.per_study} instances):")
        for label, durations in self.task_seconds.items():
            best = min((m for m in self.results if m.label == label), key=lambda m: m.seconds)
            overhead = (best.seconds - reference.seconds) / self.n_studies * 1000
            mean = sum(durations) / len(durations) * 1000 if durations else 0.0
            print(
                f"  {label:<44} wall beyond Orthanc {overhead:>6.0f} ms/task, "
                f"task start→end mean {mean:>6.0f} ms"
            )


DATA = {
    # name: (modality, rows = columns); 16-bit pixels in all of them
    "ct": ("CT", 512),  # 0.5 MB per instance, what a CT series holds
    "mr": ("MR", 256),
    "cr": ("CR", 512),  # the many-small-studies default (a CR/DX cohort, kept small in size)
    "tiny": ("CT", 64),  # the old default: shows per-instance overhead, not throughput
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--scenario",
        choices=["study", "small-studies"],
        default="study",
        help="one large study (default), or many small studies as a batch job",
    )
    parser.add_argument(
        "--instances",
        default="500",
        help="instances of the study; a comma list (100,500,1500) runs a size scaling",
    )
    parser.add_argument("--data", choices=sorted(DATA), default=None, help="realistic data")
    parser.add_argument("--rows", type=int, default=None, help="image size N: N×N pixels")
    parser.add_argument("--studies", type=int, default=100, help="small-studies: how many")
    parser.add_argument("--per-study", type=int, default=3, help="small-studies: instances")
    parser.add_argument(
        "--ways",
        default="unmodified,pseudonymized,c-move",
        help=f"study scenario: which ADIT ways to run ({', '.join(WAYS)})",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print worker and receiver RSS and the spool's files per tenth of each run",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best one counts")
    parser.add_argument("--timeout", type=float, default=600, help="per transfer, seconds")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (worker log, Orthanc logs)"
    )
    args = parser.parse_args(argv)
    sizes = [int(part) for part in args.instances.split(",") if part.strip()]
    ways = {part.strip() for part in args.ways.split(",") if part.strip()}
    unknown = ways - set(WAYS)
    if unknown or not sizes or min(sizes) < 1:
        parser.error(f"bad --instances or --ways ({', '.join(sorted(unknown))})")
    data = args.data or ("cr" if args.scenario == "small-studies" else "tiny")
    modality, rows = DATA[data]
    rows = args.rows or rows

    require_orthanc_or_exit()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adit.settings.test")
    import django

    django.setup()
    from django.test.utils import (  # pyright: ignore[reportAttributeAccessIssue]
        setup_databases,
        setup_test_environment,
        teardown_databases,  # pyright: ignore[reportAttributeAccessIssue]
    )

    setup_test_environment()
    print("Creating a throwaway database ...", flush=True)
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        if args.scenario == "small-studies":
            sizes = [args.studies * args.per_study]
        for size in sizes:
            work_dir = Path(tempfile.mkdtemp(prefix="adit-transfer-bench-"))
            if args.keep:
                print(f"Work folder (kept): {work_dir}")
            if args.scenario == "small-studies":
                bench: Bench = SmallStudiesBench(
                    work_dir, args.studies, args.per_study, rows, modality
                )
            else:
                bench = Bench(work_dir, size, rows, modality)
            bench.timeline = args.timeline
            print(f"\n=== {size} instances, {modality} {rows}×{rows} ===", flush=True)
            try:
                run_bench(bench, args, ways)
            finally:
                bench.stop()
                if not args.keep:
                    shutil.rmtree(work_dir, ignore_errors=True)
    finally:
        from django.db import connections

        connections.close_all()
        teardown_databases(old_config, verbosity=0)
    return 0


def run_bench(bench: Bench, args, ways: set[str]) -> None:
    """Orthanc runs right before each ADIT way (the paired design): the ratio of each way is
    taken against the best reference of the run."""
    print("Starting Orthanc A and B ...", flush=True)
    bench.start_peers()
    bench.upload_study()
    create_servers(bench)
    bench.start_receiver()
    bench.start_worker()
    print("Runs (B is emptied before each):", flush=True)
    for _ in range(max(1, args.repeat)):
        if isinstance(bench, SmallStudiesBench):
            bench.orthanc_c_move()
            bench.adit_transfer(pseudonymized=False, timeout=args.timeout)
            bench.orthanc_c_move()
            if "c-move" in ways:
                bench.adit_transfer(pseudonymized=False, timeout=args.timeout, via_c_move=True)
                bench.orthanc_c_move()
            continue
        bench.orthanc_c_move()
        if "unmodified" in ways:
            bench.adit_transfer(pseudonymized=False, timeout=args.timeout)
            bench.orthanc_c_move()
        if "pseudonymized" in ways:
            bench.adit_transfer(pseudonymized=True, timeout=args.timeout)
            bench.orthanc_c_move()
        if "c-move" in ways:
            bench.adit_transfer(pseudonymized=False, timeout=args.timeout, via_c_move=True)
            bench.orthanc_c_move()
        if "c-move-pseudonymized" in ways:
            bench.adit_transfer(pseudonymized=True, timeout=args.timeout, via_c_move=True)
            bench.orthanc_c_move()
    bench.report()


def require_orthanc_or_exit() -> None:
    try:
        require_orthanc()
    except BaseException as error:  # pytest's skip outside of pytest
        raise SystemExit(f"Orthanc is needed: {error}") from None


@contextlib.contextmanager
def using_only_c_move(server):
    """Switches a DicomServer row to C-MOVE only for the block, then back."""
    saved = {field: getattr(server, field) for field in C_MOVE_ONLY}
    for field, value in C_MOVE_ONLY.items():
        setattr(server, field, value)
    server.save()
    try:
        yield
    finally:
        for field, value in saved.items():
            setattr(server, field, value)
        server.save()


def create_servers(bench: Bench) -> None:
    import dataclasses

    from adit.core.models import DicomServer

    for orthanc in (bench.orthanc_a, bench.orthanc_b):
        DicomServer.objects.create(**dataclasses.asdict(orthanc.server_config()))


if __name__ == "__main__":
    raise SystemExit(main())
