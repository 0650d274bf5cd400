"""Limit how many associations (or DICOMweb requests) ADIT holds open to one server.

`DicomServer.max_associations` is a cap across every worker on every machine, so it is kept in
PostgreSQL: each open association holds one of N session-level advisory locks of the server.
A worker that dies loses its database session and with it its slot, so a crash never leaks a
slot. Waiting workers try again every half second (a cheap query; no busy loop).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psycopg
from django.db import connection

# First key of every slot lock, so ADIT's locks never collide with other advisory locks.
LOCK_NAMESPACE = 0x0AD1
POLL_INTERVAL = 0.5


class SlotWaitTimeout(Exception):
    """No slot became free in time."""


def _connect() -> psycopg.Connection:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=True)


def _unlock(lock_connection: psycopg.Connection, key: int) -> None:
    """Release a slot; a lost connection (the database restarted) already released it."""
    try:
        lock_connection.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE, key))
    except psycopg.Error:
        pass


@contextlib.contextmanager
def _lock_connection() -> Iterator[psycopg.Connection]:
    """A connection of its own for the session-level locks, closed without a final commit (which
    would raise when the database went away while the slots were held)."""
    lock_connection = _connect()
    try:
        yield lock_connection
    finally:
        lock_connection.close()


@contextlib.contextmanager
def association_slot(
    server_id: int,
    limit: int,
    timeout: float = 6 * 3600,
    aborted: threading.Event | None = None,
) -> Iterator[int]:
    """Hold one of the `limit` slots of a server while the block runs; yields the slot number."""
    limit = max(1, limit)
    with _lock_connection() as lock_connection:
        deadline = time.monotonic() + timeout
        while True:
            for slot in range(limit):
                key = server_id * 1024 + slot
                locked = lock_connection.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, key)
                ).fetchone()
                if locked and locked[0]:
                    try:
                        yield slot
                    finally:
                        _unlock(lock_connection, key)
                    return
            if aborted is not None and aborted.is_set():
                raise SlotWaitTimeout("Aborted while waiting for a free association slot.")
            if time.monotonic() > deadline:
                raise SlotWaitTimeout(
                    f"No association slot of server {server_id} became free in {timeout:.0f} s."
                )
            time.sleep(POLL_INTERVAL)


@contextlib.contextmanager
def extra_association_slots(server_id: int, limit: int, wanted: int) -> Iterator[int]:
    """Takes up to `wanted` further slots of a server that are free right now; yields how many.

    For work that needs one association (its slot already held through `association_slot`)
    but goes faster on several, such as storing a study: it never waits, so a busy server
    simply gets fewer associations.
    """
    if wanted <= 0 or limit <= 1:
        yield 0
        return
    with _lock_connection() as lock_connection:
        taken: list[int] = []
        for slot in range(limit):
            if len(taken) >= wanted:
                break
            key = server_id * 1024 + slot
            locked = lock_connection.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, key)
            ).fetchone()
            if locked and locked[0]:
                taken.append(key)
        try:
            yield len(taken)
        finally:
            for key in taken:
                _unlock(lock_connection, key)
