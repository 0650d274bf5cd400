"""ADIT's receiver: a C-STORE SCP that spools pushed files and streams them to workers.

A PACS answering a C-MOVE pushes the instances to the receiver's AE title. Whatever the
receiver accepts ends up at a destination, so it takes only what a worker asked for:

* An association is accepted only when it calls the receiver's own AE title ("called AE title
  not recognised" otherwise) from the AE title of a configured server *and* from that server's
  host (its resolved addresses; a server may opt out for PACS behind NAT). Others are rejected
  during association negotiation ("calling AE title not recognised"). Contexts: storage SOP
  classes and Verification, in the first proposed transfer syntax it knows (nothing is
  converted). The associations run on ADIT's own upper layer (`net/`).
* An instance is accepted only while a worker's subscription expects it: the subscription of a
  C-MOVE names the SOP Instance UIDs the source listed, before the C-MOVE is sent
  (:class:`adit.core.dicom.file_transmit.Expectations`). A push before a move, of another study
  or of an unlisted instance is refused with ``0x0124`` (refused: not authorized) and logged
  with AE title, host and study UID (no patient data).
* An instance is accepted only whole: its bytes must hold a complete data set
  (:mod:`adit.core.dicom.completeness`) whose SOP Instance UID is the one of the C-STORE
  request; otherwise ``0xC210`` (cannot understand).
* It is written to the spool (one Part-10 file, mode 0600, no rename, no metadata file) and the
  C-STORE is answered with success only afterwards. A failed write is answered with ``0xA700``
  (out of resources), so the PACS counts the sub-operation as failed, and the subscriptions
  expecting the instance are told, so the task fails (retriably) naming ADIT's receiver, not
  the PACS.
* The check above is one walk over the data set's element structure, which also picks up the
  SOP Instance, Study and Series Instance UIDs; the receiver never decodes a data set.
* Spooled files are streamed to the subscriptions that expect them
  (:mod:`adit.core.dicom.file_transmit`) and removed as soon as those have taken them, or when
  the last subscription of their move ends (the retention time bounds only what nobody claims
  after a restart).

Run it with ``manage.py receiver`` (settings driven) or, without Django, with
``python -m adit.core.dicom.receiver --help`` (used by tests that kill the process).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from .completeness import check_complete, text_value
from .config import Timeouts, prepare_dicom_libraries
from .dimse import SERIES_INSTANCE_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID
from .file_transmit import DEFAULT_RETENTION, FileTransmitServer, Spool, Topic
from .net import association, commands, errors
from .net.acceptor import RequestReader

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_NOT_AUTHORIZED = 0x0124
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
_ROUTING_TAGS = (SOP_INSTANCE_UID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID)

# Who may push: AE title → the addresses it may push from (None: any host). A plain collection
# of AE titles allows each from any host. A callable is asked at every association.
AllowedPeers = Mapping[str, Collection[str] | None] | Iterable[str]
AllowedAETitles = Callable[[], AllowedPeers] | AllowedPeers

MAX_ASSOCIATIONS = 64
# Connections whose association request has not arrived yet (no thread, at most 256 KiB each;
# see `net/acceptor.py`); more, or more from one host, are closed at once, so a flood of idle
# connections can neither exhaust the receiver nor lock the configured PACS out.
MAX_PENDING_NEGOTIATIONS = 128
MAX_PENDING_NEGOTIATIONS_PER_HOST = 16
# acse is also the ARTIM deadline for a connection to ask for an association.
TIMEOUTS = Timeouts(connection=10, acse=30, dimse=120, network=120)
# Rejections (result, source, diagnostic), PS3.8 9.3.4.
CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)
# Transient, by the service user, no reason given: "try again later" (e.g. ADIT's database is
# down), not "you are not known", which would make a PACS give up on the receiver.
TRANSIENT_NO_REASON = (0x02, 0x01, 0x01)
# Outcomes reported to `on_association` for each rejection.
REFUSAL_OUTCOMES = {
    CALLING_AE_NOT_RECOGNISED: "refused_calling_ae",
    CALLED_AE_NOT_RECOGNISED: "refused_called_ae",
    LOCAL_LIMIT_EXCEEDED: "refused_busy",
    TRANSIENT_NO_REASON: "refused_for_now",
}


def _normalized_address(address: str) -> str:
    """The address as the receiver compares it (IPv4-mapped IPv6 as plain IPv4)."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def _peers(allowed: AllowedPeers) -> dict[str, frozenset[str] | None]:
    if isinstance(allowed, Mapping):
        items = allowed.items()
    else:
        items = ((title, None) for title in allowed)
    peers: dict[str, frozenset[str] | None] = {}
    for title, hosts in items:
        if title and title.strip():
            peers[title.strip()] = (
                None if hosts is None else frozenset(_normalized_address(h) for h in hosts)
            )
    return peers


_STORAGE_SOP_CLASSES = frozenset(
    str(context.abstract_syntax) for context in AllStoragePresentationContexts
)
_TRANSFER_SYNTAXES = frozenset(str(syntax) for syntax in ALL_TRANSFER_SYNTAXES)


def _transfer_syntax_for(abstract_syntax: str, proposed: list[str]) -> str | None:
    """Storage SOP classes and Verification, in the first proposed syntax ADIT knows."""
    if abstract_syntax not in _STORAGE_SOP_CLASSES and abstract_syntax != Verification:
        return None
    return next((syntax for syntax in proposed if syntax in _TRANSFER_SYNTAXES), None)


class Receiver:
    """C-STORE SCP plus file transmit server; ``start()`` and ``stop()`` from any thread.

    Args:
        ae_title: the receiver's own AE title (the C-MOVE destination).
        store_port: C-STORE SCP port (0 = any free port, see ``store_port`` after start).
        transmit_port: file transmit port (0 = any free port).
        spool_dir: where received files are kept until they expire.
        allowed_calling_aes: who may push: AE titles, or a mapping of AE title to the
            addresses it may push from (None: any), or a callable returning either (called for
            every association, so keep it cheap).
        host: address both servers listen on.
        retention: seconds a spooled file is kept for late subscribers.
        heartbeat_interval: seconds between heartbeats to idle subscribers.
        on_association: called as ``on_association(calling_ae_title, outcome)`` for each
            association request ("accepted", "refused_calling_ae", "refused_called_ae",
            "refused_busy"; refused unknown peers come as "(not configured)"), in the
            association's thread; it must be quick (ADIT counts them for /metrics).
    """

    def __init__(
        self,
        ae_title: str,
        store_port: int,
        transmit_port: int,
        spool_dir: Path | str,
        allowed_calling_aes: AllowedAETitles,
        host: str = "0.0.0.0",
        retention: float = DEFAULT_RETENTION,
        heartbeat_interval: float = 5.0,
        transmit_secret: bytes | None = None,
        on_association: Callable[[str, str], None] | None = None,
    ) -> None:
        self.transmit_secret = transmit_secret
        self.on_association = on_association
        if not ae_title.strip() or len(ae_title.strip()) > 16:
            raise ValueError(f"receiver AE title {ae_title!r} must have 1-16 characters")
        self.ae_title = ae_title.strip()
        self.host = host
        self._requested_store_port = store_port
        self._requested_transmit_port = transmit_port
        self.spool_dir = Path(spool_dir)
        self.retention = retention
        self.heartbeat_interval = heartbeat_interval
        if callable(allowed_calling_aes):
            self._allowed: Callable[[], AllowedPeers] = allowed_calling_aes
        else:
            fixed = _peers(allowed_calling_aes)
            self._allowed = lambda: fixed
        self.spool: Spool | None = None
        self.transmit: FileTransmitServer | None = None
        self._listener: socket.socket | None = None
        self._active: set[association.Association] = set()
        self._active_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._janitor: threading.Thread | None = None

    @property
    def store_port(self) -> int:
        if self._listener is None:
            return self._requested_store_port
        return self._listener.getsockname()[1]

    @property
    def transmit_port(self) -> int:
        if self.transmit is None:
            return self._requested_transmit_port
        return self.transmit.port

    def start(self) -> None:
        self.spool = Spool(self.spool_dir, self.retention)
        self.transmit = FileTransmitServer(
            self.spool,
            self.host,
            self._requested_transmit_port,
            self.heartbeat_interval,
            secret=self.transmit_secret,
        )
        self.transmit.start()

        prepare_dicom_libraries()
        self._stop_event.clear()
        self._listener = socket.create_server(
            (self.host, self._requested_store_port), reuse_port=False, backlog=64
        )
        threading.Thread(target=self._accept_loop, name="receiver-accept", daemon=True).start()
        self._janitor = threading.Thread(target=self._expire_loop, name="spool-janitor")
        self._janitor.daemon = True
        self._janitor.start()
        logger.info(
            "Receiver %s listening: C-STORE on %s:%d, file transmit on %s:%d",
            self.ae_title,
            self.host,
            self.store_port,
            self.host,
            self.transmit_port,
        )

    def stop(self) -> None:
        self._stop_event.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._active_lock:
            active = list(self._active)
        for assoc in active:  # a PACS holding an idle association open must not block the stop
            assoc.abort()
        if self.transmit is not None:
            self.transmit.stop()
        if self._janitor is not None:
            self._janitor.join(timeout=5)
        logger.info("Receiver %s stopped", self.ae_title)

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _expire_loop(self) -> None:
        interval = max(1.0, min(30.0, self.retention / 4))
        while not self._stop_event.wait(interval):
            if self.transmit is not None:
                self.transmit.expectations.prune()
            if self.spool is not None:
                try:
                    self.spool.expire()
                except OSError:
                    logger.exception("Expiring spooled files failed")

    # --- C-STORE SCP --------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        RequestReader(
            listener,
            self._negotiate,
            lambda: TIMEOUTS.acse,
            self._stop_event,
            max_pending=MAX_PENDING_NEGOTIATIONS,
            max_pending_per_host=MAX_PENDING_NEGOTIATIONS_PER_HOST,
        ).run()

    def _negotiate(self, sock: socket.socket, peer_address: str, request_pdu: bytes) -> None:
        """Called with a complete A-ASSOCIATE-RQ; only an accepted association gets a thread."""
        negotiated = association.accept_association(
            sock,
            TIMEOUTS,
            lambda request: self._decide(request, peer_address),
            _transfer_syntax_for,
            request_pdu=request_pdu,
        )
        if negotiated is None:
            return
        threading.Thread(
            target=self._serve,
            args=(negotiated, peer_address),
            name="receiver-association",
            daemon=True,
        ).start()

    def _decide(
        self, request: association.AssociationRequest, peer_address: str
    ) -> association.Rejection | None:
        """`_rejection`, with each refusal reported to `on_association`."""
        rejection = self._rejection(request, peer_address)
        if rejection is not None:
            # An unknown peer's AE title is whatever it sent: counted under one label, so that
            # a scan with random titles cannot grow the metrics without bound.
            known = rejection in (LOCAL_LIMIT_EXCEEDED, TRANSIENT_NO_REASON)
            self._report(
                request.calling_ae_title if known else "(not configured)",
                REFUSAL_OUTCOMES.get(rejection, "refused"),
            )
        return rejection

    def _rejection(
        self, request: association.AssociationRequest, peer_address: str
    ) -> association.Rejection | None:
        if request.called_ae_title != self.ae_title:
            logger.warning(
                "Rejected an association from %r at %s: it called %r, not the receiver's AE title",
                request.calling_ae_title,
                peer_address,
                request.called_ae_title,
            )
            return CALLED_AE_NOT_RECOGNISED
        try:
            allowed = _peers(self._allowed())
        except Exception:
            logger.exception("Looking up the allowed calling AE titles failed; rejecting for now")
            return TRANSIENT_NO_REASON
        if request.calling_ae_title not in allowed:
            logger.warning(
                "Rejected an association from %r at %s: not a configured server",
                request.calling_ae_title,
                peer_address,
            )
            return CALLING_AE_NOT_RECOGNISED
        hosts = allowed[request.calling_ae_title]
        if hosts is not None and _normalized_address(peer_address) not in hosts:
            logger.warning(
                "Rejected an association from %r at %s: not the host configured for it",
                request.calling_ae_title,
                peer_address,
            )
            return CALLING_AE_NOT_RECOGNISED
        with self._active_lock:
            if len(self._active) >= MAX_ASSOCIATIONS:
                return LOCAL_LIMIT_EXCEEDED
        return None

    def _serve(
        self,
        negotiated: tuple[association.Association, association.AssociationRequest],
        peer_address: str,
    ) -> None:
        assoc, request = negotiated
        self._report(request.calling_ae_title, "accepted")
        with self._active_lock:
            self._active.add(assoc)
        try:
            while True:
                message = assoc.receive_message()
                command_field = message.command_field
                message_id = message.us(commands.MESSAGE_ID)
                sop_class = message.ui(commands.AFFECTED_SOP_CLASS_UID)
                if command_field == commands.C_STORE_RQ:
                    sop_instance = message.ui(commands.AFFECTED_SOP_INSTANCE_UID)
                    status = self._store(assoc, request.calling_ae_title, peer_address, message)
                    response = commands.c_store_rsp(message_id, sop_class, sop_instance, status)
                elif command_field == commands.C_ECHO_RQ:
                    response = commands.c_echo_rsp(message_id, sop_class)
                else:
                    logger.warning(
                        "Aborting an association from %s: unexpected DIMSE command 0x%04X",
                        request.calling_ae_title,
                        command_field,
                    )
                    assoc.abort()
                    return
                assoc.send_message(message.context_id, response)
        except errors.PeerReleased:
            pass
        except errors.UpperLayerError as error:
            logger.info("Association from %s ended: %s", request.calling_ae_title, error)
        except Exception:  # a request nobody foresaw must not kill the thread silently
            logger.warning(
                "Aborting an association from %s: unexpected error",
                request.calling_ae_title,
                exc_info=True,
            )
            assoc.abort()
        finally:
            assoc.close()
            with self._active_lock:
                self._active.discard(assoc)

    def _report(self, calling_ae: str, outcome: str) -> None:
        if self.on_association is None:
            return
        try:
            self.on_association(calling_ae, outcome)
        except Exception:  # counting must not break an association
            logger.exception("Reporting an association outcome failed")

    def _store(
        self,
        assoc: association.Association,
        calling_ae: str,
        peer_address: str,
        message: commands.Message,
    ) -> int:
        spool, transmit = self.spool, self.transmit
        assert spool is not None and transmit is not None
        context = assoc.accepted.get(message.context_id)
        sop_class = message.ui(commands.AFFECTED_SOP_CLASS_UID)
        sop_instance = message.ui(commands.AFFECTED_SOP_INSTANCE_UID)
        raw_dataset = message.data
        try:
            if context is None or raw_dataset is None:
                raise ValueError("no data set on an accepted presentation context")
            transfer_syntax = context.transfer_syntax
            # One walk over the element structure checks that the data set is whole and picks
            # up the UIDs that route it; the data set itself is never decoded here.
            found = check_complete(raw_dataset, transfer_syntax, capture=_ROUTING_TAGS)
            if text_value(found.get(SOP_INSTANCE_UID)) != sop_instance:
                raise ValueError("its SOP Instance UID is not the one of the C-STORE request")
            study_uid = text_value(found.get(STUDY_INSTANCE_UID))
            if not study_uid:
                raise ValueError("no StudyInstanceUID")
            series_uid = text_value(found.get(SERIES_INSTANCE_UID))
            topic = Topic(calling_ae, study_uid)
        except Exception as err:
            logger.warning("Rejecting C-STORE from %s: unreadable dataset: %s", calling_ae, err)
            return STATUS_CANNOT_UNDERSTAND
        if not transmit.expectations.expects(topic, sop_instance):
            logger.warning(
                "Refused an instance of study %s from %s at %s: no C-MOVE in flight asked for it",
                study_uid,
                calling_ae,
                peer_address,
            )
            return STATUS_NOT_AUTHORIZED

        try:
            spool.add(
                topic,
                raw_dataset,
                sop_instance_uid=sop_instance,
                sop_class_uid=sop_class,
                series_instance_uid=series_uid,
                transfer_syntax_uid=transfer_syntax,
            )
        except OSError as err:
            logger.error("Spooling an instance from %s failed: %s", calling_ae, err)
            transmit.expectations.report_store_failure(
                topic, sop_instance, f"the spool could not be written ({err.strerror or err})"
            )
            return STATUS_OUT_OF_RESOURCES
        logger.debug("Spooled %s from %s", sop_instance, calling_ae)
        return STATUS_SUCCESS


def main(argv: list[str] | None = None) -> None:
    """Runs a receiver without Django (fixed allowed AE titles) until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="ADIT receiver without Django")
    parser.add_argument("--ae-title", default="ADIT")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--store-port", type=int, default=11112)
    parser.add_argument("--transmit-port", type=int, default=14638)
    parser.add_argument("--spool-dir", required=True)
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        help="allowed calling AE title, optionally with the address it pushes from: AE@address",
    )
    parser.add_argument("--retention", type=float, default=DEFAULT_RETENTION)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    allowed: dict[str, Collection[str] | None] = {}
    for entry in args.allow:
        title, _, address = entry.partition("@")
        allowed[title] = [address] if address else None
    receiver = Receiver(
        args.ae_title,
        args.store_port,
        args.transmit_port,
        args.spool_dir,
        allowed,
        host=args.host,
        retention=args.retention,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    receiver.start()
    print(f"READY {receiver.store_port} {receiver.transmit_port}", flush=True)
    try:
        stop.wait()
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
