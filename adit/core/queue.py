"""Deferring, cancelling and aborting Procrastinate jobs: the one place that talks to the queue.

Models and views put work into the queue and take it out again; the tasks that run it live in
`adit.core.tasks`, which imports the models. So that the models need not import the tasks (an
import cycle), work is deferred by the task's *name* (`app.configure_task`), and cancelling and
aborting need only the queue job's id. A queue job carries only the task's model label and id:
ADIT's own rows are the truth (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import DicomTask

PROCESS_DICOM_TASK = "adit.core.tasks.process_dicom_task"
"""The name of the Procrastinate task that runs one ADIT task (queue `dicom`)."""


def _app():
    # Imported when used: procrastinate's Django app may not be imported while the app
    # registry loads the models.
    from procrastinate.contrib.django import app

    return app


def defer_dicom_tasks(
    tasks: Iterable[DicomTask], priority: int, schedule_at: datetime | None = None
) -> list[int]:
    """Defer `process_dicom_task` for many tasks in one round trip; returns the queue job ids."""
    tasks = list(tasks)
    if not tasks:
        return []
    deferrer = _app().configure_task(
        PROCESS_DICOM_TASK, allow_unknown=False, priority=priority, schedule_at=schedule_at
    )
    return deferrer.batch_defer(
        *({"model_label": task.model_label(), "task_id": task.pk} for task in tasks)
    )


def cancel_queued_job(queue_job_id: int) -> None:
    """Remove a job that has not started from the queue (no-op if it is gone already)."""
    _app().job_manager.cancel_job_by_id(queue_job_id, delete_job=True)


def abort_queued_job(queue_job_id: int) -> None:
    """Ask the worker running a job to abort it (the worker then marks the task canceled)."""
    _app().job_manager.cancel_job_by_id(queue_job_id, abort=True)
