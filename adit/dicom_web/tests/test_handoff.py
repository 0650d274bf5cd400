"""`Handoff`: a producer thread's items reach the event loop whole, in order, bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from adit.dicom_web.handoff import Handoff


def produce(handoff: Handoff[bytes], items: list[bytes], error: Exception | None = None):
    def run() -> None:
        for item in items:
            if not handoff.put(item):
                return
        if error is None:
            handoff.end()
        else:
            handoff.fail(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def collect(handoff: Handoff[bytes], max_size: int) -> list[list[bytes]]:
    return [batch async for batch in handoff.batches(max_size)]


def test_every_item_arrives_in_order_in_batches_of_at_most_the_size_asked_for():
    items = [bytes([n]) * 10 for n in range(200)]
    handoff: Handoff[bytes] = Handoff(4, len)
    produce(handoff, items)
    batches = asyncio.run(collect(handoff, 25))
    assert [item for batch in batches for item in batch] == items
    assert all(sum(len(item) for item in batch) <= 30 for batch in batches)  # 25 + one item
    assert handoff.taken == len(items)


def test_a_slow_producer_wakes_the_waiting_loop_for_each_item():
    handoff: Handoff[bytes] = Handoff(2, len)

    def slow() -> None:
        for n in range(5):
            time.sleep(0.02)
            handoff.put(bytes([n]))
        handoff.end()

    threading.Thread(target=slow, daemon=True).start()
    started = time.monotonic()
    batches = asyncio.run(collect(handoff, 1000))
    assert [item for batch in batches for item in batch] == [bytes([n]) for n in range(5)]
    assert time.monotonic() - started < 0.4  # woken, not found by the periodic check


def test_the_producers_error_arrives_after_the_items_before_it():
    handoff: Handoff[bytes] = Handoff(8, len)
    thread = produce(handoff, [b"a", b"b"], ValueError("source failed"))
    thread.join(5)
    received: list[bytes] = []

    async def consume() -> None:
        async for batch in handoff.batches(1000):
            received.extend(batch)

    with pytest.raises(ValueError, match="source failed"):
        asyncio.run(consume())
    assert received == [b"a", b"b"]


def test_get_on_a_thread_returns_the_first_item_then_none_at_the_end():
    handoff: Handoff[bytes] = Handoff(2, len)
    produce(handoff, [b"first"])
    assert handoff.get() == b"first"
    assert handoff.get() is None


def test_a_full_queue_holds_the_producer_until_closed_and_put_then_says_false():
    handoff: Handoff[bytes] = Handoff(2, len)
    results: list[bool] = []

    def run() -> None:
        for item in (b"1", b"2", b"3"):
            results.append(handoff.put(item))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.3)
    assert results == [True, True]  # the third waits: the queue holds two
    handoff.close()
    thread.join(5)
    assert results == [True, True, False]
