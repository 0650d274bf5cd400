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


@dataclass
class Measurement:
    label: str
    instances: int
    seconds: float
    task_seconds: float | None = None
    peak_rss: int | None = None

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
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except Exception:  # the process is gone; keep what we have
                return
            self._stop.wait(self.interval)


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
    def __init__(self, work_dir: Path, n_instances: int, rows: int) -> None:
        self.n_instances = n_instances
        self.rows = rows
        self.orthanc_a = OrthancInstance("BENCH_A", base_dir=work_dir / "orthanc-a")
        self.orthanc_b = OrthancInstance("BENCH_B", base_dir=work_dir / "orthanc-b")
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
        from adit.core.dicom.testing.synthetic import make_large_study

        print(f"Storing a synthetic study of {self.n_instances} instances into A ...", flush=True)
        study = make_large_study(
            self.n_instances, patient_id=PATIENT_ID, rows=self.rows, columns=self.rows
        )
        self.study_uid = str(study[0].StudyInstanceUID)
        config = self.orthanc_a.server_config()
        DimseConnector(config, LocalConfig(calling_ae_title="ADIT_BENCH")).send_c_store(study)
        stored = len(self.orthanc_a.study_instance_uids(self.study_uid))
        if stored != self.n_instances:
            raise SystemExit(f"Orthanc A holds {stored} of {self.n_instances} instances")

    def _instances_at_b(self, patient_id: str) -> int:
        found = self.orthanc_b.rest(
            "POST", "/tools/find", json={"Level": "Instance", "Query": {"PatientID": patient_id}}
        ).json()
        return len(found)

    def _clear_b(self) -> None:
        self.orthanc_b.reset()
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
        started = time.perf_counter()
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
        label = "Orthanc C-MOVE A → B (reference)"
        self._record(Measurement(label, self.n_instances, time.perf_counter() - started))
        self._check_b(label, PATIENT_ID)

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
        label = "ADIT engine A → B, " + ("pseudonymized" if pseudonymized else "unmodified")
        if via_c_move:
            label = "ADIT engine A → B via C-MOVE, unmodified"
        source = DicomServer.objects.get(ae_title=self.orthanc_a.ae_title)
        if via_c_move:
            with using_only_c_move(source):
                self._run_job(label, source, pseudonymized, timeout)
        else:
            self._run_job(label, source, pseudonymized, timeout)

    def _run_job(self, label: str, source, pseudonymized: bool, timeout: float) -> None:
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
        with MemoryWatcher(self.worker.pid) as memory:
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
        task = job.tasks.get()
        if status != DicomJob.Status.SUCCESS:
            raise SystemExit(f"{label}: the job ended {status}: {task.message}\n{task.log}")
        task_seconds = (task.end - task.start).total_seconds() if task.start and task.end else None
        if task.attempts > 1:
            print(f"  ! {label}: needed {task.attempts} attempts:\n{task.log}", flush=True)
        self._record(Measurement(label, self.n_instances, seconds, task_seconds, memory.peak))
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
        print("Aims: ratio ≥ 0.8 unmodified, ≥ 0.6 pseudonymized.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rows", type=int, default=64, help="image size (rows = columns)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best one counts")
    parser.add_argument("--timeout", type=float, default=600, help="per transfer, seconds")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (worker log, Orthanc logs)"
    )
    args = parser.parse_args(argv)

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
    work_dir = Path(tempfile.mkdtemp(prefix="adit-transfer-bench-"))
    if args.keep:
        print(f"Work folder (kept): {work_dir}")
    bench = Bench(work_dir, args.instances, args.rows)
    print("Creating a throwaway database and starting Orthanc A and B ...", flush=True)
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        bench.start_peers()
        bench.upload_study()
        create_servers(bench)
        bench.start_receiver()
        bench.start_worker()
        print("Runs (B is emptied before each):", flush=True)
        for _ in range(max(1, args.repeat)):
            bench.orthanc_c_move()
            bench.adit_transfer(pseudonymized=False, timeout=args.timeout)
            bench.adit_transfer(pseudonymized=True, timeout=args.timeout)
            bench.adit_transfer(pseudonymized=False, timeout=args.timeout, via_c_move=True)
        bench.report()
    finally:
        bench.stop()
        from django.db import connections

        connections.close_all()
        teardown_databases(old_config, verbosity=0)
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


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
