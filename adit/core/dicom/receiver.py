"""ADIT's receiver: a C-STORE SCP that spools pushed files and streams them to workers.

A PACS answering a C-MOVE pushes the instances to the receiver's AE title. The receiver

* accepts associations only from calling AE titles of configured servers (others are rejected
  during association negotiation with "calling AE title not recognised"), with storage SOP
  classes and Verification in the first proposed transfer syntax it knows (nothing is
  converted); the associations run on ADIT's own upper layer (`upper_layer.py`), one thread
  each;
* writes each instance to the spool (write, rename) and answers the C-STORE with
  success only afterwards; a failed write is answered with ``0xA700`` (out of resources), so the
  PACS counts the sub-operation as failed instead of delivered;
* streams spooled files to subscribed workers (:mod:`adit.core.dicom.file_transmit`), and
  removes them from the spool after the retention time.

Run it with ``manage.py receiver`` (settings driven) or, without Django, with
``python -m adit.core.dicom.receiver --help`` (used by tests that kill the process).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.dsutils import create_file_meta
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from . import upper_layer
from .association import prepare_dicom_libraries
from .config import Timeouts
from .dimse import SERIES_INSTANCE_UID, STUDY_INSTANCE_UID, _decode_from, uid_of
from .file_transmit import DEFAULT_RETENTION, FileTransmitServer, Spool, Topic

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210

AllowedAETitles = Callable[[], Iterable[str]] | Iterable[str]

MAX_ASSOCIATIONS = 64
TIMEOUTS = Timeouts(connection=10, acse=60, dimse=120, network=120)
# Rejections (result, source, diagnostic), PS3.8 9.3.4.
CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)

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
        allowed_calling_aes: AE titles allowed to push, or a callable returning them (called
            for every association, so keep it cheap).
        host: address both servers listen on.
        retention: seconds a spooled file is kept for late subscribers.
        heartbeat_interval: seconds between heartbeats to idle subscribers.
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
    ) -> None:
        self.transmit_secret = transmit_secret
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
            self._allowed: Callable[[], Iterable[str]] = allowed_calling_aes
        else:
            fixed = frozenset(allowed_calling_aes)
            self._allowed = lambda: fixed
        self.spool: Spool | None = None
        self.transmit: FileTransmitServer | None = None
        self._listener: socket.socket | None = None
        self._active: set[upper_layer.Association] = set()
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
            if self.spool is not None:
                try:
                    self.spool.expire()
                except OSError:
                    logger.exception("Expiring spooled files failed")

    # --- C-STORE SCP --------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop_event.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(
                target=self._serve, args=(sock,), name="receiver-association", daemon=True
            ).start()

    def _rejection(self, request: upper_layer.AssociationRequest) -> upper_layer.Rejection | None:
        try:
            allowed = {title.strip() for title in self._allowed() if title and title.strip()}
        except Exception:
            logger.exception("Looking up the allowed calling AE titles failed; rejecting")
            allowed = set()
        if request.calling_ae_title not in allowed:
            logger.warning(
                "Rejected an association from %r: not a configured server", request.calling_ae_title
            )
            return CALLING_AE_NOT_RECOGNISED
        with self._active_lock:
            if len(self._active) >= MAX_ASSOCIATIONS:
                return LOCAL_LIMIT_EXCEEDED
        return None

    def _serve(self, sock: socket.socket) -> None:
        negotiated = upper_layer.accept_association(
            sock, TIMEOUTS, self._rejection, _transfer_syntax_for
        )
        if negotiated is None:
            return
        assoc, request = negotiated
        with self._active_lock:
            self._active.add(assoc)
        try:
            while True:
                message = assoc.receive_message()
                command_field = message.command_field
                message_id = message.us(upper_layer.MESSAGE_ID)
                sop_class = message.ui(upper_layer.AFFECTED_SOP_CLASS_UID)
                if command_field == upper_layer.C_STORE_RQ:
                    sop_instance = message.ui(upper_layer.AFFECTED_SOP_INSTANCE_UID)
                    status = self._store(assoc, request.calling_ae_title, message)
                    response = upper_layer.c_store_rsp(message_id, sop_class, sop_instance, status)
                elif command_field == upper_layer.C_ECHO_RQ:
                    response = upper_layer.c_echo_rsp(message_id, sop_class)
                else:
                    logger.warning(
                        "Aborting an association from %s: unexpected DIMSE command 0x%04X",
                        request.calling_ae_title,
                        command_field,
                    )
                    assoc.abort()
                    return
                assoc.send_message(message.context_id, response)
        except upper_layer.PeerReleased:
            pass
        except upper_layer.UpperLayerError as error:
            logger.info("Association from %s ended: %s", request.calling_ae_title, error)
        finally:
            assoc.close()
            with self._active_lock:
                self._active.discard(assoc)

    def _store(
        self, assoc: upper_layer.Association, calling_ae: str, message: upper_layer.Message
    ) -> int:
        spool = self.spool
        assert spool is not None
        context = assoc.accepted.get(message.context_id)
        sop_class = message.ui(upper_layer.AFFECTED_SOP_CLASS_UID)
        sop_instance = message.ui(upper_layer.AFFECTED_SOP_INSTANCE_UID)
        raw_dataset = message.data
        try:
            if context is None or raw_dataset is None:
                raise ValueError("no data set on an accepted presentation context")
            transfer_syntax = context.transfer_syntax
            dataset = _decode_from(raw_dataset, transfer_syntax)
            study_uid = uid_of(dataset, STUDY_INSTANCE_UID)
            if not study_uid:
                raise ValueError("no StudyInstanceUID")
            series_uid = uid_of(dataset, SERIES_INSTANCE_UID)
            topic = Topic(calling_ae, study_uid)
            file_meta = create_file_meta(
                sop_class_uid=UID(sop_class),
                sop_instance_uid=UID(sop_instance),
                transfer_syntax=UID(transfer_syntax),
            )
        except Exception as err:
            logger.warning("Rejecting C-STORE from %s: unreadable dataset: %s", calling_ae, err)
            return STATUS_CANNOT_UNDERSTAND

        meta_buffer = DicomBytesIO()
        write_file_meta_info(meta_buffer, file_meta, enforce_standard=True)
        header = b"\x00" * 128 + b"DICM" + meta_buffer.getvalue()

        def write(file: Any) -> None:
            file.write(header)
            file.write(raw_dataset)

        try:
            spool.add(
                topic,
                write,
                sop_instance_uid=sop_instance,
                sop_class_uid=sop_class,
                series_instance_uid=series_uid,
                transfer_syntax_uid=transfer_syntax,
            )
        except OSError as err:
            logger.error("Spooling an instance from %s failed: %s", calling_ae, err)
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
    parser.add_argument("--allow", action="append", default=[], help="allowed calling AE title")
    parser.add_argument("--retention", type=float, default=DEFAULT_RETENTION)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    receiver = Receiver(
        args.ae_title,
        args.store_port,
        args.transmit_port,
        args.spool_dir,
        args.allow,
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
