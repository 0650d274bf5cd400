"""Benchmark: parse a 10,000-row batch transfer file and create its job (goal: under 15 s).

Builds a real .xlsx (and .csv) file of N rows in memory, then times, for each format:

* parse: reading and validating the file (`parse_batch_transfer_file`);
* create: the job and its tasks with bulk inserts, and queueing every task in one round trip
  (`create_batch_transfer_job`).

It runs in a throwaway test database (created and dropped by Django's test utilities on the
server of DATABASE_URL, or the embedded PostgreSQL), so no real data is touched::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adit \
        uv run python benchmarks/batch.py [--rows 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

GOAL_SECONDS = 15.0


def main() -> int:
    parser = argparse.ArgumentParser(description="Time a 10,000-row batch transfer upload.")
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adit.settings.test")
    import django

    django.setup()
    from django.conf import settings
    from django.test.utils import (  # pyright: ignore[reportAttributeAccessIssue]
        setup_databases,
        setup_test_environment,
        teardown_databases,
    )

    settings.BATCH_FILE_MAX_ROWS = max(settings.BATCH_FILE_MAX_ROWS, args.rows)
    settings.BATCH_FILE_MAX_SIZE = max(settings.BATCH_FILE_MAX_SIZE, 50 * 1024 * 1024)
    setup_test_environment()
    print("Creating a throwaway test database (not timed) ...", flush=True)
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        return run(args.rows)
    finally:
        teardown_databases(old_config, verbosity=0)


def run(row_count: int) -> int:
    from adit.accounts.factories import UserFactory
    from adit.batch_transfer.models import BatchTransferJob, create_batch_transfer_job
    from adit.batch_transfer.parsers import parse_batch_transfer_file
    from adit.core.factories import DicomServerFactory
    from adit.core.testing.sheets import csv_data, upload, xlsx_data

    header = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Pseudonym"]
    rows = [header] + [
        [f"{n:08d}", f"1.2.826.0.1.3680043.10.1.{n}", "", f"PSN{n:08d}"] for n in range(row_count)
    ]
    files = {"xlsx": xlsx_data(rows), "csv": csv_data(rows, delimiter=";", bom=True)}
    owner = UserFactory(username="benchmark", is_staff=True)
    source, destination = DicomServerFactory(), DicomServerFactory()

    print(f"\n{row_count} rows          size    parse   create    total")
    worst = 0.0
    for extension, data in files.items():
        started = time.perf_counter()
        studies = parse_batch_transfer_file(
            upload(data, f"bench.{extension}"),
            pseudonym_required=True,
            max_rows=row_count,
            max_bytes=len(data),
        )
        parsed = time.perf_counter()
        job = create_batch_transfer_job(
            owner, source, destination, studies, project_name="Benchmark", project_description="-"
        )
        created = time.perf_counter()
        assert job.tasks.count() == row_count
        assert not job.tasks.filter(queued_job_id=None).exists()
        total = created - started
        worst = max(worst, total)
        print(
            f"  .{extension:<5} {len(data) / 1024:>9.0f} KiB {parsed - started:>7.2f}s "
            f"{created - parsed:>7.2f}s {total:>7.2f}s"
        )
        BatchTransferJob.objects.filter(pk=job.pk).delete()
    verdict = "within" if worst < GOAL_SECONDS else "OVER"
    print(f"\nSlowest: {worst:.2f} s ({verdict} the goal of {GOAL_SECONDS:.0f} s)")
    return 0 if worst < GOAL_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
