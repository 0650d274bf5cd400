"""Backpressure for streamed HTTP responses under daphne: a slow client slows the producer.

daphne hands every ``http.response.body`` message to Twisted at once (``Request.write``) and
returns; when the client reads slower than ADIT produces (a WADO-RS retrieve of a large study
to a busy client, four at a time), the bytes pile up in Twisted's send buffer without limit:
hundreds of MB for a few parallel retrieves. ASGI itself has no flow control for responses.

Twisted does: a *push producer* registered with the request is paused when the connection's
send buffer is full and resumed when it has drained. `with_backpressure` wraps the HTTP ASGI
application so that, from the first body message that announces more to come, such a
producer is registered with daphne's request, and every later body message waits until the
producer runs again. The producer is unregistered before the last body message (daphne
finishes the request with it) and when the client went away (Twisted stops the producer).

It relies on a daphne detail that is not public API: the ``send`` callable daphne passes to
the application is ``functools.partial(server.handle_reply, protocol)``, ``protocol`` being
the Twisted request. Anything else (another server, the test client) passes through
untouched; the live tests notice when daphne changes (`adit/dicom_web/tests/
test_live_relay.py`: memory of slow parallel retrieves).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

ASGIApp = Any


class _Producer:
    """A Twisted IPushProducer that gates the ASGI response (runs on daphne's event loop)."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.running.set()
        self.stopped = False
        self.pauses = 0

    def pauseProducing(self) -> None:  # noqa: N802 — Twisted's interface
        self.pauses += 1
        self.running.clear()

    def resumeProducing(self) -> None:  # noqa: N802
        self.running.set()

    def stopProducing(self) -> None:  # noqa: N802 — the connection is gone
        self.stopped = True
        self.running.set()


def _twisted_request(send) -> Any | None:
    """daphne's Twisted request behind `send`, if `send` is daphne's."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    request = send.args[0]
    if not (hasattr(request, "registerProducer") and hasattr(request, "unregisterProducer")):
        return None
    return request


def with_backpressure(app: ASGIApp) -> ASGIApp:
    """`app` with its streamed HTTP responses paced by the client (see the module)."""

    async def application(scope, receive, send):
        request = _twisted_request(send) if scope.get("type") == "http" else None
        if request is None:
            return await app(scope, receive, send)
        producer: _Producer | None = None
        gone = False  # the client went away: nothing to pace any more

        def unregister() -> None:
            nonlocal producer
            if producer is not None and getattr(request, "producer", None) is producer:
                if getattr(request, "channel", None) is not None:
                    request.unregisterProducer()
                else:  # the connection is gone; nothing to tell Twisted
                    request.producer = None
            producer = None

        async def paced_send(message) -> None:
            nonlocal producer, gone
            if message.get("type") != "http.response.body":
                return await send(message)
            if not message.get("more_body", False):
                unregister()  # daphne finishes the request with this message
                return await send(message)
            if producer is None and not gone and not getattr(request, "finished", False):
                producer = _Producer()
                try:
                    request.registerProducer(producer, True)
                except (RuntimeError, ValueError, AttributeError):
                    producer = None  # someone else produces; no pacing for this response
            await send(message)
            if producer is not None:
                await producer.running.wait()
                if producer.stopped:
                    gone = True
                    unregister()

        try:
            return await app(scope, receive, paced_send)
        finally:
            unregister()

    return application
