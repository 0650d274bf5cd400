"""What the upload views do: create a job, receive one file, say what a job holds, commit.

A received file goes to disk as it is read (never whole into memory), is parsed and checked
(`rules.check_instance`) and only then moved to its staged place and recorded; a refused or
failed file leaves nothing behind. Recording is idempotent by SOP Instance UID.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.template.defaultfilters import filesizeformat
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
        try:
            ds = dcmread(temp_name)
        except InvalidDicomError:
            raise Refusal("The file is not DICOM (no 'DICM' file meta header).") from None
        except Exception as error:  # pydicom raises many kinds on broken files
            raise Refusal(f"The DICOM file cannot be read: {type(error).__name__}.") from None
        uids = {}
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            value = str(ds.get(keyword, "") or "")
            try:
                validate_uid(value)
            except Exception:
                raise Refusal(f"{keyword} is missing or not a valid UID.", keyword) from None
            uids[keyword] = value
        if job.pseudonym:
            check_instance(ds, job.pseudonym)
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
