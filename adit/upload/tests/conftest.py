"""Fixtures of the upload tests: a researcher allowed to upload, destinations, valid files."""

from __future__ import annotations

import dataclasses
import io
import socket
import threading
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Permission
from pydicom import Dataset

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core.dicom.pseudonymizer import Pseudonymizer
from adit.core.dicom.testing.peers import LOOPBACK
from adit.core.models import DicomNodeGroupAccess, DicomServer
from adit.upload.models import UPLOAD_DEID_OPTIONS

PSEUDONYM = "UPL-1"


def grant(group, *codenames: str) -> None:
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="upload", codename__in=codenames)
    )


def give_access(group, node, destination: bool = True) -> None:
    DicomNodeGroupAccess.objects.create(
        node=node, group=group, source=False, destination=destination
    )


def server_from_orthanc(orthanc, name: str) -> DicomServer:
    return DicomServer.objects.create(**dataclasses.asdict(orthanc.server_config(name=name)))


@pytest.fixture
def uploaders(db):
    group = GroupFactory(name="Uploaders")
    grant(group, "add_uploadjob")
    return group


@pytest.fixture
def uploader(uploaders):
    """A non-staff researcher who may upload (pseudonymized only)."""
    return UserFactory(username="uma", groups=[uploaders])


def deidentify_like_the_browser(ds: Dataset, pseudonym: str = PSEUDONYM) -> Dataset:
    """What the page sends, made with the server-side pseudonymizer (same table and options);
    its UIDs are then put under the browser's 2.25 root."""
    Pseudonymizer(seed="test-upload", options=UPLOAD_DEID_OPTIONS).pseudonymize(ds, pseudonym)
    for element in ds.iterall():
        if element.VR == "UI" and not element.keyword.endswith("ClassUID"):
            value = str(element.value)
            if value.startswith("2.") and not value.startswith("2.25."):
                element.value = "2.25." + value[2:40].lstrip("0")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class RecordingProxy:
    """A TCP relay in front of ADIT's web server that keeps every byte the browser sends.

    The browser talks to ADIT only through it (the page is opened at `url`), so what it
    recorded is everything that left the browser for ADIT: request lines, headers and bodies
    exactly as on the wire, however the page built them (a Blob of file slices included, which
    DevTools' request interception does not show).
    """

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or LOOPBACK, parts.port or 80)
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(0.2)
        self.url = f"http://{LOOPBACK}:{self.listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._sent: list[bytearray] = []
        self._closing = False
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> RecordingProxy:
        self._start(self._accept)
        return self

    def __exit__(self, *exc_info) -> None:
        self._closing = True
        self.listener.close()

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            record = bytearray()
            with self._lock:
                self._sent.append(record)
            self._start(self._pipe, client, upstream, record)
            self._start(self._pipe, upstream, client, None)

    def _pipe(self, source: socket.socket, target: socket.socket, record) -> None:
        try:
            while data := source.recv(1 << 16):
                if record is not None:
                    with self._lock:
                        record += data
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def sent(self) -> list[bytes]:
        """What the browser sent, one byte string per connection."""
        with self._lock:
            return [bytes(record) for record in self._sent]

    def clear(self) -> None:
        with self._lock:
            for record in self._sent:
                record.clear()
