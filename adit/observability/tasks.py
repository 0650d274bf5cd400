"""Procrastinate task of the observability app: the daily database backup (see `backup.py`)."""

from __future__ import annotations

import asyncio

from django.conf import settings
from procrastinate.contrib.django import app

from adit.core.tasks import run_in_fresh_connection

from .backup import run_scheduled_backup


@app.periodic(cron=f"0 {settings.DB_BACKUP_HOUR} * * *", periodic_id="backup_database")
@app.task(queue="default", queueing_lock="backup_database")
async def backup_database(timestamp: int) -> None:
    await asyncio.to_thread(run_in_fresh_connection, run_scheduled_backup)
