"""A bounded hand-over from a worker thread to the event loop that streams a response.

A retrieve's instances come from a blocking source (a C-GET association, the decoding
fetches) read in a thread of its own (`services.InstanceStream`), and go out through daphne's
event loop. Between the two,
`Handoff` is a queue of a few items: when the client reads slowly the queue fills and the
thread (and so the source) waits; memory stays at a few items per retrieve.

The loop takes what is ready in one batch (one message through daphne for several items) and,
with nothing ready, parks an `asyncio.Event` that the thread sets, through the loop, with its
next item. Neither side polls, and the loop never lends a thread to wait: an
``asyncio.to_thread`` per item cost more CPU than the hand-over itself.

The thread ends the stream with `end()` or `fail(error)`; the error reaches the consumer
after the items before it. `close()` (client gone, response finished) makes `put` return
False, so the thread stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()
# How long a parked consumer waits before it looks whether the stream was closed meanwhile.
_CLOSED_CHECK_SECONDS = 0.5


class Handoff(Generic[T]):
    """Items from one producer thread to one consumer, on the event loop or a thread."""

    def __init__(self, capacity: int, size_of: Callable[[T], int]) -> None:
        self._items: queue.Queue = queue.Queue(maxsize=capacity)
        self._size_of = size_of
        self._closed = threading.Event()
        self._pending_error: BaseException | None = None
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._waiter_lock = threading.Lock()
        self.taken = 0

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # --- producer side ------------------------------------------------------------------------

    def put(self, item: T) -> bool:
        """Queues `item`, waiting while the queue is full; False once the stream is closed."""
        return self._put(item)

    def end(self) -> None:
        self._put(_END)

    def fail(self, error: BaseException) -> None:
        self._put(error)

    def _put(self, item: object) -> bool:
        while not self._closed.is_set():
            try:
                self._items.put(item, timeout=0.2)
            except queue.Full:
                continue
            with self._waiter_lock:
                waiter, self._waiter = self._waiter, None
            if waiter is not None:
                loop, ready = waiter
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(ready.set)
            return True
        return False

    # --- consumer side ------------------------------------------------------------------------

    def get(self) -> T | None:
        """The next item, waiting for it (on a thread); None at the end or once closed.

        Raises:
            BaseException: what the producer failed with.
        """
        self._raise_pending()
        while True:
            try:
                item = self._items.get(timeout=_CLOSED_CHECK_SECONDS)
                break
            except queue.Empty:
                if self._closed.is_set():
                    return None
        if item is _END:
            return None
        if isinstance(item, BaseException):
            self._closed.set()
            raise item
        self.taken += 1
        return item

    async def batches(self, max_size: int) -> AsyncIterator[list[T]]:
        """The remaining items, as many at a time as are ready (up to about `max_size`, as
        measured by `size_of`), on the event loop. Ends at the end, or once closed.

        Raises:
            BaseException: what the producer failed with, after the items before it.
        """
        loop = asyncio.get_running_loop()
        while True:
            items, ended = self._take_ready(max_size)
            if items:
                yield items
            if ended:
                return
            if items:
                continue
            ready = asyncio.Event()
            with self._waiter_lock:
                if self._items.empty():  # checked under the lock `_put` takes: no lost wake-up
                    self._waiter = (loop, ready)
                else:
                    ready.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), _CLOSED_CHECK_SECONDS)
            if self._closed.is_set() and self._items.empty():
                return

    def _take_ready(self, max_size: int) -> tuple[list[T], bool]:
        """(the items ready now, up to about `max_size`; whether the stream ended after them).
        An error is raised at once, or by the next call when items came before it."""
        self._raise_pending()
        items: list[T] = []
        size = 0
        while size < max_size:
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                return items, False
            if item is _END:
                return items, True
            if isinstance(item, BaseException):
                if not items:
                    self._closed.set()
                    raise item
                self._pending_error = item
                return items, False
            self.taken += 1
            size += self._size_of(item)
            items.append(item)
        return items, False

    def _raise_pending(self) -> None:
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            self._closed.set()
            raise error

    def close(self) -> None:
        self._closed.set()
