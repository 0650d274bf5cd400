"""Procrastinate task of the upload app: ending uploads whose page went away
(`services.end_abandoned_uploads`)."""

from __future__ import annotations

import asyncio

from procrastinate.contrib.django import app

from adit.core.tasks import run_in_fresh_connection

from .services import end_abandoned_uploads


@app.periodic(cron="*/5 * * * *", periodic_id="end_abandoned_uploads")
@app.task(queue="default", queueing_lock="end_abandoned_uploads")
async def end_abandoned_upload_jobs(timestamp: int) -> None:
    await asyncio.to_thread(run_in_fresh_connection, end_abandoned_uploads)
