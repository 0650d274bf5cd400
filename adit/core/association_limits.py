"""Limit how many associations (or DICOMweb requests) ADIT holds open to one server.

`DicomServer.max_associations` is a cap across every worker on every machine, so it is kept in
PostgreSQL: each open association holds one of N session-level advisory locks of the server.
A worker that dies loses its database session and with it its slot, so a crash never leaks a
slot. Waiting workers try again every half second (a cheap query; no busy loop).
"""

from __future__ import annotations

import contextlib
import os
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


class _IdleConnections:
    """Lock connections not in use, kept for the next slot of this process.

    A task takes two or three slots; a new PostgreSQL connection for each cost a task of a few
    instances about a tenth of its time. A connection is only ever used by one holder at a
    time and comes back here with every lock it took released (otherwise it is closed, which
    releases them), so a process never holds a slot twice through a shared session (advisory
    locks of one session stack). Connections idle longer than `IDLE_SECONDS` are closed.
    """

    IDLE_SECONDS = 60.0
    KEEP = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[float, int, psycopg.Connection]] = []

    def take(self) -> psycopg.Connection:
        now = time.monotonic()
        stale: list[psycopg.Connection] = []
        found = None
        pid = os.getpid()
        with self._lock:
            while self._idle:
                since, owner_pid, lock_connection = self._idle.pop()
                if owner_pid != pid:
                    continue  # inherited over fork: the parent's session, never used here
                if now - since > self.IDLE_SECONDS or lock_connection.closed:
                    stale.append(lock_connection)
                    continue
                found = lock_connection
                break
        for lock_connection in stale:
            lock_connection.close()
        if found is not None:
            try:  # the server may have ended the session meanwhile (a restart)
                found.execute("SELECT 1")
                return found
            except psycopg.Error:
                found.close()
        return _connect()

    def give_back(self, lock_connection: psycopg.Connection) -> None:
        if not KEEP_CONNECTIONS or lock_connection.closed or lock_connection.broken:
            lock_connection.close()
            return
        with self._lock:
            if len(self._idle) < self.KEEP:
                self._idle.append((time.monotonic(), os.getpid(), lock_connection))
                return
        lock_connection.close()

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, _, lock_connection in idle:
            lock_connection.close()


_idle_connections = _IdleConnections()

# Set by `manage.py bg_worker`. Elsewhere (the web, tests running tasks in-process) every lock
# connection is closed after use, so no process holds idle sessions it does not need (a test
# database with open sessions cannot be dropped).
KEEP_CONNECTIONS = False


def close_idle_connections() -> None:
    """Close the lock connections kept for later slots (none are in use by then)."""
    _idle_connections.close_all()


def _unlock(lock_connection: psycopg.Connection, key: int) -> None:
    """Release a slot; a lost connection (the database restarted) already released it. A
    connection whose unlock failed for another reason is closed by `_lock_connection`, which
    releases the lock with the session."""
    try:
        row = lock_connection.execute(
            "SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE, key)
        ).fetchone()
    except psycopg.Error:
        lock_connection.close()
        return
    if not (row and row[0]):
        lock_connection.close()


@contextlib.contextmanager
def _lock_connection() -> Iterator[psycopg.Connection]:
    """A connection of its own for the session-level locks (from the idle ones of this process
    if there is one); closed without a final commit (which would raise when the database went
    away while the slots were held) when anything went wrong, else kept for the next slot."""
    lock_connection = _idle_connections.take()
    clean = False
    try:
        yield lock_connection
        clean = True
    finally:
        if clean:
            _idle_connections.give_back(lock_connection)
        else:
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
