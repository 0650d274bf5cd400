"""Direct download of one study as a ZIP that streams while the PACS delivers it.

The fetch runs in a thread of its own and hands finished files to the response through a
bounded queue, so a slow PACS or a slow browser never blocks the event loop (other
users keep being served) and memory stays bounded. The ZIP is written with the standard
library's zipfile onto a non-seekable stream (entries with data descriptors, no compression:
DICOM pixel data rarely compresses and the CPU is better spent elsewhere).
"""

from __future__ import annotations

import asyncio
import io
import logging
import queue
import threading
import time
import zipfile
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from adit.audit.models import AuditEntry
from adit.audit.services import record
from adit.core.deidentification import options_for_new_job, pseudonymization_seed
from adit.core.dicom.errors import DicomError
from adit.core.dicom.pseudonymizer import InstanceTransformer
from adit.core.dicom.writer import (
    encode_instance,
    instance_relative_path,
    sanitize_path_component,
)
from adit.core.models import DicomNode, DicomServer
from adit.core.validators import (
    validate_no_backslash_or_control_characters,
    validate_uid,
)

from .services import make_operator

logger = logging.getLogger(__name__)

QUEUE_SIZE = 64  # finished files waiting for the browser; bounds the memory of one download


class _ChunkStream(io.RawIOBase):
    """A write-only, non-seekable stream that collects what zipfile writes."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _text(status: int, message: str) -> HttpResponse:
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _validate(params) -> dict | str:
    """The cleaned parameters, or a message naming what is wrong.

    The PatientID is taken as the PACS has it: ``*`` and ``?`` are allowed (the study UID is
    what identifies the study; the DICOM layer leaves such a PatientID out of the fetch).
    """
    patient_id = params.get("patient_id", "")
    study_uid = params.get("study_uid", "").strip()
    if not patient_id:
        return "Patient ID: the parameter patient_id is missing."
    if len(patient_id) > 64:
        return "Patient ID: at most 64 characters are allowed."
    try:
        validate_no_backslash_or_control_characters(patient_id)
    except ValidationError as error:
        return f"Patient ID: {' '.join(error.messages)}"
    if not study_uid:
        return "Study Instance UID: the parameter study_uid is missing."
    try:
        validate_uid(study_uid)
    except ValidationError as error:
        return f"Study Instance UID: {' '.join(error.messages)}"
    options = {"patient_id": patient_id, "study_uid": study_uid}
    for name in ("pseudonym", "trial_protocol_id", "trial_protocol_name"):
        value = params.get(name, "").strip()
        label = name.replace("_", " ").capitalize()
        if len(value) > 64:
            return f"{label}: at most 64 characters are allowed."
        try:
            validate_no_backslash_or_control_characters(value)
        except ValidationError as error:
            return f"{label}: {' '.join(error.messages)}"
        options[name] = value
    return options


def _check_access(user, server_id: int) -> tuple[DicomServer | None, str, bool, list[str]]:
    """(server, error, may_transfer_unpseudonymized, the group's de-identification options) —
    runs in a sync thread (ORM)."""
    if not user.has_perm("selective_transfer.can_download_study"):
        return None, "forbidden", False, []
    node = (
        DicomNode.objects.accessible_by_user(user, "source")
        .filter(pk=server_id, node_type=DicomNode.NodeType.SERVER)
        .first()
    )
    if node is None:
        return None, "not_found", False, []
    return (
        node.concrete,  # type: ignore[return-value]
        "",
        user.has_perm("selective_transfer.can_transfer_unpseudonymized"),
        options_for_new_job(user, None),
    )


async def download_study(
    request: HttpRequest, server_id: int
) -> HttpResponse | StreamingHttpResponse:
    """The study named by the query parameters ``patient_id`` and ``study_uid``."""
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    server, problem, may_skip_pseudonym, deid_options = await sync_to_async(_check_access)(
        user, server_id
    )
    if problem == "forbidden":
        return _text(403, "You may not download studies (permission can_download_study).")
    if server is None:
        return _text(404, "The server is unknown or your active group may not query it.")
    options = _validate(request.GET)
    if isinstance(options, str):
        return _text(400, options)
    patient_id, study_uid = options["patient_id"], options["study_uid"]
    if not options["pseudonym"] and not may_skip_pseudonym:
        return _text(
            400, "A pseudonym is required: your group may only download pseudonymized data."
        )
    if request.GET.get("check") == "1":
        # The page asks first, so a refusal shows next to the results instead of replacing
        # the page with it; nothing is fetched for the check.
        return _text(200, "The download may start.")
    pseudonym = options["pseudonym"]
    try:
        transformer = InstanceTransformer(
            pseudonym=pseudonym or None,
            trial_protocol_id=options["trial_protocol_id"] or None,
            trial_protocol_name=options["trial_protocol_name"] or None,
            # The installation-wide seed: the same UIDs as a transfer job with this pseudonym.
            seed=pseudonymization_seed(pseudonym) if pseudonym else None,
            exclude_modalities=settings.EXCLUDE_MODALITIES,
            deid_options=deid_options,
        )
    except ValueError as error:
        return _text(400, str(error))

    producer = _Producer(server, patient_id, study_uid, transformer, options["pseudonym"])
    first = await producer.start()
    try:
        await _audit(user, request, server, options, first[0] == "file")
    except BaseException:
        producer.stop.set()  # nothing leaves unaudited: end the fetch at the PACS
        producer.operator.abort()
        raise
    if first[0] == "error":
        error = first[1]
        if isinstance(error, DicomError):
            return _text(502, f"The study could not be fetched from {server.name}: {error}")
        logger.error("Direct download from %s failed", server.name, exc_info=error)
        return _text(500, "The download failed unexpectedly; the administrators were notified.")
    if first[0] == "end":
        return _text(404, f"{server.name} returned no instances for this study.")
    response = StreamingHttpResponse(producer.zip_stream(first), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{producer.archive_name()}"'
    return response


async def _audit(user, request, server, options: dict, found: bool) -> None:
    await sync_to_async(record)(
        AuditEntry.Action.RETRIEVE,
        user=user,
        request=request,
        outcome=AuditEntry.Outcome.SUCCESS if found else AuditEntry.Outcome.FAILURE,
        patient_id=options["patient_id"],
        pseudonym=options["pseudonym"],
        study_uid=options["study_uid"],
        source=server,
        details={
            "via": "ZIP download",
            **{name: options[name] for name in ("trial_protocol_id", "trial_protocol_name")},
        },
    )


class _Producer:
    """Fetches and transforms the study in a thread; the response reads the queue."""

    def __init__(self, server, patient_id, study_uid, transformer, pseudonym) -> None:
        self.server = server
        self.patient_id = patient_id
        self.study_uid = study_uid
        self.transformer = transformer
        self.pseudonym = pseudonym
        self.stop = threading.Event()
        # StudyInstanceUID of the first delivered instance (pseudonymized when it is).
        self.delivered_study_uid = ""
        self.operator = make_operator(server)
        # A thread-safe queue polled from the event loop: the response may be consumed on
        # another event loop than the one the view ran on (e.g. under WSGI).
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)

    async def start(self):
        threading.Thread(target=self._run, name="study-download", daemon=True).start()
        return await self._get()

    async def _get(self):
        delay = 0.001
        while True:
            try:
                return self.queue.get_nowait()
            except queue.Empty:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _put(self, item) -> bool:
        """Blocks while the browser is behind (bounded memory); False once stopped."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for ds in self.operator.fetch_study(self.patient_id, self.study_uid):
                if self.stop.is_set():
                    return
                ds = self.transformer.transform(ds)
                if ds is None:
                    continue
                if not self.delivered_study_uid:
                    self.delivered_study_uid = str(ds.get("StudyInstanceUID", "") or "")
                path = instance_relative_path(ds, patient_folder=self.pseudonym or None)
                if not self._put(("file", path.as_posix(), encode_instance(ds))):
                    return
            self._put(("end", None, b""))
        except Exception as error:  # noqa: BLE001 — handed to the response
            if not self.stop.is_set():
                self._put(("error", error, b""))

    def archive_name(self) -> str:
        """The ZIP's file name: only pseudonymized values when the study is pseudonymized (the
        pseudonym and the new StudyInstanceUID), never the original UID then."""
        if self.pseudonym:
            name = f"study_download_{self.pseudonym}_{self.delivered_study_uid}"
        else:
            name = f"study_download_{self.study_uid}"
        return sanitize_path_component(name) + ".zip"

    async def zip_stream(self, first) -> AsyncIterator[bytes]:
        stream = _ChunkStream()
        archive = zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        item = first
        try:
            while True:
                kind, value, data = item
                if kind == "file":
                    info = zipfile.ZipInfo(value, date_time=time.localtime()[:6])
                    info.compress_type = zipfile.ZIP_STORED
                    archive.writestr(info, data)
                elif kind == "error":
                    logger.warning("Direct download from %s broke off: %s", self.server.name, value)
                    archive.writestr(
                        "error.txt",
                        f"The download broke off: {value}\nThe files above are incomplete.\n",
                    )
                    break
                else:
                    break
                yield stream.take()
                item = await self._get()
            archive.close()
            yield stream.take()
        finally:
            # The browser went away (or we are done): stop the fetch at the PACS.
            self.stop.set()
            self.operator.abort()
