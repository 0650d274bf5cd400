"""Procrastinate tasks of the core app: queue housekeeping.

Queues: `default` runs housekeeping (these tasks), `dicom` runs DICOM work. Every worker also
defers the periodic tasks; Procrastinate makes sure each periodic run is deferred only once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, connection, models
from procrastinate.contrib.django import app
from procrastinate.job_context import AbortReason as ProcrastinateAbortReason

from .models import DicomTask
from .queue import cancel_queued_job
from .task_runs import AbortReason, TaskRun

logger = logging.getLogger(__name__)

# Retried stalled jobs jump ahead of normal work: they were already waiting once.
STALLED_JOB_RETRY_PRIORITY = 10


def on_app_ready(procrastinate_app) -> None:
    """Called by procrastinate.contrib.django once the app is ready (nothing to add yet)."""


async def retry_stalled_jobs_now(procrastinate_app=app) -> int:
    """Hand the jobs of dead workers back to the queue.

    A worker that is killed (kill -9, out of memory, power loss) stops sending heartbeats; its
    running jobs stay `doing` forever unless someone retries them. Returns how many were retried.
    """
    manager = procrastinate_app.job_manager
    stalled = await stalled_queue_jobs(procrastinate_app)
    for job in stalled:
        logger.warning("Retrying stalled job %s (%s) of a dead worker", job.id, job.task_name)
        await manager.retry_job(job, priority=STALLED_JOB_RETRY_PRIORITY)
    await manager.prune_stalled_workers(seconds_since_heartbeat=settings.STALLED_JOB_SECONDS)
    return len(stalled)


async def stalled_queue_jobs(procrastinate_app=app) -> list:
    """Running queue jobs whose worker stopped heartbeating (`STALLED_JOB_SECONDS`)."""
    return list(
        await procrastinate_app.job_manager.get_stalled_jobs(
            seconds_since_heartbeat=settings.STALLED_JOB_SECONDS
        )
    )


@dataclass(frozen=True)
class StuckItem:
    """One task or job whose state no worker will ever change by itself."""

    description: str
    fix: Callable[[], None]


def find_stuck_work() -> list[StuckItem]:
    """Tasks and jobs whose state disagrees with the queue or with each other.

    - a Pending or In Progress task whose queue job is gone or finished (its worker died
      between finishing the queue job and recording the outcome, or queue rows were deleted);
    - an In Progress task whose queue job waits in the queue (`todo`): no worker runs it, so
      it is Pending again (its queue job still delivers it);
    - an unfinished task of a job being canceled (or canceled) that no worker runs;
    - a job whose status is not the one its tasks call for (`DicomJob.status_from_tasks`),
      looked for among unfinished jobs and finished jobs that still have unfinished tasks.

    Tasks of dead workers whose queue job is still `doing` are Procrastinate's stalled jobs
    (`retry_stalled_jobs_now`); after that retry they are `todo` and found here.
    """
    from procrastinate.contrib.django.models import ProcrastinateJob

    from .models import DicomJob
    from .processors import registered_task_models

    live_queue_jobs = ProcrastinateJob.objects.filter(status__in=["todo", "doing"]).values("id")
    waiting_queue_jobs = ProcrastinateJob.objects.filter(status="todo").values("id")
    running_queue_jobs = ProcrastinateJob.objects.filter(status="doing").values("id")
    unfinished_statuses = [DicomTask.Status.PENDING, DicomTask.Status.IN_PROGRESS]
    unfinished_jobs = [DicomJob.Status.PENDING, DicomJob.Status.IN_PROGRESS]
    stuck: list[StuckItem] = []

    def hand_back(task) -> Callable[[], None]:
        return lambda: task.hand_back(
            "The task's worker stopped unexpectedly; the task will run again.", None, True
        )

    def cancel(task) -> Callable[[], None]:
        def end() -> None:
            if task.queued_job_id:
                cancel_queued_job(task.queued_job_id)
            task.finish_canceled()

        return end

    def unclaim(task) -> Callable[[], None]:
        def back_to_pending() -> None:
            model = type(task)
            model.objects.filter(
                pk=task.pk, status=DicomTask.Status.IN_PROGRESS, queued_job_id=task.queued_job_id
            ).filter(queued_job_id__in=waiting_queue_jobs).update(
                status=DicomTask.Status.PENDING,
                message="The task's worker stopped; the task waits for the next worker.",
            )
            task.job.update_status()

        return back_to_pending

    for model in registered_task_models():
        job_model = model.job.field.related_model
        label = model._meta.label
        orphans = (
            model.objects.filter(status__in=unfinished_statuses, job__status__in=unfinished_jobs)
            .exclude(queued_job_id__in=live_queue_jobs)
            .select_related("job")
        )
        for task in orphans:
            stuck.append(
                StuckItem(
                    f"{label} {task.pk} ({task.get_status_display()}) of job {task.job_id}: "
                    f"its queue job {task.queued_job_id} is gone",
                    hand_back(task),
                )
            )
        not_running = (
            model.objects.filter(
                status__in=unfinished_statuses,
                job__status__in=[DicomJob.Status.CANCELING, DicomJob.Status.CANCELED],
            )
            .exclude(queued_job_id__in=running_queue_jobs)
            .select_related("job")
        )
        for task in not_running:
            stuck.append(
                StuckItem(
                    f"{label} {task.pk} ({task.get_status_display()}) of job {task.job_id}: "
                    f"the job is {task.job.get_status_display()} and no worker runs the task",
                    cancel(task),
                )
            )
        waiting_in_progress = model.objects.filter(
            status=DicomTask.Status.IN_PROGRESS,
            job__status__in=unfinished_jobs,
            queued_job_id__in=waiting_queue_jobs,
        ).select_related("job")
        for task in waiting_in_progress:
            stuck.append(
                StuckItem(
                    f"{label} {task.pk} (In Progress) of job {task.job_id}: no worker runs it "
                    f"(its queue job {task.queued_job_id} waits in the queue)",
                    unclaim(task),
                )
            )
        finished = [status for status in DicomJob.FINAL_STATUSES]
        jobs = job_model.objects.exclude(status=DicomJob.Status.UNVERIFIED).filter(
            models.Q(status__in=[*unfinished_jobs, DicomJob.Status.CANCELING])
            | models.Q(status__in=finished, tasks__status__in=unfinished_statuses)
        )
        for job in jobs.distinct():
            expected, _ = job.status_from_tasks()
            if expected == job.status:
                continue
            stuck.append(
                StuckItem(
                    f"{job._meta.label} {job.pk} is {job.get_status_display()}, but its tasks "
                    f"say {DicomJob.Status(expected).label}",
                    _reconcile(job),
                )
            )
    return stuck


def _reconcile(job) -> Callable[[], None]:
    """The fix for a job whose status disagrees with its tasks."""
    from .models import DicomJob

    def fix() -> None:
        job.update_status()
        if job.status in (DicomJob.Status.PENDING, DicomJob.Status.IN_PROGRESS):
            job.queue_pending_tasks()

    return fix


def recover_orphaned_tasks() -> int:
    """Fix everything `find_stuck_work` finds; returns how many tasks and jobs were fixed.

    Runs in every worker at start and every 2 minutes (`retry_stalled_jobs`), and by
    `manage.py stuck_jobs --fix`. Without it such a task (and its job) would stay In Progress or
    Pending forever. Each fix re-checks under the row locks of the methods it calls, so a task a
    worker claimed meanwhile is not taken from it.
    """
    stuck = find_stuck_work()
    for item in stuck:
        logger.warning("Recovering: %s", item.description)
        item.fix()
    return len(stuck)


@app.periodic(cron="*/2 * * * *", periodic_id="retry_stalled_jobs")
@app.task(queue="default", queueing_lock="retry_stalled_jobs", pass_context=True)
async def retry_stalled_jobs(context, timestamp: int) -> None:
    await retry_stalled_jobs_now(context.app)
    await asyncio.to_thread(run_in_fresh_connection, recover_orphaned_tasks)


def run_in_fresh_connection(function):
    close_old_connections()
    try:
        return function()
    finally:
        connection.close()


@app.periodic(cron="17 3 * * *", periodic_id="prune_finished_queue_jobs")
@app.task(queue="default", queueing_lock="prune_finished_queue_jobs", pass_context=True)
async def prune_finished_queue_jobs(context, timestamp: int) -> None:
    """Delete queue rows that finished more than PROCRASTINATE_PRUNE_FINISHED_AFTER_DAYS ago.

    ADIT's own job and task rows keep the history users see; the queue rows are only plumbing.
    """
    await context.app.job_manager.delete_old_jobs(
        nb_hours=settings.PROCRASTINATE_PRUNE_FINISHED_AFTER_DAYS * 24,
        include_failed=True,
        include_cancelled=True,
        include_aborted=True,
    )


# --- DICOM tasks -------------------------------------------------------------------------------


@app.task(queue="dicom", pass_context=True)
async def process_dicom_task(context, model_label: str, task_id: int) -> None:
    """Run the registered processor of one ADIT task (a row of `model_label`).

    The run happens on one thread (`TaskRun`, which says why); this coroutine only waits for
    it and passes on Procrastinate's abort (cancel, shutdown) and the time limit. Retries are
    ADIT's own (`DicomTask.hand_back`), counted in the task's `attempts`, so a task retried
    after a worker crash and one retried after a PACS error share one budget.
    """
    run = TaskRun(model_label, task_id, context.job.id)
    thread = asyncio.ensure_future(asyncio.to_thread(run.execute))
    try:
        await asyncio.wait_for(asyncio.shield(thread), timeout=settings.DICOM_TASK_TIME_LIMIT)
    except asyncio.CancelledError:
        shutdown = context.abort_reason() == ProcrastinateAbortReason.SHUTDOWN
        await _stop(run, thread, AbortReason.SHUTDOWN if shutdown else AbortReason.CANCELED)
        raise
    except TimeoutError:
        await _stop(run, thread, AbortReason.TIME_LIMIT)


async def _stop(run: TaskRun, thread: asyncio.Future, reason: AbortReason) -> None:
    """Abort the run and wait for it to record its outcome; record it here if it hangs."""
    run.abort(reason)
    try:
        await asyncio.wait_for(
            asyncio.shield(thread), timeout=settings.DICOM_TASK_ABORT_GRACE_SECONDS
        )
    except TimeoutError:
        await asyncio.to_thread(run.record_abort_now)
    except BaseException:  # noqa: BLE001 - the run logs its own failures; the abort goes on
        logger.debug("%s ended with an error after the abort", run.label, exc_info=True)


# --- folders ------------------------------------------------------------------------------------


def check_folder_disk_usage() -> list[str]:
    """Mail the admins about folders above their warning size; returns those folders' names."""
    from .dicom.writer import folder_size
    from .mail import send_low_disk_space_mail
    from .models import DicomFolder

    warned = []
    for folder in DicomFolder.objects.filter(active=True).exclude(warn_size=None):
        used_gb = folder_size(folder.path) / 1024**3
        warn_size = folder.warn_size or 0
        if used_gb >= warn_size:
            logger.warning(
                "Folder %s uses %.1f GB (warning size %s GB)", folder, used_gb, folder.warn_size
            )
            send_low_disk_space_mail(folder.name, used_gb, warn_size, folder.quota)
            warned.append(folder.name)
    return warned


@app.periodic(cron="0 7 * * *", periodic_id="check_folder_disk_usage")
@app.task(queue="default", queueing_lock="check_folder_disk_usage")
async def check_disk_usage(timestamp: int) -> None:
    await asyncio.to_thread(run_in_fresh_connection, check_folder_disk_usage)
