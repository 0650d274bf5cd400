"""The task queue: jobs are deferred by Django and run by real worker processes."""

# pyright: reportCallIssue=false, reportOptionalSubscript=false
# (Procrastinate types periodic tasks without their `timestamp` argument.)

import signal

import pytest
from django.db import connection
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from adit.core import tasks
from adit.core.testing import wait_until
from adit.core.testing.workers import run_worker_burst, start_worker

pytestmark = pytest.mark.django_db(transaction=True)


def _age_queue_job(job_id: int, days: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_events SET at = at - make_interval(days => %s) WHERE job_id = %s",
            [days, job_id],
        )


def test_deferred_housekeeping_job_is_run_by_a_real_worker():
    old_job_id = tasks.prune_finished_queue_jobs.defer(timestamp=0)
    assert run_worker_burst("default").returncode == 0
    assert ProcrastinateJob.objects.get(id=old_job_id).status == "succeeded"
    _age_queue_job(old_job_id, days=400)
    recent_job_id = tasks.retry_stalled_jobs.defer(timestamp=0)

    prune_job_id = tasks.prune_finished_queue_jobs.defer(timestamp=1)
    result = run_worker_burst("default")

    assert result.returncode == 0, result.stdout + result.stderr
    assert ProcrastinateJob.objects.get(id=prune_job_id).status == "succeeded"
    assert not ProcrastinateJob.objects.filter(id=old_job_id).exists()
    assert ProcrastinateJob.objects.get(id=recent_job_id).status == "succeeded"


def _registered_worker_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_workers")
        return cursor.fetchone()[0]


def test_worker_stops_gracefully_on_sigterm():
    worker = start_worker("default")
    try:

        def registered() -> int:
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            return _registered_worker_count()

        wait_until(registered, 60, what="the worker to register", interval=0.2)
        assert _registered_worker_count() == 1

        worker.send_signal(signal.SIGTERM)

        assert worker.wait(timeout=30) == 0
        assert _registered_worker_count() == 0
    finally:
        if worker.poll() is None:
            worker.kill()


def test_periodic_tasks_are_registered_on_the_default_queue():
    periodic = {task.task.name: task for task in app.periodic_registry.periodic_tasks.values()}
    assert "adit.core.tasks.prune_finished_queue_jobs" in periodic
    assert "adit.core.tasks.retry_stalled_jobs" in periodic
    assert all(task.task.queue == "default" for task in periodic.values())
