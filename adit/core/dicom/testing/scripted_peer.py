"""A scripted DIMSE peer for protocol edge cases: it negotiates like a PACS, then answers with
whatever bytes a test scripts (missing Status, wrong Message ID, PDVs on other contexts, ...).

Negotiation reuses ADIT's own acceptor (`association.accept_association`), which accepts every
proposed context in its first transfer syntax; what follows is raw PDUs on the socket, so a test
controls every byte a requestor sees.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..config import Timeouts
from ..net.association import Association, Message, accept_association

# (the association, the request it got) -> raw bytes to send back
Script = Callable[[Association, Message], bytes]


def p_data_tf(*pdvs: tuple[int, int, bytes]) -> bytes:
    """One P-DATA-TF PDU of `(context ID, control header, fragment)` PDV items."""
    body = b"".join(
        struct.pack(">IBB", len(fragment) + 2, context_id, control) + fragment
        for context_id, control, fragment in pdvs
    )
    return struct.pack(">BBI", 0x04, 0, len(body)) + body


def command_pdu(context_id: int, command: bytes) -> bytes:
    """A whole command set in one PDV (control header 0x03: command, last fragment)."""
    return p_data_tf((context_id, 0x03, command))


@contextmanager
def scripted_scp(
    script: Script, ae_title: str = "SCRIPTED", scp_role_refused_for: frozenset[str] = frozenset()
) -> Iterator[tuple[str, int]]:
    """Serves associations on a free loopback port; each request is answered by `script`.

    The requestor's offers to act as SCP (for C-GET) are accepted except for the SOP classes
    in `scp_role_refused_for`.
    Yields (AE title, port). Stops listening when the block ends.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve(sock: socket.socket) -> None:
        negotiated = accept_association(
            sock,
            Timeouts(connection=5, acse=5, dimse=10, network=10),
            lambda request: None,
            lambda abstract_syntax, proposed: proposed[0] if proposed else None,
            lambda sop_class_uid: sop_class_uid not in scp_role_refused_for,
        )
        if negotiated is None:
            return
        assoc, _ = negotiated
        try:
            while not stop.is_set():
                request = assoc.receive_message()
                assoc._socket.sendall(script(assoc, request))
        except Exception:  # noqa: BLE001 - the requestor ended the association
            pass
        finally:
            assoc.close()

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(sock,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    try:
        yield ae_title, port
    finally:
        stop.set()
        listener.close()
