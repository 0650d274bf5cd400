"""List (and with --fix, recover) tasks and jobs that are stuck."""

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from adit.core.models import DicomTask
from adit.core.processors import registered_task_models
from adit.core.tasks import recover_orphaned_tasks, retry_stalled_jobs_now


class Command(BaseCommand):
    help = (
        "List tasks whose queue job is gone or whose worker died, and jobs stuck in Canceling. "
        "With --fix, hand them back to the queue (the workers also do this every 2 minutes)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--fix", action="store_true", help="Recover what is stuck.")

    def handle(self, *args, fix: bool, **options) -> None:
        live = ProcrastinateJob.objects.filter(status__in=["todo", "doing"]).values("id")
        stuck = 0
        for model in registered_task_models():
            unfinished = model.objects.filter(
                status__in=[DicomTask.Status.PENDING, DicomTask.Status.IN_PROGRESS],
                job__status__in=["PE", "IP", "CI"],
            ).exclude(queued_job_id__in=live)
            for task in unfinished:
                stuck += 1
                self.stdout.write(
                    f"{model._meta.label} {task.pk} ({task.get_status_display()}) of job "
                    f"{task.job_id}: its queue job {task.queued_job_id} is gone"
                )
            canceling = model.job.field.related_model.objects.filter(status="CI")
            for job in canceling:
                if not job.tasks.filter(status=DicomTask.Status.IN_PROGRESS).exists():
                    stuck += 1
                    self.stdout.write(
                        f"{job._meta.label} {job.pk} is Canceling with no running task"
                    )
        stalled = asyncio.run(self._stalled_count())
        if stalled:
            self.stdout.write(f"{stalled} queue job(s) belong to workers that stopped heartbeating")
        if not stuck and not stalled:
            self.stdout.write("Nothing is stuck.")
            return
        if fix:
            retried = asyncio.run(self._retry_stalled())
            recovered = recover_orphaned_tasks()
            self.stdout.write(f"Recovered {recovered} task(s); retried {retried} stalled job(s).")

    async def _stalled_count(self) -> int:
        worker_app = app.with_connector(app.connector.get_worker_connector())
        async with worker_app.open_async():
            jobs = await worker_app.job_manager.get_stalled_jobs(
                seconds_since_heartbeat=settings.STALLED_JOB_SECONDS
            )
            return len(list(jobs))

    async def _retry_stalled(self) -> int:
        worker_app = app.with_connector(app.connector.get_worker_connector())
        async with worker_app.open_async():
            return await retry_stalled_jobs_now(worker_app)
