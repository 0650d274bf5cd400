"""ADIT's receiver: a C-STORE SCP that spools pushed files and streams them to workers.

A PACS answering a C-MOVE pushes the instances to the receiver's AE title. The receiver

* accepts associations only from calling AE titles of configured servers (others are rejected
  during association negotiation with "calling AE title not recognised");
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
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from .association import prepare_dicom_libraries
from .file_transmit import DEFAULT_RETENTION, FileTransmitServer, Spool, Topic

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210

# Not a valid AE title character, so no peer can ever match it; pynetdicom treats an empty
# "required calling AE" list as "everyone may call", which must not happen when none is allowed.
_NOBODY = "\\"

AllowedAETitles = Callable[[], Iterable[str]] | Iterable[str]


class _GatedAE(AE):
    """A pynetdicom AE whose allowed calling AE titles are looked up for every association."""

    def __init__(self, ae_title: str, allowed: Callable[[], Iterable[str]]) -> None:
        super().__init__(ae_title)
        self._allowed = allowed

    @property
    def require_calling_aet(self) -> list[str]:  # type: ignore[override]
        try:
            titles = [title.strip() for title in self._allowed() if title and title.strip()]
        except Exception:
            logger.exception("Looking up the allowed calling AE titles failed; rejecting")
            titles = []
        return titles or [_NOBODY]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        raise AttributeError("the receiver's allowed calling AE titles come from its callable")


def _set_nodelay(event: Event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]


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
        self._scp: Any = None
        self._stop_event = threading.Event()
        self._janitor: threading.Thread | None = None

    @property
    def store_port(self) -> int:
        if self._scp is None:
            return self._requested_store_port
        return self._scp.server_address[1]

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

        ae = _GatedAE(self.ae_title, self._allowed)
        ae.maximum_pdu_size = 0
        ae.maximum_associations = 64
        ae.network_timeout = 120
        ae.acse_timeout = 60
        ae.dimse_timeout = 120
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_CONN_OPEN, _set_nodelay), (evt.EVT_C_STORE, self._handle_store)]
        prepare_dicom_libraries()
        self._scp = ae.start_server(
            (self.host, self._requested_store_port), block=False, evt_handlers=handlers
        )
        self._stop_event.clear()
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
        if self._scp is not None:
            # Closing the server joins association threads; a PACS holding an idle association
            # open would block the stop until its network timeout.
            for assoc in list(self._scp.active_associations):
                assoc.abort()
            self._scp.shutdown()
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

    def _handle_store(self, event: Event) -> int:
        spool = self.spool
        assert spool is not None
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        request = cast(C_STORE, event.request)
        try:
            dataset = event.dataset
            study_uid = str(dataset.StudyInstanceUID)
            series_uid = str(dataset.get("SeriesInstanceUID", ""))
            topic = Topic(calling_ae, study_uid)
        except Exception as err:
            logger.warning("Rejecting C-STORE from %s: unreadable dataset: %s", calling_ae, err)
            return STATUS_CANNOT_UNDERSTAND

        file_meta = event.file_meta
        raw_dataset: bytes = request.DataSet.getvalue()  # type: ignore[union-attr]

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
                sop_instance_uid=str(request.AffectedSOPInstanceUID),
                sop_class_uid=str(request.AffectedSOPClassUID),
                series_instance_uid=series_uid,
                transfer_syntax_uid=str(file_meta.TransferSyntaxUID),
            )
        except OSError as err:
            logger.error("Spooling an instance from %s failed: %s", calling_ae, err)
            return STATUS_OUT_OF_RESOURCES
        logger.debug("Spooled %s from %s", request.AffectedSOPInstanceUID, calling_ae)
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
