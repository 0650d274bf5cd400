"""C-GET as SCU (PS3.7 9.1.3): the instances arrive as C-STORE sub-operations on this very
association, between the C-GET's own pending responses.

`c_get` yields both kinds of message in the order they arrive. A C-STORE-RQ must be answered
with `answer_sub_operation` before the next message is asked for: the peer waits for that
answer, and while the caller works on the instance the next ones wait in the socket buffers (a
slow consumer slows the sender down instead of filling memory). ADIT offers itself as SCP for
the storage SOP classes when it negotiates (role selection, PS3.7 D.3.3.4).

When the caller stops early (its destination failed, the task was cancelled), `c_get_cancel`
asks the peer to stop with C-CANCEL-RQ (PS3.7 9.3.3.2.1) instead of dropping the association:
the peer ends its sub-operations and sends its final response (status Cancel, FE00), and the
association is released normally. Sub-operations already on their way are refused (A700): ADIT
keeps nothing it is not going to deliver, and says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .commands import (
    AFFECTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    C_GET_RSP,
    C_STORE_RQ,
    MESSAGE_ID,
    PENDING_STATUSES,
    Message,
    c_cancel_rq,
    c_get_rq,
    c_store_rsp,
    check_response,
)

if TYPE_CHECKING:
    from .association import AcceptedContext, Association

# Answers read after C-CANCEL before giving up on the peer (then the association is aborted).
MAX_MESSAGES_AFTER_CANCEL = 10_000
# C-STORE status for a sub-operation that arrives after ADIT cancelled: Refused, Out of
# Resources (PS3.4 Table B.2-1); the peer counts it as failed, which it is.
REFUSED_AFTER_CANCEL = 0xA700


def c_get(
    assoc: Association, context: AcceptedContext, identifier: bytes, message_id: int = 1
) -> Iterator[Message]:
    """Sends the C-GET-RQ; yields each C-STORE-RQ sub-operation and each validated C-GET
    response, up to the final one."""
    assoc.send_message(
        context.context_id, c_get_rq(message_id, context.abstract_syntax), identifier
    )
    while True:
        message = assoc.receive_message()
        if message.command_field == C_STORE_RQ:
            yield message
            continue
        response = check_response(assoc, message, C_GET_RSP, message_id)
        yield response
        if response.status not in PENDING_STATUSES:
            return


def answer_sub_operation(assoc: Association, request: Message, status: int) -> None:
    """Answers a C-STORE sub-operation of the C-GET."""
    assoc.send_message(
        request.context_id,
        c_store_rsp(
            request.us(MESSAGE_ID),
            request.ui(AFFECTED_SOP_CLASS_UID),
            request.ui(AFFECTED_SOP_INSTANCE_UID),
            status,
        ),
    )


def c_get_cancel(assoc: Association, context: AcceptedContext, message_id: int = 1) -> bool:
    """Sends C-CANCEL-RQ for the C-GET `message_id` and reads up to its final response,
    refusing the sub-operations still arriving. False when the peer kept on: the association
    must then be aborted, not released."""
    assoc.send_message(context.context_id, c_cancel_rq(message_id))
    for _ in range(MAX_MESSAGES_AFTER_CANCEL):
        message = assoc.receive_message()
        if message.command_field == C_STORE_RQ:
            answer_sub_operation(assoc, message, REFUSED_AFTER_CANCEL)
            continue
        response = check_response(assoc, message, C_GET_RSP, message_id)
        if response.status not in PENDING_STATUSES:
            return True
    return False
