"""Associations (PS3.8 7.1, 9.3.2-4; PS3.7 D.3.3): negotiation in both roles, and the
association ADIT carries DIMSE messages on.

Relaying a study is two long runs of small messages: C-STORE requests arriving on a C-GET
association and C-STORE requests leaving on another one; a C-FIND answers with one message per
match. pynetdicom spends about 3 ms of CPU on each relayed instance (a transport and a reactor
thread per association polling queues, a state machine step per PDU, a pydicom data set per
command set), which held ADIT to about half of a PACS's own speed. `Association` carries
those messages with blocking socket I/O on the caller's thread instead: command sets are packed
and unpacked with `struct` (`commands.py`), data sets stay bytes, and there is no helper thread
and no polling. `abort()` from another thread shuts the socket down, which ends a blocked read
at once.

The negotiation PDUs (A-ASSOCIATE-RQ/AC/RJ) are encoded and decoded by pynetdicom's PDU
classes. `Association.request()` opens an association as the requestor (every DIMSE service of
`DimseConnector`: C-ECHO, C-FIND, C-GET, C-MOVE, C-STORE); `accept_association()` answers one as
the acceptor (the receiver's C-STORE SCP, which a PACS pushes C-MOVEd studies to). The
SCP/SCU role selection is offered for C-GET and answered as the acceptor; ADIT announces its
own Implementation Class UID and version name.
"""

from __future__ import annotations

import functools
import logging
import select
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext

from ..config import Timeouts
from .commands import (
    COMMAND_DATA_SET_TYPE,
    NO_DATA_SET,
    Message,
    decode_command,
)
from .errors import AssociationRejected, PduTooLarge, PeerReleased, UpperLayerError
from .pdus import (
    A_ABORT_PDU,
    A_ASSOCIATE_AC_PDU,
    A_ASSOCIATE_RJ_PDU,
    A_ASSOCIATE_RQ_PDU,
    A_RELEASE_RP_PDU,
    A_RELEASE_RQ_PDU,
    ABORT,
    MAX_PDU_RECEIVE,
    P_DATA_HEADER,
    P_DATA_TF_PDU,
    PDV_HEADER,
    RELEASE_RP,
    RELEASE_RQ,
    SEND_MAX_PARTS,
    UNLIMITED_PEER_FRAGMENT,
    abort_pdu,
    abort_text,
    pdu_reader,
    read_pdu,
    set_read_timeout,
)

logger = logging.getLogger(__name__)

# ADIT's own Implementation Class UID (PS3.7 D.3.3.2): a UUID-derived root (PS3.5 B.2), so a
# PACS's logs and conformance checks see ADIT, not the library it borrows codecs from.
IMPLEMENTATION_CLASS_UID = "2.25.269294046679469573575990716202793018445"
IMPLEMENTATION_VERSION_NAME = "ADIT_0_1"  # at most 16 characters

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

# PS3.8 Table 9-21: A-ASSOCIATE-RJ result, source and reason/diag.
_REJECTION_RESULTS = {1: "rejected-permanent", 2: "rejected-transient"}
_REJECTION_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "no reason given (by the service provider, ACSE)",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def rejection_text(result: int, source: int, diagnostic: int) -> str:
    """An A-ASSOCIATE-RJ in the words of PS3.8 Table 9-21."""
    outcome = _REJECTION_RESULTS.get(result, f"result {result}")
    reason = _REJECTION_REASONS.get((source, diagnostic), f"source {source}, reason {diagnostic}")
    return f"{outcome}: {reason}"


@dataclass(frozen=True)
class AcceptedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str


# --- association --------------------------------------------------------------------------


def _own_user_information() -> list:
    """ADIT's user information items: maximum PDU size and implementation class and version."""
    maximum_length = MaximumLengthNotification()
    maximum_length.maximum_length_received = MAX_PDU_RECEIVE
    implementation_uid = ImplementationClassUIDNotification()
    implementation_uid.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    implementation_version = ImplementationVersionNameNotification()
    implementation_version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    return [maximum_length, implementation_uid, implementation_version]


# A proposal as plain values: (abstract syntax, proposed transfer syntaxes) per context, in the
# order of their context IDs (1, 3, 5, ...).
Proposal = tuple[tuple[str, tuple[str, ...]], ...]


def proposal_of(contexts: Sequence[PresentationContext]) -> Proposal:
    return tuple(
        (str(context.abstract_syntax), tuple(str(ts) for ts in context.transfer_syntax))
        for context in contexts
    )


@functools.lru_cache(maxsize=64)
def _association_request(
    calling_ae_title: str,
    called_ae_title: str,
    proposal: Proposal,
    scp_role_sop_classes: tuple[str, ...],
) -> bytes:
    """The encoded A-ASSOCIATE-RQ, built once per proposal.

    Encoding up to 128 presentation contexts with pynetdicom's PDU classes (which validate
    every UID with a regular expression) took a task of a few instances longer than sending
    them; a worker proposes the same few sets over and over, so the bytes are kept.
    """
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = calling_ae_title
    primitive.called_ae_title = called_ae_title
    contexts = []
    for index, (abstract_syntax, transfer_syntaxes) in enumerate(proposal):
        context = PresentationContext()
        context.context_id = 2 * index + 1
        context.abstract_syntax = abstract_syntax
        for transfer_syntax in transfer_syntaxes:
            context.add_transfer_syntax(transfer_syntax)
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    user_information = _own_user_information()
    for sop_class in scp_role_sop_classes:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = sop_class
        role.scu_role = False
        role.scp_role = True
        user_information.append(role)
    primitive.user_information = user_information
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


@dataclass(frozen=True)
class _Acceptance:
    accepted: tuple[AcceptedContext, ...]
    peer_max_pdu: int
    scp_role_answer: frozenset[str] | None


@functools.lru_cache(maxsize=64)
def _read_acceptance(
    encoded: bytes, called_ae_title: str, proposal: Proposal, scp_role_sop_classes: tuple[str, ...]
) -> _Acceptance:
    """What an A-ASSOCIATE-AC accepted of `proposal`; a PACS gives the same answer to the same
    proposal, so decoding it (pynetdicom's classes again) is done once per answer."""
    acceptance = A_ASSOCIATE_AC()
    try:
        acceptance.decode(encoded)
        primitive = acceptance.to_primitive()
    except Exception as error:  # pynetdicom's codec raises many kinds
        raise UpperLayerError(f"malformed A-ASSOCIATE-AC ({error!r})") from error
    accepted: list[AcceptedContext] = []
    for result in primitive.presentation_context_definition_results_list:
        context_id = result.context_id
        index = (context_id - 1) // 2 if isinstance(context_id, int) else -1
        if (
            context_id is not None
            and context_id % 2 == 1
            and 0 <= index < len(proposal)
            and result.result == 0x00
            and result.transfer_syntax
        ):
            syntax = str(result.transfer_syntax[0])
            abstract_syntax, proposed_syntaxes = proposal[index]
            if syntax not in proposed_syntaxes:
                # Accepting a syntax that was never proposed is a peer's error; the context
                # is treated as refused rather than read in a syntax nobody agreed on.
                logger.warning(
                    "Association with %s: context %d accepted in %s, which was not proposed",
                    called_ae_title,
                    context_id,
                    syntax,
                )
                continue
            accepted.append(AcceptedContext(context_id, abstract_syntax, syntax))
    return _Acceptance(
        tuple(accepted),
        primitive.maximum_length_received or 0,
        _scp_roles_granted(primitive, scp_role_sop_classes),
    )


def _scp_roles_granted(acceptance: A_ASSOCIATE, requested: Iterable[str]) -> frozenset[str] | None:
    """The SOP classes for which the acceptor took ADIT's offer to act as SCP (PS3.7 D.3.3.4).

    None when the acceptor answered no role selection item at all: it does not support the
    negotiation, and what it will do is up to it (see `DimseConnector.send_c_get`).
    """
    requested = {str(uid) for uid in requested}
    items = [
        item
        for item in acceptance.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    ]
    if not items:
        return None
    return frozenset(
        str(item.sop_class_uid)
        for item in items
        if item.scp_role and str(item.sop_class_uid) in requested
    )


class Association:
    """An established association on which ADIT is the requestor.

    Not thread-safe except `abort()`, which any thread may call to end it at once.
    `scp_role_answer`: see `_scp_roles_granted`.
    """

    scp_role_answer: frozenset[str] | None = None
    # Set by `DimseConnector` when the association takes part in an `AssociationPool`: what
    # it proposed, and whether the current operation runs on it a second time or more.
    pool_key: object = None
    reused: bool = False

    def __init__(
        self,
        sock: socket.socket,
        reader,
        accepted: dict[int, AcceptedContext],
        peer_max_pdu: int,
        timeouts: Timeouts,
    ) -> None:
        self._socket = sock
        self._reader = reader
        self.accepted = accepted
        self.timeouts = timeouts
        # A PDV item's header takes 6 bytes of the peer's maximum PDU length (PS3.8 9.3.5).
        self.max_fragment = peer_max_pdu - 6 if peer_max_pdu > 6 else UNLIMITED_PEER_FRAGMENT
        self._fragments: deque[tuple[int, int, memoryview]] = deque()
        self._send_lock = threading.Lock()
        self._closed = False
        sock.settimeout(timeouts.dimse)
        set_read_timeout(reader, timeouts.dimse)

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    def request(
        cls,
        host: str,
        port: int,
        calling_ae_title: str,
        called_ae_title: str,
        contexts: Sequence[PresentationContext],
        timeouts: Timeouts,
        scp_role_sop_classes: Iterable[str] = (),
    ) -> Association:
        """Connects and negotiates; raises `AssociationRejected` or `UpperLayerError`.

        `contexts` are proposed with the context IDs 1, 3, 5, ... in their order (the objects
        stay as they are, so callers may share them). Connection failures raise the
        `OSError` of the socket.
        """
        if not 0 < len(contexts) <= 128:
            raise ValueError(f"{len(contexts)} presentation contexts (1 to 128 allowed)")
        proposal = proposal_of(contexts)
        roles = tuple(str(uid) for uid in scp_role_sop_classes)
        sock = socket.create_connection((host, port), timeout=timeouts.connection)
        reader = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeouts.acse)
            reader = pdu_reader(sock, timeouts.acse)
            sock.sendall(_association_request(calling_ae_title, called_ae_title, proposal, roles))
            pdu_type, header, body = read_pdu(reader)
            if pdu_type == A_ASSOCIATE_RJ_PDU:
                rejection = A_ASSOCIATE_RJ()
                try:
                    rejection.decode(header + body)
                    primitive = rejection.to_primitive()
                except Exception as error:  # pynetdicom's codec raises many kinds
                    raise UpperLayerError(f"malformed A-ASSOCIATE-RJ ({error!r})") from error
                result = int(primitive.result or 0)
                source = int(primitive.result_source or 0)
                diagnostic = int(getattr(primitive.diagnostic, "value", primitive.diagnostic) or 0)
                raise AssociationRejected(
                    result, source, diagnostic, rejection_text(result, source, diagnostic)
                )
            if pdu_type == A_ABORT_PDU:
                raise UpperLayerError(abort_text(body))
            if pdu_type != A_ASSOCIATE_AC_PDU:
                raise UpperLayerError(f"unexpected PDU 0x{pdu_type:02X} instead of an answer")
            acceptance = _read_acceptance(header + body, called_ae_title, proposal, roles)
        except BaseException:
            _close_quietly(sock, reader)
            raise
        accepted = {context.context_id: context for context in acceptance.accepted}
        association = cls(sock, reader, accepted, acceptance.peer_max_pdu, timeouts)
        association.scp_role_answer = acceptance.scp_role_answer
        return association

    # --- contexts ---------------------------------------------------------------------------

    def context_for(self, abstract_syntax: str, transfer_syntax: str) -> AcceptedContext | None:
        for context in self.accepted.values():
            if (
                context.abstract_syntax == abstract_syntax
                and context.transfer_syntax == transfer_syntax
            ):
                return context
        return None

    def contexts_for(self, abstract_syntax: str) -> list[AcceptedContext]:
        return [c for c in self.accepted.values() if c.abstract_syntax == abstract_syntax]

    # --- messages ---------------------------------------------------------------------------

    def send_message(self, context_id: int, command: bytes, data: bytes | None = None) -> None:
        """Sends a command set and its data set, fragmented to the peer's PDU size.

        The PDUs go out as a scatter/gather list (`sendmsg`): each fragment is a view of
        `data`, so a relayed instance is never copied into a send buffer, and a whole message
        takes one system call (or a few, for large data sets).
        """
        head = P_DATA_HEADER.pack(
            P_DATA_TF_PDU, 0, len(command) + 6, len(command) + 2, context_id, 0x03
        )
        parts: list[bytes | memoryview] = [head + command]
        if data is not None:
            view = memoryview(data).cast("B")
            total = len(view)
            step = self.max_fragment
            start = 0
            while True:
                fragment = view[start : start + step]
                start += len(fragment)
                control = 0x02 if start >= total else 0x00
                size = len(fragment)
                parts.append(
                    P_DATA_HEADER.pack(P_DATA_TF_PDU, 0, size + 6, size + 2, context_id, control)
                )
                parts.append(fragment)
                if control:
                    break
        with self._send_lock:
            self._check_open()
            self._send_parts(parts)

    def receive_message(self) -> Message:
        """The next complete DIMSE message from the peer (waits up to the DIMSE timeout)."""
        command_parts: list[memoryview] = []
        data_parts: list[memoryview] = []
        command: dict[int, bytes] | None = None
        context_id = 0
        message_context: int | None = None
        while True:
            if not self._fragments:
                self._read_p_data()
            fragment_context, control, fragment = self._fragments.popleft()
            # PS3.8 9.3.5.1: only accepted contexts, and one context for all of a message's
            # fragments (else a data set would be read in another context's transfer syntax).
            if fragment_context not in self.accepted:
                raise self._protocol_error(
                    f"a PDV on presentation context {fragment_context}, which is not accepted"
                )
            if message_context is None:
                message_context = fragment_context
            elif fragment_context != message_context:
                raise self._protocol_error(
                    "the fragments of one message arrived on different presentation contexts"
                )
            if control & 0x01:
                if command is not None:
                    raise self._protocol_error("a command fragment arrived inside a data set")
                command_parts.append(fragment)
                if control & 0x02:
                    command = decode_command(b"".join(command_parts))
                    context_id = fragment_context
                    announced = command.get(COMMAND_DATA_SET_TYPE, b"")
                    if int.from_bytes(announced[:2], "little") == NO_DATA_SET:
                        return Message(context_id, command)
            else:
                if command is None:
                    raise self._protocol_error("a data fragment arrived before its command")
                data_parts.append(fragment)
                if control & 0x02:
                    # One fragment (the usual case for a peer that uses ADIT's maximum PDU
                    # length) is handed on as a view of its PDU, not copied: a CT image is
                    # half a megabyte, and the answer to the peer waits for what comes first.
                    data = data_parts[0] if len(data_parts) == 1 else b"".join(data_parts)
                    return Message(context_id, command, data)

    def _read_p_data(self) -> None:
        try:
            pdu_type, _, body = read_pdu(self._reader)
        except (OSError, ValueError) as error:  # ValueError: reader closed by abort()
            self.close()
            raise UpperLayerError(_describe_os_error(error)) from error
        except PduTooLarge as error:
            # Invalid PDU parameter value, from the service provider (PS3.8 9.3.8).
            self.abort(source=2, reason=6)
            raise UpperLayerError(f"protocol error: {error}") from error
        except UpperLayerError:
            self.close()
            raise
        if pdu_type == P_DATA_TF_PDU:
            view = memoryview(body)
            offset, end = 0, len(body)
            while offset < end:
                if offset + 6 > end:
                    raise self._protocol_error("truncated PDV item")
                item_length, context_id, control = PDV_HEADER.unpack_from(body, offset)
                if item_length < 2 or offset + 4 + item_length > end:
                    raise self._protocol_error("invalid PDV item length")
                self._fragments.append(
                    (context_id, control, view[offset + 6 : offset + 4 + item_length])
                )
                offset += 4 + item_length
            if not self._fragments:
                raise self._protocol_error("empty P-DATA-TF")
            return
        if pdu_type == A_ABORT_PDU:
            self.close()
            raise UpperLayerError(abort_text(body))
        if pdu_type == A_RELEASE_RQ_PDU:
            self._send_quietly(RELEASE_RP)
            self.close()
            raise PeerReleased("the peer released the association")
        raise self._protocol_error(f"unexpected PDU 0x{pdu_type:02X}")

    # --- ending -----------------------------------------------------------------------------

    def release(self) -> None:
        """Orderly release (A-RELEASE); falls back to closing the connection on trouble."""
        if self._closed:
            return
        try:
            self._socket.settimeout(self.timeouts.acse)
            set_read_timeout(self._reader, self.timeouts.acse)
            with self._send_lock:
                self._check_open()
                self._sendall(RELEASE_RQ)
            while True:
                pdu_type, _, _ = read_pdu(self._reader)
                if pdu_type in (A_RELEASE_RP_PDU, A_ABORT_PDU):
                    break
                if pdu_type == A_RELEASE_RQ_PDU:  # release collision (PS3.8 7.2.2)
                    # As requestor (Sta9 → Sta11): answer, then still wait for the acceptor's
                    # A-RELEASE-RP, or the acceptor sees the connection drop as an abort.
                    self._send_quietly(RELEASE_RP)
                    continue
                # Late P-DATA (e.g. an answer to a cancelled request) is dropped.
        except (OSError, ValueError, UpperLayerError):
            pass
        finally:
            self.close()

    def abort(self, source: int = 0, reason: int = 0) -> None:
        """Sends A-ABORT (if no other thread is sending) and closes; safe from any thread.

        `source` 0 is ADIT as the service user (then `reason` must be 0), 2 ADIT's upper layer
        as the service provider with a PS3.8 9.3.8 reason (e.g. 6: invalid PDU parameter).
        """
        if self._closed:
            return
        if self._send_lock.acquire(blocking=False):
            try:
                pdu = ABORT if not source else abort_pdu(source, reason)
                self._send_quietly(pdu, locked=True)
            finally:
                self._send_lock.release()
        self.close()

    def close(self) -> None:
        """Closes the connection; a read blocked in another thread ends at once."""
        if self._closed:
            return
        self._closed = True
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        _close_quietly(self._socket, self._reader)

    @property
    def is_open(self) -> bool:
        return not self._closed

    def looks_alive(self) -> bool:
        """Whether an idle association may carry another operation.

        Between operations the peer has nothing to send: anything readable (an A-RELEASE-RQ,
        an A-ABORT, the end of the connection) means the peer ended it.
        """
        if self._closed or self._fragments:
            return False
        try:
            readable, _, _ = select.select([self._socket], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    # --- helpers ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise UpperLayerError("the association is closed")

    def _sendall(self, data: bytes | bytearray) -> None:
        try:
            self._socket.sendall(data)
        except OSError as error:
            self.close()
            raise UpperLayerError(_describe_os_error(error)) from error

    def _send_parts(self, parts: list[bytes | memoryview]) -> None:
        """Sends all `parts` in order, as few `sendmsg` calls as the kernel allows."""
        try:
            while parts:
                sent = self._socket.sendmsg(parts[:SEND_MAX_PARTS])
                done = 0
                while done < len(parts) and sent >= len(parts[done]):
                    sent -= len(parts[done])
                    done += 1
                parts = parts[done:]
                if sent:
                    parts[0] = memoryview(parts[0])[sent:]
        except OSError as error:
            self.close()
            raise UpperLayerError(_describe_os_error(error)) from error

    def _send_quietly(self, data: bytes, locked: bool = False) -> None:
        try:
            if locked or self._send_lock.acquire(timeout=1):
                try:
                    self._socket.sendall(data)
                finally:
                    if not locked:
                        self._send_lock.release()
        except OSError:
            pass

    def _protocol_error(self, text: str) -> UpperLayerError:
        self.abort()
        return UpperLayerError(f"protocol error: {text}")


@dataclass(frozen=True)
class AssociationRequest:
    """Who asks for an association, as the acceptor sees it."""

    calling_ae_title: str
    called_ae_title: str


# (result, source, diagnostic) of an A-ASSOCIATE-RJ (PS3.8 9.3.4).
Rejection = tuple[int, int, int]


def accept_association(
    sock: socket.socket,
    timeouts: Timeouts,
    reject: Callable[[AssociationRequest], Rejection | None],
    transfer_syntax_for: Callable[[str, list[str]], str | None],
    requestor_may_be_scp: Callable[[str], bool] = lambda sop_class_uid: False,
    request_pdu: bytes | None = None,
) -> tuple[Association, AssociationRequest] | None:
    """Negotiates an association a peer asks for on `sock`, as the acceptor.

    `reject` decides on the whole association (None: go on); `transfer_syntax_for(abstract
    syntax, proposed transfer syntaxes)` picks the syntax of each proposed context (None:
    the context is refused). Each SCP/SCU role selection item of the request is answered
    (PS3.7 D.3.3.4): the requestor keeps the SCU role it asked for, and the SCP role only where
    `requestor_may_be_scp(SOP class)` says so (the receiver never sends, so: never). Returns
    None (the connection closed) when the peer was rejected or did not ask properly.

    `request_pdu`: the whole A-ASSOCIATE-RQ PDU when the caller has read it already (the
    receiver reads requests of all connections in one thread, see `RequestReader`); else it is
    read here.
    """
    reader = None
    # ARTIM as a deadline (PS3.8 9.1.5): the socket timeout bounds each read only, so a peer
    # trickling a byte at a time would hold the connection forever without this timer.
    artim = threading.Timer(timeouts.acse, _shut_down_quietly, args=(sock,))
    artim.daemon = True
    artim.start()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeouts.acse)
        reader = pdu_reader(sock, timeouts.acse)
        if request_pdu is not None:
            pdu_type, header, body = request_pdu[0], request_pdu[:6], request_pdu[6:]
        else:
            try:
                pdu_type, header, body = read_pdu(reader)
            except PduTooLarge:
                sock.sendall(abort_pdu(2, 6))
                raise
        if pdu_type != A_ASSOCIATE_RQ_PDU:
            sock.sendall(ABORT)
            raise UpperLayerError(f"PDU 0x{pdu_type:02X} instead of an association request")
        decoded = A_ASSOCIATE_RQ()
        decoded.decode(header + body)
        asked = decoded.to_primitive()
        request = AssociationRequest(
            str(asked.calling_ae_title or "").strip(), str(asked.called_ae_title or "").strip()
        )
        rejection = reject(request)
        if rejection is not None:
            refusal = A_ASSOCIATE()
            refusal.result, refusal.result_source, refusal.diagnostic = rejection
            refusal_pdu = A_ASSOCIATE_RJ()
            refusal_pdu.from_primitive(refusal)
            sock.sendall(refusal_pdu.encode())
            _close_quietly(sock, reader)
            return None
        accepted: dict[int, AcceptedContext] = {}
        results = []
        for proposed in asked.presentation_context_definition_list:
            abstract_syntax = str(proposed.abstract_syntax)
            syntaxes = [str(syntax) for syntax in proposed.transfer_syntax]
            chosen = transfer_syntax_for(abstract_syntax, syntaxes)
            result = PresentationContext()
            result.context_id = proposed.context_id
            result.abstract_syntax = proposed.abstract_syntax
            if chosen is None:
                result.result = 0x03  # abstract syntax not supported (or none of its syntaxes)
                result.transfer_syntax = [syntaxes[0]] if syntaxes else []
            else:
                result.result = 0x00
                result.transfer_syntax = [chosen]
                accepted[int(proposed.context_id or 0)] = AcceptedContext(
                    int(proposed.context_id or 0), abstract_syntax, chosen
                )
            results.append(result)
        answer = A_ASSOCIATE()
        answer.application_context_name = APPLICATION_CONTEXT_NAME
        answer.calling_ae_title = asked.calling_ae_title
        answer.called_ae_title = asked.called_ae_title
        answer.result = 0x00
        answer.presentation_context_definition_results_list = results
        answer.user_information = _own_user_information() + _role_answers(
            asked, requestor_may_be_scp
        )
        answer_pdu = A_ASSOCIATE_AC()
        answer_pdu.from_primitive(answer)
        sock.sendall(answer_pdu.encode())
    except PduTooLarge:
        _close_quietly(sock, reader)  # A-ABORT (2, 6) was sent above
        return None
    except Exception:
        # Whatever a malformed request makes pynetdicom's codec raise (AssertionError,
        # KeyError, struct.error, ...): the peer gets an A-ABORT, never a silent hang.
        try:
            sock.sendall(abort_pdu(2, 0))
        except OSError:
            pass
        _close_quietly(sock, reader)
        return None
    finally:
        artim.cancel()
    association = Association(sock, reader, accepted, asked.maximum_length_received or 0, timeouts)
    return association, request


def _role_answers(
    asked: A_ASSOCIATE, requestor_may_be_scp: Callable[[str], bool]
) -> list[SCP_SCU_RoleSelectionNegotiation]:
    answers = []
    for item in asked.user_information:
        if not isinstance(item, SCP_SCU_RoleSelectionNegotiation) or not item.sop_class_uid:
            continue
        answer = SCP_SCU_RoleSelectionNegotiation()
        answer.sop_class_uid = item.sop_class_uid
        answer.scu_role = bool(item.scu_role)
        answer.scp_role = bool(item.scp_role) and requestor_may_be_scp(str(item.sop_class_uid))
        if answer.scu_role or answer.scp_role:
            answers.append(answer)
        # else: no item, so the default roles apply (requestor SCU only), which is the answer;
        # pynetdicom's codec cannot write an item that refuses both roles.
    return answers


def _describe_os_error(error: BaseException) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "timed out waiting for the peer"
    if isinstance(error, ValueError):
        return "the association was closed"
    return f"connection lost ({error})"


def _shut_down_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close_quietly(sock: socket.socket, reader) -> None:
    for closable in (reader, sock):
        if closable is None:
            continue
        try:
            closable.close()
        except (OSError, ValueError):
            pass
