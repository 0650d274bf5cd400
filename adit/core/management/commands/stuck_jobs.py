"""List (and with --fix, recover) tasks and jobs that are stuck."""

import asyncio

from django.core.management.base import BaseCommand
from procrastinate.contrib.django import app

from adit.core.tasks import (
    find_stuck_work,
    recover_orphaned_tasks,
    retry_stalled_jobs_now,
    stalled_queue_jobs,
)


class Command(BaseCommand):
    help = (
        "List tasks whose queue job is gone or whose worker died, In Progress tasks no worker "
        "runs, and jobs whose status disagrees with their tasks. With --fix, recover them (the "
        "workers also do this every 2 minutes)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--fix", action="store_true", help="Recover what is stuck.")

    def handle(self, *args, fix: bool, **options) -> None:
        stuck = find_stuck_work()
        for item in stuck:
            self.stdout.write(item.description)
        stalled_jobs = asyncio.run(_with_worker_app(stalled_queue_jobs))
        for job in stalled_jobs:
            task = job.task_kwargs
            self.stdout.write(
                f"{task.get('model_label', job.task_name)} {task.get('task_id', '')} (In Progress):"
                f" its worker stopped heartbeating (queue job {job.id})"
            )
        stalled = len(stalled_jobs)
        if not stuck and not stalled:
            self.stdout.write("Nothing is stuck.")
            return
        if fix:
            # Stalled queue jobs first: once back in the queue, their In Progress tasks are
            # found by the sweep and made Pending again.
            retried = asyncio.run(_with_worker_app(retry_stalled_jobs_now))
            recovered = recover_orphaned_tasks()
            self.stdout.write(
                f"Recovered {recovered} task(s) or job(s); retried {retried} stalled job(s)."
            )


async def _with_worker_app(function):
    """Run `function(app)` on the workers' connector (a command has no worker's open app)."""
    worker_app = app.with_connector(app.connector.get_worker_connector())
    async with worker_app.open_async():
        return await function(worker_app)
