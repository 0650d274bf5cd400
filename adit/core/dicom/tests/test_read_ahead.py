"""`ReadAhead`: a source iterated in a background thread, a bounded number of items ahead."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from adit.core.dicom.read_ahead import ReadAhead
from adit.core.testing import wait_until


class SourceError(Exception):
    pass


class RecordingSource:
    """A generator source that records what it produced, where it ran and where it was closed."""

    def __init__(self, count: int | None = None, fail_after: int | None = None) -> None:
        self.count = count
        self.fail_after = fail_after
        self.produced = 0
        self.producing_threads: set[threading.Thread] = set()
        self.closed_in: threading.Thread | None = None
        self.closed = threading.Event()

    def __call__(self) -> Iterator[int]:
        try:
            index = 0
            while self.count is None or index < self.count:
                self.producing_threads.add(threading.current_thread())
                if self.fail_after is not None and index == self.fail_after:
                    raise SourceError(f"failed at item {index}")
                self.produced += 1
                yield index
                index += 1
        finally:
            self.closed_in = threading.current_thread()
            self.closed.set()


def blocked_count(items: ReadAhead, source: RecordingSource, at_least: int) -> int:
    """The number of items produced once the producer is blocked on the full queue.

    With the queue full and `at_least` items produced, the producer holds the one it cannot
    put and takes no more from the source until the consumer takes one: the count is final.
    """
    wait_until(
        lambda: items._queue.full() and source.produced >= at_least,
        what=f"a full queue and {at_least} items produced",
    )
    return source.produced


def test_items_arrive_in_order():
    source = RecordingSource(count=200)
    with ReadAhead(source(), depth=4) as items:
        assert list(items) == list(range(200))


def test_items_arrive_in_order_with_depth_one():
    source = RecordingSource(count=50)
    with ReadAhead(source(), depth=1) as items:
        assert list(items) == list(range(50))


def test_source_runs_in_the_producer_thread():
    source = RecordingSource(count=3)
    with ReadAhead(source(), depth=2, name="test-producer") as items:
        assert list(items) == [0, 1, 2]
    assert [thread.name for thread in source.producing_threads] == ["test-producer"]
    assert source.closed_in is not None and source.closed_in.name == "test-producer"


def test_an_error_of_the_source_reaches_the_consumer_after_the_items_before_it():
    source = RecordingSource(count=10, fail_after=3)
    received: list[int] = []
    items = ReadAhead(source(), depth=8)
    with pytest.raises(SourceError, match="failed at item 3"):
        for item in items:
            received.append(item)
    assert received == [0, 1, 2]
    # The iteration is over after the error; the producer has ended.
    assert list(items) == []
    items.close(timeout=5)
    assert not items._thread.is_alive()


def test_the_error_is_raised_where_it_happened_not_when_the_producer_hit_it():
    # The producer reaches the failure long before the consumer does: the items before it still
    # come first.
    source = RecordingSource(count=10, fail_after=2)
    items = ReadAhead(source(), depth=8)
    wait_until(source.closed.is_set, what="the source closed")
    assert next(items) == 0
    assert next(items) == 1
    with pytest.raises(SourceError):
        next(items)


def test_close_before_the_end_stops_the_producer_and_closes_the_source_in_its_thread():
    source = RecordingSource()  # endless
    items = ReadAhead(source(), depth=3, name="closing-producer")
    assert [next(items), next(items)] == [0, 1]
    producer = items._thread

    items.close(timeout=5)

    assert source.closed.is_set(), "the source generator was not closed"
    assert source.closed_in is producer
    assert source.closed_in is not threading.current_thread()
    assert not producer.is_alive()
    produced = source.produced
    producer.join()  # ended: nothing can produce any more
    assert source.produced == produced, "the producer went on after close()"
    with pytest.raises(StopIteration):
        next(items)


@pytest.mark.parametrize("depth", [1, 3])
def test_the_producer_runs_only_depth_items_ahead(depth):
    # The queue holds `depth` items; the producer may hold one more it cannot put yet. With
    # an unbounded queue it would take all 1000 items from the source at once.
    source = RecordingSource(count=1000)
    with ReadAhead(source(), depth=depth) as items:
        # while the consumer has taken nothing
        assert blocked_count(items, source, depth + 1) == depth + 1
        for consumed in range(1, 6):
            assert next(items) == consumed - 1
            assert blocked_count(items, source, consumed + depth + 1) == consumed + depth + 1
        assert not source.closed.is_set()


def test_leaving_the_with_block_closes_it():
    source = RecordingSource()  # endless
    with ReadAhead(source(), depth=2, name="with-producer") as items:
        assert next(items) == 0
        producer = items._thread
    assert source.closed.is_set()
    assert source.closed_in is producer
    assert not producer.is_alive()


def test_leaving_the_with_block_by_an_error_closes_it():
    source = RecordingSource()  # endless
    with pytest.raises(RuntimeError, match="consumer failed"):
        with ReadAhead(source(), depth=2) as items:
            next(items)
            producer = items._thread
            raise RuntimeError("consumer failed")
    assert source.closed.is_set()
    assert not producer.is_alive()
