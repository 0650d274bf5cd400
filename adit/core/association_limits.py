"""Limit how many associations (or DICOMweb requests) ADIT holds open to one server.

`DicomServer.max_associations` is a cap across every worker on every machine, so it is kept in
PostgreSQL: each open association holds one of N session-level advisory locks of the server.
A worker that dies loses its database session and with it its slot, so a crash never leaks a
slot. Waiting workers try again every half second (a cheap query; no busy loop).

Reused associations (a dicom worker, `POOL_SECONDS` > 0): an association that ended cleanly
stays open for the next task to the same server (`adit.core.dicom.net.pool`). An idle
association is still an association the PACS counts against its own limit, so it **keeps its
slot**: when a task's slot block ends, the slot is not unlocked but parked in this process for
`POOL_SECONDS`, and the pool may keep at most as many associations of a server open (in use
and idle) as this process holds slots of it (`held()`). The next task of this worker to that
server takes a parked slot (no query at all) together with the idle associations; a parked
slot that nobody took in time is unlocked, after the idle associations beyond what the
remaining slots allow were released. Releasing the slot instead while keeping the association
would let the workers together hold more associations than `max_associations`, which a PACS
answers with rejected associations; the cost of keeping it is that another worker waits up to
`POOL_SECONDS` longer for a slot of a server this worker just used (while this worker goes on
using it for its next task, so the server is never idle because of it). A slot is taken from
the parked ones first, so a worker never waits for a slot it parked itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
from django.db import connection

from .dicom.net.pool import AssociationPool

logger = logging.getLogger(__name__)

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
    KEEP = 16

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
    if POOL_SECONDS > 0:
        with _parked_slot(server_id, limit, timeout, aborted) as slot:
            yield slot
        return
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
    if POOL_SECONDS > 0:
        with _parked_extra_slots(server_id, limit, wanted) as count:
            yield count
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


# --- slots kept with their idle associations (dicom workers) -----------------------------------

# Set by `manage.py bg_worker` (`DICOM_ASSOCIATION_IDLE_SECONDS`): how long a slot and the idle
# associations of a server stay with this process after use. 0: slots are unlocked at once and
# no association is kept (the web, tests running tasks in-process, scripts).
POOL_SECONDS = 0.0


@dataclass
class _Slot:
    server_id: int
    number: int
    connection: psycopg.Connection
    since: float = field(default=0.0)

    @property
    def key(self) -> int:
        return self.server_id * 1024 + self.number


class _ParkedSlots:
    """The slots this process holds per server, in use or parked, and the association pool
    that must stay within them."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._parked: list[_Slot] = []
        self._held: dict[int, int] = {}
        self._reaper: threading.Thread | None = None
        self._pool: AssociationPool | None = None

    def pool(self) -> AssociationPool:
        with self._lock:
            if self._pool is None:
                self._pool = AssociationPool(POOL_SECONDS, budget=self.held)
            self._pool.idle_seconds = POOL_SECONDS
            return self._pool

    def held(self, server_id) -> int:
        with self._lock:
            return self._held.get(server_id, 0)

    def locked(self, server_id: int) -> None:
        with self._lock:
            self._held[server_id] = self._held.get(server_id, 0) + 1

    def take(self, server_id: int, limit: int) -> _Slot | None:
        lost: list[_Slot] = []
        found = None
        with self._lock:
            for index in range(len(self._parked) - 1, -1, -1):
                slot = self._parked[index]
                if slot.server_id == server_id and slot.number < limit:
                    del self._parked[index]
                    if slot.connection.closed or slot.connection.broken:
                        lost.append(slot)  # its session, and with it the lock, is gone
                        continue
                    found = slot
                    break
        for slot in lost:
            self.release(slot)
        return found

    def park(self, slot: _Slot) -> None:
        if slot.connection.closed or slot.connection.broken:
            self.release(slot)  # its session, and with it the lock, is gone
            return
        with self._lock:
            slot.since = time.monotonic()
            self._parked.append(slot)
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(
                    target=self._reap, name="association-slot-reaper", daemon=True
                )
                self._reaper.start()
            else:
                self._lock.notify_all()

    def release(self, slot: _Slot) -> None:
        """Unlocks a slot, after releasing the idle associations it no longer covers."""
        with self._lock:
            remaining = self._held.get(slot.server_id, 0) - 1
            if remaining > 0:
                self._held[slot.server_id] = remaining
            else:
                self._held.pop(slot.server_id, None)
            pool = self._pool
        if pool is not None:
            pool.trim(slot.server_id, max(0, remaining))
        _unlock(slot.connection, slot.key)
        _idle_connections.give_back(slot.connection)

    def release_all(self) -> None:
        with self._lock:
            parked, self._parked = self._parked, []
            pool = self._pool
            self._lock.notify_all()
        if pool is not None:
            pool.close_all()
        for slot in parked:
            self.release(slot)
        if pool is not None:
            pool.reopen()

    def _reap(self) -> None:
        while True:
            expired: list[_Slot] = []
            with self._lock:
                if not self._parked:
                    self._reaper = None
                    return
                now = time.monotonic()
                seconds = POOL_SECONDS
                expired = [slot for slot in self._parked if now - slot.since >= seconds]
                self._parked = [slot for slot in self._parked if now - slot.since < seconds]
                if not expired:
                    next_expiry = min(slot.since for slot in self._parked) + seconds
                    self._lock.wait(timeout=max(0.05, next_expiry - now))
            for slot in expired:
                try:
                    self.release(slot)
                except Exception:  # the reaper must go on for the other slots
                    logger.exception("Releasing an idle association slot failed")


_parked_slots = _ParkedSlots()


def association_pool() -> AssociationPool | None:
    """The pool of idle associations of this process, None where associations are not kept."""
    if POOL_SECONDS <= 0:
        return None
    return _parked_slots.pool()


def held_slots(server_id: int) -> int:
    """How many slots of the server this process holds (in use and parked)."""
    return _parked_slots.held(server_id)


def release_parked() -> None:
    """Releases the idle associations and unlocks the parked slots (the worker stops)."""
    _parked_slots.release_all()


def _try_lock(lock_connection: psycopg.Connection, server_id: int, limit: int) -> _Slot | None:
    for number in range(limit):
        key = server_id * 1024 + number
        locked = lock_connection.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, key)
        ).fetchone()
        if locked and locked[0]:
            _parked_slots.locked(server_id)
            return _Slot(server_id, number, lock_connection)
    return None


@contextlib.contextmanager
def _parked_slot(
    server_id: int, limit: int, timeout: float, aborted: threading.Event | None
) -> Iterator[int]:
    slot = _parked_slots.take(server_id, limit)
    if slot is None:
        lock_connection = _idle_connections.take()
        deadline = time.monotonic() + timeout
        try:
            while True:
                slot = _try_lock(lock_connection, server_id, limit)
                if slot is not None:
                    break
                if aborted is not None and aborted.is_set():
                    raise SlotWaitTimeout("Aborted while waiting for a free association slot.")
                if time.monotonic() > deadline:
                    raise SlotWaitTimeout(
                        f"No association slot of server {server_id} became free in {timeout:.0f} s."
                    )
                time.sleep(POLL_INTERVAL)
                slot = _parked_slots.take(server_id, limit)  # another task of ours ended
                if slot is not None:
                    _idle_connections.give_back(lock_connection)
                    break
        except BaseException:
            lock_connection.close()
            raise
    try:
        yield slot.number
    finally:
        _parked_slots.park(slot)


@contextlib.contextmanager
def _parked_extra_slots(server_id: int, limit: int, wanted: int) -> Iterator[int]:
    taken: list[_Slot] = []
    try:
        while len(taken) < wanted:
            slot = _parked_slots.take(server_id, limit)
            if slot is None:
                break
            taken.append(slot)
        while len(taken) < wanted:
            lock_connection = _idle_connections.take()
            try:
                slot = _try_lock(lock_connection, server_id, limit)
            except BaseException:
                lock_connection.close()
                raise
            if slot is None:
                _idle_connections.give_back(lock_connection)
                break
            taken.append(slot)
        yield len(taken)
    finally:
        for slot in taken:
            _parked_slots.park(slot)
