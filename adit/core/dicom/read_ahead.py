"""Running a stream of instances a few items ahead of its consumer, in a background thread.

A transfer fetches, transforms and stores one instance after the other. Storing waits for the
destination's answer to each C-STORE; fetching and pseudonymizing the next instance in another
thread meanwhile lets the source, the destination and ADIT work at the same time (the waits
release the interpreter lock). The queue between the two is bounded, so a slow destination
slows the fetch down instead of filling memory.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

_END = object()
# How long a blocked producer waits before it looks again whether the consumer left.
_PUT_RETRY_SECONDS = 0.1


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class ReadAhead(Generic[T]):
    """Iterates `source` in a thread ahead of the consumer: `depth` items wait in the queue
    (and the producer holds one more while it waits for room).

    Errors raised by `source` are raised to the consumer when it reaches them. `close()` (also
    on leaving the `with` block) stops the producer and closes `source` in the producer's
    thread, so a generator's cleanup (ending an association) runs where the generator ran.
    """

    def __init__(self, source: Iterator[T], depth: int = 32, name: str = "read-ahead") -> None:
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        return item

    def close(self, timeout: float = 60.0) -> None:
        """Stops the producer and waits (up to `timeout`) until `source` is closed."""
        self._finished = True
        self._stop.set()
        self._drain()
        self._thread.join(timeout)

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the consumer
            self._put(_Failure(error))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    logger.warning("Closing a read-ahead source failed", exc_info=True)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_PUT_RETRY_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
