"""One run of a DICOM task by a worker: claim it, process it, record what happened.

A run can be asked to stop at any moment: the user cancels the job, staff kill the task, the
worker shuts down, the time limit passes. Whatever the run is doing when that request comes, it
must end promptly with the task in a state that says what happened. Earlier the worker's
coroutine did the steps itself, awaiting a thread for each database write; Procrastinate aborts
an asynchronous job by cancelling that coroutine, so a cancel that came while `claim()` was
still returning (the task already In Progress in the database) ended the coroutine before the
code that handles aborts was reached. The task stayed In Progress and its job Canceling for
good; one CI run in four failed on it.

How it is built now:

- The whole run (load, time-window check, claim, processing, recording the outcome) happens on
  one thread, step after step (`TaskRun.execute`). The worker's coroutine has a single await, on
  that thread, so an abort can never fall between a write and the code that follows it.
- `TaskRun.abort(reason)` may be called from any thread at any time. The first reason wins. It
  stops the processor if there is one, and a processor made later starts aborted. After each
  step the run looks whether it was aborted and records the outcome the reason asks for: the
  user or staff → Canceled; the worker shuts down → handed back to the queue; the time limit →
  Failure.
- An exception a processor raises after an abort is the abort's doing (a socket shut down under
  it, an association refused because its connector was aborted), not a failure of the PACS.
- A run records exactly one outcome (under a lock). So the worker may record the abort itself
  when a processor does not stop within the grace period, and the run's thread, should it end
  later, records nothing more.
- The database may go away under a run (a PostgreSQL restart). An error of the database
  connection inside the processor (an advisory-lock session, a log write) is not the PACS's
  fault: the task is handed back to run again. The outcome is written once the database is back:
  `_record` tries again with a backoff (1 s doubling to 30 s, for up to
  DICOM_TASK_DATABASE_WAIT seconds), so a transfer that finished during the outage is recorded,
  not redone, and a task is never left In Progress because one write failed.
- The run names the phase it is in. The worker logs at INFO (task and phase, no PHI) when an
  abort arrives and when and in which phase the run stopped. Test settings may hook every phase
  (`DICOM_TASK_PHASE_HOOK`) to hold a run there, so a test can cancel at that exact point.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import traceback
from typing import TYPE_CHECKING, cast

import psycopg
from django.core.exceptions import FieldDoesNotExist
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)

from .dicom.errors import RetriableDicomError
from .processing import ProcessingResult
from .processors import (
    DicomTaskProcessor,
    Phase,
    ProcessingAborted,
    call_phase_hook,
    get_processor,
)

if TYPE_CHECKING:
    from .models import DicomTask

logger = logging.getLogger(__name__)


# Set by `manage.py bg_worker`: a run leaves its thread's database connection open for the next
# run on that thread (a new connection per task cost a task of a few instances about a tenth of
# its time). Elsewhere (tests running tasks in-process, the web) each run closes it, so nothing
# holds a connection of a thread that may never run a task again.
KEEP_DATABASE_CONNECTION = False


def _drop_connection_unless_usable(check: bool = True) -> None:
    """Close this thread's connection when it does not answer (the database restarted or the
    connection broke), else keep it; without `check` it is only asked after an error."""
    if connection.connection is None:
        return
    if (check or connection.errors_occurred) and not connection.is_usable():
        connection.close()
        return
    connection.errors_occurred = False


def _related_of(model) -> list[str]:
    """What a run reads of its task besides the row, loaded with it in one query: the job, its
    owner and the nodes as what they are (server or folder); one query each cost a short task
    more than its C-FIND."""
    related = ["job", "job__owner"]  # the owner: for the audit entry of the run
    for name in ("source", "destination"):
        try:
            model._meta.get_field(name)
        except FieldDoesNotExist:  # a task model without this node (a batch query has no
            continue  # destination)
        related += [name, f"{name}__dicomserver", f"{name}__dicomfolder"]
    return related


class AbortReason(enum.Enum):
    CANCELED = "canceled by a user"
    SHUTDOWN = "the worker is shutting down"
    TIME_LIMIT = "the time limit passed"


class TaskRun:
    """The run of one queued task (`model_label`, `task_id`) by the queue job `queue_job_id`."""

    def __init__(self, model_label: str, task_id: int, queue_job_id: int) -> None:
        self.model_label = model_label
        self.task_id = task_id
        self.queue_job_id = queue_job_id
        self.task: DicomTask | None = None
        self.processor: DicomTaskProcessor | None = None
        self.abort_reason: AbortReason | None = None
        self._phase = Phase.LOADING
        self._aborted_at: float | None = None
        self._lock = threading.Lock()
        self._outcome_recorded = False

    @property
    def label(self) -> str:
        return str(self.task) if self.task is not None else f"{self.model_label} {self.task_id}"

    @property
    def phase(self) -> str:
        processor = self.processor
        if self._phase == Phase.PROCESSING and processor is not None:
            return processor.phase
        return self._phase

    # --- called from other threads ------------------------------------------------------------

    def abort(self, reason: AbortReason) -> None:
        """Stops the run as soon as possible (thread-safe; the first reason counts)."""
        with self._lock:
            if self.abort_reason is not None:
                return
            self.abort_reason = reason
            self._aborted_at = time.monotonic()
            processor = self.processor
        logger.info("%s: abort received (%s) while %s", self.label, reason.value, self.phase)
        if processor is not None:
            processor.abort()

    def record_abort_now(self) -> None:
        """Records the abort's outcome from outside the run (its processor did not stop)."""
        logger.error(
            "%s: still %s long after the abort; recording the outcome anyway",
            self.label,
            self.phase,
        )
        close_old_connections()
        try:
            self._record_abort()
        finally:
            connection.close()

    # --- the run itself (one thread) ----------------------------------------------------------

    def execute(self) -> None:
        if KEEP_DATABASE_CONNECTION:
            _drop_connection_unless_usable()
        else:
            close_old_connections()
        try:
            self._execute()
        finally:
            self._enter(Phase.ENDED)
            if self._aborted_at is not None:
                stopped_after = time.monotonic() - self._aborted_at
                logger.info("%s: stopped %.2f s after the abort", self.label, stopped_after)
            if KEEP_DATABASE_CONNECTION:
                _drop_connection_unless_usable(check=False)
            else:
                connection.close()

    def _execute(self) -> None:
        from django.apps import apps

        model = apps.get_model(self.model_label)
        task = cast(
            "DicomTask | None",
            model.objects.select_related(*_related_of(model)).filter(pk=self.task_id).first(),
        )
        if task is None:
            logger.warning("%s no longer exists; nothing to do", self.label)
            return
        self.task = task
        if self.abort_reason is not None:
            # Aborted before anything was claimed: end the task if it is still this queue
            # job's (a task left In Progress by a stopped worker is).
            if task.queued_job_id == self.queue_job_id and task.status in (
                task.Status.PENDING,
                task.Status.IN_PROGRESS,
            ):
                self._record_abort()
            return
        wait_until = task.reason_to_wait()
        if wait_until is not None:
            when, why = wait_until
            self._record(lambda: task.hand_back(why, when, False))
            return
        self._enter(Phase.CLAIMING)
        claimed = task.claim(self.queue_job_id)
        self._enter(Phase.CLAIMED)
        if not claimed:
            logger.info("%s was claimed elsewhere or is no longer pending; skipping", task)
            task.finish_canceled_if_job_is_canceling(self.queue_job_id)
            return
        result = self._process(task)
        if result is not None:
            self._record(lambda: task.finish(result))

    def _process(self, task: DicomTask) -> ProcessingResult | None:
        """Runs the processor; returns its result, or None when the outcome is recorded."""
        with self._lock:
            if self.abort_reason is None:
                self.processor = get_processor(self.model_label)(task)
            processor = self.processor
        if processor is None:
            self._record_abort()
            return None
        self._enter(Phase.PROCESSING)
        try:
            return processor.process()
        except Exception as error:
            if isinstance(error, ProcessingAborted) and self.abort_reason is None:
                self.abort_reason = AbortReason.CANCELED  # the processor was aborted directly
            if self.abort_reason is not None:
                logger.debug("%s: the processor ended after the abort with %r", task, error)
                self._record_abort()
                return None
            if _is_database_outage(error):
                logger.warning("%s: the database connection was lost while processing", task)
                message = (
                    "The database connection was lost during the transfer; the task runs again."
                )
                self._record(lambda: task.hand_back(message, None, True))
                return None
            if isinstance(error, RetriableDicomError):
                retriable = error
                self._record(lambda: task.fail_or_retry(retriable))
                return None
            logger.exception("%s failed", task)
            return ProcessingResult.failure(str(error) or repr(error), traceback.format_exc())

    # --- the outcome (recorded exactly once) --------------------------------------------------

    def _record(self, write) -> None:
        with self._lock:
            if self._outcome_recorded:
                return
            self._outcome_recorded = True
        self._enter(Phase.RECORDING)
        _when_the_database_answers(write, self.label)

    def _record_abort(self) -> None:
        from django.conf import settings

        task, reason = self.task, self.abort_reason
        if task is None:
            return
        if reason == AbortReason.SHUTDOWN:
            message = "The worker was shut down; the task will run again."
            self._record(lambda: task.hand_back(message, None, False))
        elif reason == AbortReason.TIME_LIMIT:
            message = f"The task exceeded its time limit of {settings.DICOM_TASK_TIME_LIMIT} s."
            self._record(lambda: task.finish(ProcessingResult.failure(message)))
        else:
            self._record(task.finish_canceled)

    def _enter(self, phase: Phase) -> None:
        self._phase = phase
        call_phase_hook(phase, self.label)


DATABASE_RETRY_FIRST_DELAY = 1.0
DATABASE_RETRY_MAX_DELAY = 30.0


def _is_database_outage(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a lost or refused database connection."""
    while error is not None:
        if isinstance(error, OperationalError | InterfaceError | psycopg.OperationalError):
            return True
        if isinstance(error, psycopg.InterfaceError):
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


def _when_the_database_answers(write, label: str) -> None:
    """Run `write` (database writes), trying again while the database is unreachable."""
    from django.conf import settings

    deadline = time.monotonic() + settings.DICOM_TASK_DATABASE_WAIT
    delay = DATABASE_RETRY_FIRST_DELAY
    while True:
        try:
            write()
            return
        except DatabaseError as error:
            if not _is_database_outage(error) or time.monotonic() > deadline:
                raise
            logger.warning(
                "%s: the database is unreachable; recording the outcome again in %.0f s",
                label,
                delay,
            )
        # The broken connection must go, or the next try reuses it.
        connection.close()
        time.sleep(delay)
        delay = min(delay * 2, DATABASE_RETRY_MAX_DELAY)
