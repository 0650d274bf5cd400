"""Idle associations kept for the next operation on the same server (a worker's pool).

A batch of small studies is thousands of tasks that each talk to the same two servers: a
STUDY-level C-FIND, a listing, a C-GET, C-STOREs and a check. Opening an association costs a
round trip, the PACS's own negotiation work and, for the large storage proposals, encoding and
decoding up to 128 presentation contexts; for a study of three CR images that was most of a
task's wall time. So an association that ended cleanly is not released but kept here, and the
next operation that would propose exactly the same thing (server address, AE titles, contexts,
SCP roles) takes it instead of opening a new one.

Rules:

* Only an association whose operation ended cleanly comes back (final response read, nothing
  cancelled or aborted); the connector decides that (`DimseConnector._finish`).
* Before one is handed out again it must look idle and alive: nothing buffered, nothing
  readable on its socket. A peer that released or aborted it, or closed the connection (its
  own idle timeout, a restart), has sent something or an end of file, which makes the socket
  readable: such an association is closed and the next one (or a new one) taken, so the
  operation never sees it. The connector also opens a fresh association once when a reused
  one fails before the peer answered anything (the peer closed it just as it was taken).
* Idle longer than `idle_seconds`: released (A-RELEASE) by a reaper thread; all of them when
  the worker stops (`close_all`).
* A budget per group (the server's association slots this process holds, see
  `adit.core.association_limits`): before a new association of a group is opened, idle ones
  of that group are released until the open ones (in use and idle) stay within the budget, and
  `trim()` releases idle ones when the budget shrinks. The DICOM layer knows nothing of
  slots; without a budget (scripts, tests of this layer) the pool only bounds idle time.

The pool is shared by the threads of one process; network I/O (releasing) never happens while
its lock is held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from .association import Association

logger = logging.getLogger(__name__)


@dataclass
class _Idle:
    group: Hashable
    key: Hashable
    association: Association
    since: float


class AssociationPool:
    """Idle associations by (group, proposal key); see the module docstring."""

    def __init__(
        self,
        idle_seconds: float = 5.0,
        budget: Callable[[Hashable], int | None] | None = None,
    ) -> None:
        self.idle_seconds = idle_seconds
        self._budget = budget
        self._lock = threading.Lock()
        self._idle: list[_Idle] = []
        self._in_use: dict[Hashable, int] = {}
        self._wakeup = threading.Condition(self._lock)
        self._reaper: threading.Thread | None = None
        self._closed = False
        # Counters for tests and benchmarks: associations handed out again / opened new.
        self.reused = 0
        self.opened_count = 0
        self.discarded_dead = 0

    # --- the connector's side ---------------------------------------------------------------

    def take(
        self,
        group: Hashable,
        key: Hashable,
        usable: Callable[[Hashable, Association], bool] | None = None,
    ) -> Association | None:
        """An idle, live association proposed as `key` (or, failing that, one for which
        `usable(its key, it)` is true), now counted as in use; None if there is none."""
        found = self._take(group, lambda entry: entry.key == key)
        if found is None and usable is not None:
            found = self._take(group, lambda entry: usable(entry.key, entry.association))
        return found

    def _take(self, group: Hashable, wanted: Callable[[_Idle], bool]) -> Association | None:
        dead: list[Association] = []
        found = None
        now = time.monotonic()
        with self._lock:
            for index in range(len(self._idle) - 1, -1, -1):
                entry = self._idle[index]
                if entry.group != group or not wanted(entry):
                    continue
                del self._idle[index]
                if now - entry.since > self.idle_seconds or not entry.association.looks_alive():
                    dead.append(entry.association)
                    continue
                found = entry.association
                self._in_use[group] = self._in_use.get(group, 0) + 1
                self.reused += 1
                break
            self.discarded_dead += len(dead)
        for association in dead:
            association.abort()  # already ended by the peer (or too old to trust): no release
        return found

    def before_open(self, group: Hashable) -> None:
        """Makes room in the group's budget for one more association (releases idle ones)."""
        budget = self._budget(group) if self._budget is not None else None
        if budget is not None:
            self._trim(group, budget - 1)

    def opened(self, group: Hashable) -> None:
        """A new association of the group is in use."""
        with self._lock:
            self._in_use[group] = self._in_use.get(group, 0) + 1
            self.opened_count += 1

    def give_back(self, group: Hashable, key: Hashable, association: Association) -> None:
        """An association whose operation ended cleanly: kept idle (or released if closed)."""
        with self._lock:
            self._count_ended(group)
            if not self._closed and association.is_open:
                self._idle.append(_Idle(group, key, association, time.monotonic()))
                self._start_reaper()
                return
        association.release()

    def ended(self, group: Hashable) -> None:
        """An association of the group was released or aborted by the connector."""
        with self._lock:
            self._count_ended(group)

    # --- the slot owner's side ----------------------------------------------------------------

    def trim(self, group: Hashable, allowed: int) -> None:
        """Releases idle associations of `group` until at most `allowed` are open."""
        self._trim(group, allowed)

    def idle_count(self, group: Hashable | None = None) -> int:
        with self._lock:
            return sum(1 for entry in self._idle if group is None or entry.group == group)

    def in_use_count(self, group: Hashable) -> int:
        with self._lock:
            return self._in_use.get(group, 0)

    def close_all(self) -> None:
        """Releases every idle association (the worker stops); later ones are released too."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._wakeup.notify_all()
        for entry in idle:
            entry.association.release()

    def reopen(self) -> None:
        """Takes associations again after `close_all` (tests)."""
        with self._lock:
            self._closed = False

    # --- inside -------------------------------------------------------------------------------

    def _count_ended(self, group: Hashable) -> None:
        count = self._in_use.get(group, 0) - 1
        if count > 0:
            self._in_use[group] = count
        else:
            self._in_use.pop(group, None)

    def _trim(self, group: Hashable, allowed: int) -> None:
        to_release: list[Association] = []
        with self._lock:
            open_now = self._in_use.get(group, 0) + sum(
                1 for entry in self._idle if entry.group == group
            )
            excess = open_now - max(0, allowed)
            index = 0
            while excess > 0 and index < len(self._idle):  # oldest first
                if self._idle[index].group == group:
                    to_release.append(self._idle.pop(index).association)
                    excess -= 1
                    continue
                index += 1
        for association in to_release:
            association.release()

    def _start_reaper(self) -> None:
        """Starts the thread that releases expired associations (called with the lock held)."""
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap, name="association-pool-reaper", daemon=True
            )
            self._reaper.start()
        else:
            self._wakeup.notify_all()

    def _reap(self) -> None:
        while True:
            expired: list[Association] = []
            with self._lock:
                if self._closed or not self._idle:
                    self._reaper = None
                    return
                now = time.monotonic()
                keep = []
                for entry in self._idle:
                    if now - entry.since >= self.idle_seconds:
                        expired.append(entry.association)
                    else:
                        keep.append(entry)
                self._idle = keep
                if not expired:
                    next_expiry = min(entry.since for entry in keep) + self.idle_seconds
                    self._wakeup.wait(timeout=max(0.05, next_expiry - now))
            for association in expired:
                try:
                    association.release()
                except Exception:  # a reaper must outlive a peer's odd answer
                    logger.debug("Releasing an idle association failed", exc_info=True)
