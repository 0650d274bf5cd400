"""Procrastinate tasks of the core app: queue housekeeping.

Queues: `default` runs housekeeping (these tasks), `dicom` runs DICOM work. Every worker also
defers the periodic tasks; Procrastinate makes sure each periodic run is deferred only once.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import cast

from django.conf import settings
from django.db import close_old_connections, connection
from procrastinate.contrib.django import app
from procrastinate.job_context import AbortReason

from .dicom.errors import RetriableDicomError
from .models import DicomTask
from .processors import DicomTaskProcessor, ProcessingAborted, ProcessingResult, get_processor

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
    stalled = list(
        await manager.get_stalled_jobs(seconds_since_heartbeat=settings.STALLED_JOB_SECONDS)
    )
    for job in stalled:
        logger.warning("Retrying stalled job %s (%s) of a dead worker", job.id, job.task_name)
        await manager.retry_job(job, priority=STALLED_JOB_RETRY_PRIORITY)
    await manager.prune_stalled_workers(seconds_since_heartbeat=settings.STALLED_JOB_SECONDS)
    return len(stalled)


def recover_orphaned_tasks() -> int:
    """Put ADIT tasks back in the queue whose queue job is gone or finished.

    This happens when a worker dies between finishing its queue job and recording the task's
    outcome, or when queue rows were pruned or deleted by hand. Without this sweep such a task
    (and its job) would stay In Progress or Pending forever. Returns how many were recovered.
    """
    from procrastinate.contrib.django.models import ProcrastinateJob

    from .processors import registered_task_models

    live_queue_jobs = ProcrastinateJob.objects.filter(status__in=["todo", "doing"]).values("id")
    recovered = 0
    for model in registered_task_models():
        unfinished = model.objects.filter(
            status__in=[DicomTask.Status.PENDING, DicomTask.Status.IN_PROGRESS],
            job__status__in=["PE", "IP", "CI"],
        )
        orphans = unfinished.exclude(queued_job_id__in=live_queue_jobs).select_related("job")
        for task in orphans:
            logger.warning("Recovering %s whose queue job is gone", task)
            task.hand_back(
                "The task's worker stopped unexpectedly; the task will run again.", None, True
            )
            recovered += 1
        for job in model.job.field.related_model.objects.filter(status="CI"):
            job.update_status()
    return recovered


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


def _load_task(model_label: str, task_id: int):
    from django.apps import apps

    close_old_connections()
    model = apps.get_model(model_label)
    return model.objects.select_related("job").filter(pk=task_id).first()


@app.task(queue="dicom", pass_context=True)
async def process_dicom_task(context, model_label: str, task_id: int) -> None:
    """Run the registered processor of one ADIT task (a row of `model_label`).

    Retries are ADIT's own (`DicomTask.hand_back`), counted in the task's `attempts`, so a
    task retried after a worker crash and one retried after a PACS error share one budget.
    """
    task = await asyncio.to_thread(_load_task, model_label, task_id)
    if task is None:
        logger.warning("%s %s no longer exists; nothing to do", model_label, task_id)
        return
    queue_job_id = context.job.id
    wait_until = await asyncio.to_thread(task.reason_to_wait)
    if wait_until is not None:
        when, why = wait_until
        await asyncio.to_thread(task.hand_back, why, when, False)
        return
    if not await asyncio.to_thread(task.claim, queue_job_id):
        logger.info("%s was claimed elsewhere or is no longer pending; skipping", task)
        return

    processor = get_processor(model_label)(cast(DicomTask, task))
    time_limit = settings.DICOM_TASK_TIME_LIMIT
    worker_thread = asyncio.ensure_future(asyncio.to_thread(_run_processor, processor))
    try:
        result = await asyncio.wait_for(asyncio.shield(worker_thread), timeout=time_limit)
    except asyncio.CancelledError:
        processor.abort()
        await _wait_quietly(worker_thread)
        if context.abort_reason() == AbortReason.SHUTDOWN:
            await asyncio.to_thread(
                task.hand_back, "The worker was shut down; the task will run again.", None, False
            )
        else:
            await asyncio.to_thread(task.finish_canceled)
        raise
    except TimeoutError:
        processor.abort()
        await _wait_quietly(worker_thread)
        result = ProcessingResult(
            DicomTask.Status.FAILURE, f"The task exceeded its time limit of {time_limit} s."
        )
    except RetriableDicomError as error:
        await asyncio.to_thread(task.fail_or_retry, error)
        return
    except ProcessingAborted:
        await asyncio.to_thread(task.finish_canceled)
        return
    except Exception as error:  # noqa: BLE001 - any processor failure ends the task as FAILURE
        trace = traceback.format_exc()
        logger.exception("%s failed", task)
        result = ProcessingResult(DicomTask.Status.FAILURE, str(error) or repr(error), [trace])
    await asyncio.to_thread(task.finish, result)


def _run_processor(processor: DicomTaskProcessor) -> ProcessingResult:
    close_old_connections()
    try:
        return processor.process()
    finally:
        connection.close()


async def _wait_quietly(future: asyncio.Future, timeout: float = 60) -> None:
    """Let an aborted processor thread wind down (it cannot be killed from outside)."""
    try:
        await asyncio.wait_for(asyncio.shield(future), timeout=timeout)
    except BaseException:  # noqa: BLE001 - its outcome no longer matters
        pass


def queue_tasks(tasks, priority: int, schedule_at=None) -> list[int]:
    """Defer `process_dicom_task` for many tasks in one round trip; returns the queue job ids."""
    tasks = list(tasks)
    if not tasks:
        return []
    deferrer = process_dicom_task.configure(priority=priority, schedule_at=schedule_at)
    return deferrer.batch_defer(
        *({"model_label": task.model_label(), "task_id": task.pk} for task in tasks)
    )


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
