"""C-ECHO as SCU (PS3.7 9.1.5; the Verification Service Class, PS3.4 Annex A)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .commands import C_ECHO_RSP, c_echo_rq, receive_response

if TYPE_CHECKING:
    from .association import AcceptedContext, Association


def c_echo(assoc: Association, context: AcceptedContext, message_id: int = 1) -> int:
    """Sends a C-ECHO-RQ and returns the Status of its answer."""
    assoc.send_message(context.context_id, c_echo_rq(message_id, context.abstract_syntax))
    return receive_response(assoc, C_ECHO_RSP, message_id).status
