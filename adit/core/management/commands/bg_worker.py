"""Run a Procrastinate worker: `manage.py bg_worker -q dicom [-c 2]`.

A worker rides out a PostgreSQL outage (a restart, a failover, `pg_ctl stop -m immediate`).
Procrastinate stops a worker whose database connection breaks (its heartbeat or its listener
fails); it waits for the running jobs (up to --shutdown-timeout) and then aborts them, and the
aborted DICOM task is handed back (`TaskRun`, whose database writes wait for the database to
return). This command then keeps the process alive: it waits for the database with a backoff
(1 s doubling to 30 s), logs each try, and starts a fresh worker. Before that new worker takes
jobs, the queue jobs the lost worker left `doing` go back to the queue (its row is removed,
which makes them stalled at once instead of after STALLED_JOB_SECONDS), and the sweep of
`recover_orphaned_tasks` puts their tasks back to Pending. So nothing stays In Progress and no
one has to restart anything by hand.

SIGTERM and Ctrl-C are handled here (not by Procrastinate), so a stop request is told apart from
a worker that stopped because the database went away.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection, connections
from procrastinate import worker as procrastinate_worker
from procrastinate.contrib.django import app

from adit.core import association_limits
from adit.core.tasks import recover_orphaned_tasks, retry_stalled_jobs_now, run_in_fresh_connection

logger = logging.getLogger("adit.worker")

ABORT_POLLING_SECONDS = 1.0
RECONNECT_FIRST_DELAY = 1.0
RECONNECT_MAX_DELAY = 30.0
CONNECT_TIMEOUT_SECONDS = 3
# A worker that ran this long before it stopped starts again after the first delay, not a longer.
STABLE_SECONDS = 60.0


class Command(BaseCommand):
    help = (
        "Run a background worker for the given queues. SIGTERM or Ctrl-C stops taking new jobs "
        "and lets running ones finish (up to --shutdown-timeout seconds, then they are aborted "
        "and handed back to the queue). When the database goes away the worker waits for it "
        "and starts again."
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
        from adit.core import task_runs

        # Task runs keep their thread's database connection, and slots their lock connections,
        # for the next task (a new connection per task and slot cost a short task a fifth of
        # its time).
        task_runs.KEEP_DATABASE_CONNECTION = True
        association_limits.KEEP_CONNECTIONS = True
        # Associations (with their slots) stay open a few seconds for the next task to the
        # same server: a study of a few instances spent most of its time opening them.
        association_limits.POOL_SECONDS = settings.DICOM_ASSOCIATION_IDLE_SECONDS
        supervisor = _Supervisor(
            queues=queues,
            concurrency=concurrency,
            burst=burst,
            shutdown_timeout=shutdown_timeout,
            name=name or f"{'+'.join(queues)}-worker",
        )
        try:
            asyncio.run(supervisor.run())
        finally:
            association_limits.release_parked()


class _Supervisor:
    """Runs Procrastinate workers one after the other until a stop is requested."""

    def __init__(self, queues, concurrency, burst, shutdown_timeout, name) -> None:
        self.queues = queues
        self.concurrency = concurrency
        self.burst = burst
        self.shutdown_timeout = shutdown_timeout
        self.name = name
        self.stop = asyncio.Event()
        self.current: asyncio.Task | None = None

    def request_stop(self) -> None:
        self.stop.set()
        if self.current is not None:
            # Procrastinate's worker stops gracefully when its run is cancelled.
            self.current.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_stop)
        lost_worker_id: int | None = None
        delay = RECONNECT_FIRST_DELAY
        while not self.stop.is_set():
            if not await self._wait_for_database():
                return
            # Procrastinate's periodic deferrer goes through Django's connection on asgiref's
            # thread; after an outage that connection is dead and must not be reused.
            await sync_to_async(connections.close_all)()
            worker_app = app.with_connector(app.connector.get_worker_connector())
            worker: procrastinate_worker.Worker | None = None
            error: BaseException | None = None
            started_at: float | None = None
            try:
                async with worker_app.open_async():
                    await self._recover(worker_app, lost_worker_id)
                    lost_worker_id = None
                    worker_app.perform_import_paths()
                    worker = procrastinate_worker.Worker(
                        app=worker_app,
                        queues=self.queues,
                        concurrency=self.concurrency,
                        wait=not self.burst,
                        name=self.name,
                        shutdown_graceful_timeout=self.shutdown_timeout,
                        install_signal_handlers=False,
                        # Aborts arrive by LISTEN/NOTIFY; the poll is the backstop when a
                        # notification is lost (a dropped listener connection), so a cancel
                        # still lands in seconds. It only queries while the worker runs a job.
                        abort_job_polling_interval=ABORT_POLLING_SECONDS,
                    )
                    if self.stop.is_set():  # the stop came while recovering
                        return
                    logger.info("Worker for queue(s) %s started", ", ".join(self.queues))
                    started_at = loop.time()
                    self.current = asyncio.create_task(worker.run())
                    await self.current
            except asyncio.CancelledError:
                if not self.stop.is_set():
                    raise
            except Exception as exception:  # noqa: BLE001 - any database failure; logged below
                error = exception
            finally:
                self.current = None
            if self.stop.is_set() or (self.burst and error is None):
                return
            if self.burst and error is not None:
                raise error  # a one-off run reports its failure instead of trying forever
            if worker is not None and worker.worker_id is not None:
                lost_worker_id = worker.worker_id
            # The database may have restarted, ending the sessions that held the parked slots.
            await asyncio.to_thread(association_limits.release_parked)
            if started_at is not None and loop.time() - started_at >= STABLE_SECONDS:
                delay = RECONNECT_FIRST_DELAY
            logger.warning(
                "Worker for queue(s) %s stopped without being asked to (%s; the database went "
                "away?); starting again in %.0f s",
                ", ".join(self.queues),
                _describe(error) if error else "a connection failed",
                delay,
            )
            await self._sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _wait_for_database(self) -> bool:
        """Wait (with backoff) until PostgreSQL takes connections; False if a stop came first."""
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        params["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        delay = RECONNECT_FIRST_DELAY
        waited = False
        while not self.stop.is_set():
            try:
                probe = await psycopg.AsyncConnection.connect(**params)
            except psycopg.Error as error:
                logger.warning(
                    "Database unreachable (%s); trying again in %.0f s", _describe(error), delay
                )
                waited = True
                await self._sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                continue
            await probe.close()
            if waited:
                logger.warning("Database reachable again")
            return True
        return False

    async def _recover(self, worker_app, lost_worker_id: int | None) -> None:
        """Hand back what dead workers (this process's lost one included) left running."""
        if lost_worker_id is not None:
            # Without its row, the lost worker's `doing` jobs count as stalled right away.
            await worker_app.job_manager.unregister_worker(lost_worker_id)
        retried = await retry_stalled_jobs_now(worker_app)
        retried += await asyncio.to_thread(run_in_fresh_connection, recover_orphaned_tasks)
        if retried:
            logger.warning("Handed %d stalled job(s) of dead workers back to the queue", retried)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        except TimeoutError:
            pass


def _describe(error: BaseException) -> str:
    cause = error.__cause__ or error
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
