"""C-MOVE as SCU (PS3.7 9.1.4): the C-FIND exchange again, with sub-operation counts.

The peer sends the matching instances to the Move Destination on associations of its own (to
ADIT's receiver, see `dicom/move.py`); on this association only responses arrive: pending ones
with the counts so far, then the final one (with the Failed SOP Instance UID List when some
sub-operations failed).

`c_move_cancel` sends C-CANCEL-RQ (PS3.7 9.3.4.2.1) from any thread while another one reads
the responses in `c_move`: the peer stops its sub-operations and ends with status Cancel
(FE00), which ends the loop like any final response. The association's send lock keeps the
C-CANCEL-RQ apart from anything else sent on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .commands import (
    C_MOVE_RSP,
    PENDING_STATUSES,
    Message,
    c_cancel_rq,
    c_move_rq,
    receive_response,
)

if TYPE_CHECKING:
    from .association import AcceptedContext, Association


def c_move(
    assoc: Association,
    context: AcceptedContext,
    identifier: bytes,
    move_destination: str,
    message_id: int = 1,
) -> Iterator[Message]:
    """Sends the C-MOVE-RQ and yields each validated response up to the final one."""
    assoc.send_message(
        context.context_id,
        c_move_rq(message_id, context.abstract_syntax, move_destination),
        identifier,
    )
    while True:
        response = receive_response(assoc, C_MOVE_RSP, message_id)
        yield response
        if response.status not in PENDING_STATUSES:
            return


def c_move_cancel(assoc: Association, context: AcceptedContext, message_id: int = 1) -> None:
    """Asks the peer to stop the C-MOVE `message_id`; its final response ends `c_move`."""
    assoc.send_message(context.context_id, c_cancel_rq(message_id))
