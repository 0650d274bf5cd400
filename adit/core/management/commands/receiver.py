"""Run ADIT's receiver: `manage.py receiver` (C-STORE SCP + file transmit server).

AE title and ports come from the settings ``RECEIVER_AE_TITLE``, ``STORE_SCP_PORT`` and
``FILE_TRANSMIT_PORT``; files are spooled under ``ADIT_DATA_DIR / "receiver-spool"``. Only
configured DICOM servers may push, each with its AE title from its host's addresses (unless
"C-MOVE pushes from any host" is ticked for it). The list is re-read from the database, and the
hosts resolved again, every ``--refresh`` seconds, so a newly added server can push without a
restart and a PACS that moved to another address is followed.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from adit.core.dicom.file_transmit import DEFAULT_RETENTION
from adit.core.dicom.receiver import Receiver
from adit.core.dicom_settings import file_transmit_secret
from adit.observability.recording import AssociationCounts

logger = logging.getLogger("adit.receiver")


def resolved_addresses(host: str) -> frozenset[str]:
    """The addresses `host` resolves to (empty when it does not resolve)."""
    if not host.strip():
        return frozenset()
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as error:
        logger.warning("Cannot resolve the host %r of a configured server: %s", host, error)
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


class ConfiguredAETitles:
    """Who may push: the configured `DicomServer` rows, as AE title → addresses (None: any),
    cached and refreshed in the background."""

    def __init__(self, refresh_interval: float) -> None:
        self.refresh_interval = refresh_interval
        self._peers: dict[str, frozenset[str] | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self) -> dict[str, frozenset[str] | None]:
        return self._peers

    def load(self) -> None:
        try:
            server_model = apps.get_model("core", "DicomServer")
        except LookupError:
            logger.warning("No DicomServer model yet: every calling AE title is rejected")
            return
        try:
            close_old_connections()
            servers = server_model.objects.all()
            if any(field.name == "active" for field in server_model._meta.get_fields()):
                servers = servers.filter(active=True)  # a deactivated server may not push
            rows = list(servers.values_list("ae_title", "host", "pushes_from_any_host"))
        except (OperationalError, InterfaceError) as error:
            # PostgreSQL is restarting or unreachable: the receiver goes on with what it knew
            # and reads the list again at the next refresh.
            logger.warning(
                "Database unreachable (%s); keeping the last list of AE titles",
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
            )
            return
        except Exception:
            logger.exception("Reading the configured AE titles failed; keeping the last list")
            return
        finally:
            if threading.current_thread() is not threading.main_thread():
                connection.close()
        peers: dict[str, frozenset[str] | None] = {}
        for title, host, from_any_host in rows:
            if not title or not title.strip():
                continue
            peers[title.strip()] = None if from_any_host else resolved_addresses(host or "")
        if peers != self._peers:
            logger.info("Receiver accepts pushes from %d configured server(s)", len(peers))
        self._peers = peers

    def start(self) -> None:
        self.load()
        self._thread = threading.Thread(target=self._refresh_loop, name="ae-titles", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            self.load()


class Command(BaseCommand):
    help = (
        "Run the receiver: a C-STORE SCP for C-MOVEd instances and the file transmit server "
        "that streams them to workers. SIGINT/SIGTERM stop it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--host",
            default=None,
            help="Address to listen on (default: STORE_SCP_HOST; 0.0.0.0 for PACS on other hosts).",
        )
        parser.add_argument(
            "--refresh", type=float, default=30.0, help="Seconds between AE title refreshes."
        )
        parser.add_argument(
            "--retention",
            type=float,
            default=DEFAULT_RETENTION,
            help="Seconds a received file stays in the spool for late subscribers.",
        )

    def handle(self, *args, host: str | None, refresh: float, retention: float, **options) -> None:
        allowed = ConfiguredAETitles(refresh)
        allowed.start()
        spool_dir = Path(settings.ADIT_DATA_DIR) / "receiver-spool"
        # Associations accepted and refused, for /metrics (written to the database every 10 s).
        association_counts = AssociationCounts()
        association_counts.start()
        receiver = Receiver(
            settings.RECEIVER_AE_TITLE,
            settings.STORE_SCP_PORT,
            settings.FILE_TRANSMIT_PORT,
            spool_dir,
            allowed,
            host=host or settings.STORE_SCP_HOST,
            transmit_secret=file_transmit_secret(),
            retention=retention,
            on_association=association_counts,
        )
        stop = threading.Event()

        def request_stop(signum, frame) -> None:
            logger.info("Receiver stopping (signal %d)", signum)
            stop.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        receiver.start()
        self.stdout.write(
            f"Receiver {receiver.ae_title}: C-STORE port {receiver.store_port}, "
            f"file transmit port {receiver.transmit_port}, spool {spool_dir}"
        )
        self.stdout.flush()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            receiver.stop()
            allowed.stop()
            association_counts.stop()
