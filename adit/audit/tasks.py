"""Procrastinate task of the audit app: the daily retention purge (`purge_audit_log` does the
same by hand)."""

from __future__ import annotations

import asyncio

from procrastinate.contrib.django import app

from adit.core.tasks import run_in_fresh_connection

from .services import purge_expired


@app.periodic(cron="47 3 * * *", periodic_id="purge_audit_log")
@app.task(queue="default", queueing_lock="purge_audit_log")
async def purge_audit_log(timestamp: int) -> None:
    await asyncio.to_thread(run_in_fresh_connection, purge_expired)
