"""The one way tests wait: poll a condition until it holds, or fail saying what did not happen.

Tests that show that something did *not* happen do not use this to sleep: they wait for an
event that proves the system went past the point where it would have happened (a thread that
ended, a later reply, a log line), and then assert.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold within the timeout (an assertion failure of the test)."""


def wait_until(
    condition: Callable[[], T],
    timeout: float = 5.0,
    what: str = "",
    interval: float = 0.02,
    raising: bool = True,
) -> T:
    """Call `condition` until it returns something truthy, and return that.

    Args:
        condition: called again every `interval` seconds; exceptions propagate.
        timeout: seconds before giving up.
        what: what the test waits for, for the failure message.
        interval: seconds between two calls.
        raising: False returns the last falsy result instead of raising, for a caller that
            asserts on the state itself with a more telling message.

    Raises:
        WaitTimeout: `condition` was still falsy after `timeout` seconds (and `raising`).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            if not raising:
                return result
            raise WaitTimeout(f"Waited {timeout:g} s in vain for {what or condition!r}")
        time.sleep(interval)
