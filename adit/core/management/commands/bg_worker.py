"""Run a Procrastinate worker: `manage.py bg_worker -q dicom [-c 2]`."""

from __future__ import annotations

import asyncio
import logging

from django.core.management.base import BaseCommand
from procrastinate.contrib.django import app

from adit.core.tasks import recover_orphaned_tasks, retry_stalled_jobs_now, run_in_fresh_connection

logger = logging.getLogger("adit.worker")

ABORT_POLLING_SECONDS = 1.0


class Command(BaseCommand):
    help = (
        "Run a background worker for the given queues. SIGTERM or Ctrl-C stops taking new jobs "
        "and lets running ones finish (up to --shutdown-timeout seconds, then they are aborted "
        "and handed back to the queue)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "-q",
            "--queue",
            action="append",
            dest="queues",
            required=True,
            help="Queue to work on (default or dicom); repeat for several.",
        )
        parser.add_argument("-c", "--concurrency", type=int, default=1)
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Exit once the queues are empty instead of waiting for new jobs.",
        )
        parser.add_argument("--shutdown-timeout", type=float, default=60.0)
        parser.add_argument("--name", default=None)

    def handle(self, *args, queues, concurrency, burst, shutdown_timeout, name, **options):
        # Workers must not run on the Django connector (it is synchronous and shares Django's
        # connection); the worker connector is a real async psycopg pool.
        worker_app = app.with_connector(app.connector.get_worker_connector())
        asyncio.run(self._run(worker_app, queues, concurrency, burst, shutdown_timeout, name))

    async def _run(self, worker_app, queues, concurrency, burst, shutdown_timeout, name):
        async with worker_app.open_async():
            retried = await retry_stalled_jobs_now(worker_app)
            retried += await asyncio.to_thread(run_in_fresh_connection, recover_orphaned_tasks)
            if retried:
                logger.warning(
                    "Handed %d stalled job(s) of dead workers back to the queue", retried
                )
            logger.info("Worker for queue(s) %s started", ", ".join(queues))
            await worker_app.run_worker_async(
                queues=queues,
                concurrency=concurrency,
                wait=not burst,
                name=name or f"{'+'.join(queues)}-worker",
                shutdown_graceful_timeout=shutdown_timeout,
                install_signal_handlers=True,
                # Aborts arrive by LISTEN/NOTIFY; the poll is the backstop when a notification
                # is lost (a dropped listener connection), so a cancel still lands in seconds.
                # It only queries while the worker runs a job.
                abort_job_polling_interval=ABORT_POLLING_SECONDS,
            )
