"""C-FIND as SCU (PS3.7 9.1.2): one request, a pending response per match, a final response.

`c_find` yields every response, the final one included, and leaves what a status means to the
caller (`statuses.py`). `c_cancel` asks the peer to stop early and reads the answers still on
their way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .commands import (
    C_FIND_RSP,
    PENDING_STATUSES,
    Message,
    c_cancel_rq,
    c_find_rq,
    receive_response,
)

if TYPE_CHECKING:
    from .association import AcceptedContext, Association

# A peer that ignores C-CANCEL is not read to the end.
MAX_ANSWERS_AFTER_CANCEL = 1000


def c_find(
    assoc: Association, context: AcceptedContext, identifier: bytes, message_id: int = 1
) -> Iterator[Message]:
    """Sends the C-FIND-RQ and yields each validated response up to the final one."""
    assoc.send_message(
        context.context_id, c_find_rq(message_id, context.abstract_syntax), identifier
    )
    while True:
        response = receive_response(assoc, C_FIND_RSP, message_id)
        yield response
        if response.status not in PENDING_STATUSES:
            return


def c_cancel(assoc: Association, context: AcceptedContext, message_id: int = 1) -> bool:
    """Sends C-CANCEL-RQ for `message_id` and reads up to its final response.

    False when the peer kept answering: the association must then be aborted, not released.
    """
    assoc.send_message(context.context_id, c_cancel_rq(message_id))
    for _ in range(MAX_ANSWERS_AFTER_CANCEL):
        if assoc.receive_message().status not in PENDING_STATUSES:
            return True
    return False
