"""What the upload views do: create a job, receive one file, say what a job holds, commit.

A received file goes to disk as it is read (never whole into memory), is parsed and checked
(`rules.check_instance`) and only then moved to its staged place and recorded; a refused or
failed file leaves nothing behind. Recording is idempotent by SOP Instance UID.

A batch (`receive_batch`, the page's multipart/related requests) is checked file by file from
memory (it is at most UPLOAD_MAX_FILE_SIZE), and then recorded with two queries for the whole
batch (which of its SOP Instance UIDs the job holds; one INSERT … ON CONFLICT DO NOTHING
RETURNING): per-file queries cost more than the parse and the check on a loaded database.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.db.models.functions import Coalesce
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from adit.audit.models import AuditEntry
from adit.audit.services import record
from adit.core.validators import validate_uid

from .models import UPLOAD_DEID_OPTIONS, UploadInstance, UploadJob
from .rules import Refusal, check_instance

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024


def create_upload_job(form, request) -> UploadJob:
    """A job waiting for the browser's files, audited as an upload of the user."""
    data = form.cleaned_data
    with transaction.atomic():
        job = UploadJob.objects.create(
            owner=request.user,
            status=UploadJob.Status.PENDING,
            message="Receiving files from the browser.",
            destination=data["destination"],
            pseudonym=data["pseudonym"],
            trial_protocol_id=data["trial_protocol_id"],
            trial_protocol_name=data["trial_protocol_name"],
            deid_options=UPLOAD_DEID_OPTIONS if data["pseudonym"] else [],
        )
        record(
            AuditEntry.Action.TRANSFER,
            request=request,
            pseudonym=job.pseudonym,
            source="browser upload",
            destination=data["destination"],
            job=job,
            details={
                "upload": "started",
                "announced_bytes": data.get("total_size") or 0,
                "pseudonymized_in_browser": bool(job.pseudonym),
            },
        )
    return job


@dataclass
class Received:
    instance: UploadInstance
    created: bool


def _refuse_size(size: int, job: UploadJob, received: int | None = None) -> None:
    file_limit = settings.UPLOAD_MAX_FILE_SIZE
    if size > file_limit:
        raise Refusal(
            f"The file is {filesizeformat(size)}; one file may be at most "
            f"{filesizeformat(file_limit)} (UPLOAD_MAX_FILE_SIZE).",
            status=413,
        )
    job_limit = settings.UPLOAD_MAX_JOB_SIZE
    if received is None:
        received = job.received_bytes()
    if received + size > job_limit:
        raise Refusal(
            f"The upload would grow to {filesizeformat(received + size)}; one upload may hold "
            f"at most {filesizeformat(job_limit)} (UPLOAD_MAX_JOB_SIZE).",
            status=413,
        )


_UID_KEYWORDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def _checked(job: UploadJob, source) -> dict[str, str]:
    """Parse and check one file (a path or a binary file object); its three UIDs.

    Raises:
        Refusal: not DICOM, unreadable, no valid UIDs, or not de-identified for the job.
    """
    try:
        ds = dcmread(source)
    except InvalidDicomError:
        raise Refusal("The file is not DICOM (no 'DICM' file meta header).") from None
    except Exception as error:  # pydicom raises many kinds on broken files
        raise Refusal(f"The DICOM file cannot be read: {type(error).__name__}.") from None
    uids = {}
    for keyword in _UID_KEYWORDS:
        value = str(ds.get(keyword, "") or "")
        try:
            validate_uid(value)
        except Exception:
            raise Refusal(f"{keyword} is missing or not a valid UID.", keyword) from None
        uids[keyword] = value
    if job.pseudonym:
        check_instance(ds, job.pseudonym)
    return uids


def _refused_json(index: int, refusal: Refusal) -> dict[str, Any]:
    return {"index": index, "status": refusal.status, **refusal.as_json()}


def _held_json(index: int, sop_uid: str, created: bool) -> dict[str, Any]:
    return {
        "index": index,
        "status": 201 if created else 200,
        "sop_instance_uid": sop_uid,
        "already_held": not created,
    }


def receive_batch(job: UploadJob, bodies: list[bytes]) -> list[dict[str, Any]]:
    """Check and stage several files; one answer per file, in their order.

    A refused file costs no other. The same SOP Instance UID twice (in the batch, in the job,
    or in a parallel request) is stored once; the others are answered as already held.
    """
    results: list[dict[str, Any] | None] = [None] * len(bodies)
    checked: list[tuple[int, dict[str, str], bytes]] = []
    for index, body in enumerate(bodies):
        try:
            _refuse_size(len(body), job, received=0)
            checked.append((index, _checked(job, io.BytesIO(body)), body))
        except Refusal as refusal:
            results[index] = _refused_json(index, refusal)
    sop_uids = [uids["SOPInstanceUID"] for _, uids, _ in checked]
    held = (
        set(
            job.instances.filter(sop_instance_uid__in=sop_uids).values_list(
                "sop_instance_uid", flat=True
            )
        )
        if sop_uids
        else set()
    )
    held_bytes = job.received_bytes() if len(held) < len(checked) else 0
    new: dict[str, tuple[int, dict[str, str], bytes]] = {}
    for index, uids, body in checked:
        sop_uid = uids["SOPInstanceUID"]
        if sop_uid in held or sop_uid in new:
            results[index] = _held_json(index, sop_uid, created=False)
            continue
        try:
            _refuse_size(len(body), job, held_bytes)
        except Refusal as refusal:
            results[index] = _refused_json(index, refusal)
            continue
        held_bytes += len(body)
        new[sop_uid] = (index, uids, body)
    created = _stage(job, list(new.values())) if new else set()
    for sop_uid, (index, _uids, _body) in new.items():
        results[index] = _held_json(index, sop_uid, created=sop_uid in created)
    return [result for result in results if result is not None]


def _stage(job: UploadJob, files: list[tuple[int, dict[str, str], bytes]]) -> set[str]:
    """Write the files, record them in one INSERT and move the recorded ones in place.

    Returns:
        The SOP Instance UIDs recorded now (a parallel request may have won the others).
    """
    job.staging_dir.mkdir(parents=True, exist_ok=True)
    temp_names: dict[str, str] = {}
    try:
        for _index, uids, body in files:
            handle, temp_name = tempfile.mkstemp(dir=job.staging_dir, suffix=".part")
            temp_names[uids["SOPInstanceUID"]] = temp_name
            with os.fdopen(handle, "wb") as out:
                out.write(body)
        table = UploadInstance._meta.db_table
        now = timezone.now()
        rows = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(files))
        params: list[Any] = []
        for _index, uids, body in files:
            params += [
                job.pk,
                uids["SOPInstanceUID"],
                uids["StudyInstanceUID"],
                uids["SeriesInstanceUID"],
                len(body),
                now,
            ]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f'INSERT INTO "{table}" '  # noqa: S608 - the model's own table name
                "(job_id, sop_instance_uid, study_uid, series_uid, size, received) "
                f"VALUES {rows} ON CONFLICT (job_id, sop_instance_uid) DO NOTHING "
                "RETURNING sop_instance_uid",
                params,
            )
            created = {row[0] for row in cursor.fetchall()}
            # In the transaction: a file that cannot be moved in place is not recorded.
            for sop_uid in created:
                os.replace(temp_names[sop_uid], job.staging_dir / f"{sop_uid}.dcm")
        return created
    finally:
        for temp_name in temp_names.values():
            if os.path.exists(temp_name):
                os.unlink(temp_name)


def receive_instance(
    job: UploadJob, stream, content_length: int | None, received_bytes: int | None = None
) -> Received:
    """Check and stage one file read from ``stream`` (the request body).

    ``received_bytes``: what the job holds already, when the caller keeps count (a batch).

    Raises:
        Refusal: the file is too big, not DICOM, not de-identified, or lacks its UIDs.
    """
    if content_length is None:
        raise Refusal("The request has no Content-Length; send one file per request.", status=411)
    _refuse_size(content_length, job, received_bytes)
    job.staging_dir.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=job.staging_dir, suffix=".part")
    try:
        size = 0
        with os.fdopen(handle, "wb") as out:
            while chunk := stream.read(CHUNK_SIZE):
                size += len(chunk)
                if size > content_length:
                    raise Refusal("The body is longer than its Content-Length.")
                out.write(chunk)
        if size != content_length:
            raise Refusal(
                f"The body ended after {size} of {content_length} bytes (interrupted upload)."
            )
        uids = _checked(job, temp_name)
        sop_uid = uids["SOPInstanceUID"]
        held = UploadInstance.objects.filter(job=job, sop_instance_uid=sop_uid).first()
        if held is not None:
            return Received(held, created=False)
        staged = job.staging_dir / f"{sop_uid}.dcm"
        try:
            with transaction.atomic():
                instance = UploadInstance.objects.create(
                    job=job,
                    sop_instance_uid=sop_uid,
                    study_uid=uids["StudyInstanceUID"],
                    series_uid=uids["SeriesInstanceUID"],
                    size=size,
                )
                os.replace(temp_name, staged)
        except IntegrityError:  # the same file in two parallel requests: one wins
            return Received(
                UploadInstance.objects.get(job=job, sop_instance_uid=sop_uid), created=False
            )
        return Received(instance, created=True)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def held_sop_instance_uids(job: UploadJob) -> list[str]:
    return list(job.instances.order_by("id").values_list("sop_instance_uid", flat=True))


def end_abandoned_uploads(now: datetime | None = None) -> int:
    """Ends the uploads whose page has sent nothing for `UPLOAD_ABANDONED_AFTER_MINUTES`
    without finishing (see `UploadJob.end_interrupted`); returns how many."""
    idle_since = (now or timezone.now()) - timedelta(
        minutes=settings.UPLOAD_ABANDONED_AFTER_MINUTES
    )
    candidates = (
        UploadJob.objects.filter(receiving=True)
        .annotate(last=Coalesce(Max("instances__received"), "created"))
        .filter(last__lt=idle_since)
        .select_related("owner")
    )
    return sum(job.end_interrupted(idle_since) for job in candidates)
