"""C-STORE as SCU (PS3.7 9.1.1): one request with the data set, one response.

Which presentation context and encoding an instance goes in is the caller's choice
(`DimseConnector` keeps received bytes where it may, or encodes again); this module only
carries the exchange.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .commands import C_STORE_RSP, c_store_rq, receive_response

if TYPE_CHECKING:
    from .association import AcceptedContext, Association


def c_store(
    assoc: Association,
    context: AcceptedContext,
    sop_instance_uid: str,
    data: bytes,
    message_id: int,
) -> int:
    """Sends one instance (its data set encoded in the context's transfer syntax) and returns
    the Status of the validated answer."""
    assoc.send_message(
        context.context_id, c_store_rq(message_id, context.abstract_syntax, sop_instance_uid), data
    )
    return receive_response(assoc, C_STORE_RSP, message_id).status
