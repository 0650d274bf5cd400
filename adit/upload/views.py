"""The upload page and the small JSON API its script talks to.

- ``GET  /upload/``                          the page (form, rule table, limits)
- ``POST /upload/jobs/new/``                 create a job (form fields) → ``{"job": id, ...}``
- ``GET  /upload/jobs/<id>/instances/``      the SOP Instance UIDs the job holds already
- ``POST /upload/jobs/<id>/instances/``      one file (``application/dicom`` body), or several
  as ``multipart/related; type="application/dicom"`` (one answer per part: a refused part
  does not cost the others; fewer requests make a large upload much faster)
- ``POST /upload/jobs/<id>/commit/``         everything is sent: store it on the destination
  (every ``UPLOAD_DISPATCH_INSTANCES`` received instances are handed to a worker before that)

Every call checks the permission, the app lock, the job's owner and (for sending) that the
user's active group may still use the destination. Errors are JSON ``{"error": ...}`` with a
4xx status, never a 5xx.
"""

from __future__ import annotations

from adit_client.multipart import MultipartError, iter_parts, parse_content_type
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods, require_POST

from adit.core.errors import permission_required

from .forms import UploadJobForm
from .models import UploadJob, UploadSettings
from .rules import Refusal, browser_rules
from .services import (
    create_upload_job,
    held_sop_instance_uids,
    receive_batch,
    receive_instance,
)

PERMISSION = "upload.add_uploadjob"


def _check_locked(request: HttpRequest) -> None:
    if UploadSettings.get().locked and not request.user.is_superuser:
        raise PermissionDenied("Upload is locked by the administrators.")


def _own_job(request: HttpRequest, pk: int) -> UploadJob:
    job = UploadJob.objects.select_related("destination").filter(pk=pk, owner=request.user).first()
    if job is None:
        raise Http404("No such upload job of yours.")
    return job


def _refused(refusal: Refusal) -> JsonResponse:
    return JsonResponse(refusal.as_json(), status=refusal.status)


@login_required
@permission_required(PERMISSION)
def job_create(request: HttpRequest) -> HttpResponse:
    _check_locked(request)
    form = UploadJobForm(user=request.user)
    return render(
        request,
        "upload/job_form.html",
        {
            "form": form,
            "rules": browser_rules(),
            "limits": {
                "maxFileSize": settings.UPLOAD_MAX_FILE_SIZE,
                "maxJobSize": settings.UPLOAD_MAX_JOB_SIZE,
            },
        },
    )


@login_required
@permission_required(PERMISSION)
@require_POST
def job_new(request: HttpRequest) -> JsonResponse:
    _check_locked(request)
    form = UploadJobForm(request.POST, user=request.user)
    if not form.is_valid():
        errors = {name: [str(m) for m in messages] for name, messages in form.errors.items()}
        first = next(iter(errors.values()))[0]
        return JsonResponse({"error": first, "fields": errors}, status=400)
    job = create_upload_job(form, request)
    return JsonResponse(_job_json(job), status=201)


def _job_json(job: UploadJob) -> dict:
    return {
        "job": job.pk,
        "job_url": job.get_absolute_url(),
        "pseudonym": job.pseudonym,
        "destination": job.destination.name,
        "status": job.get_status_display(),
    }


@login_required
@permission_required(PERMISSION)
@require_http_methods(["GET", "POST"])
def job_instances(request: HttpRequest, pk: int) -> JsonResponse:
    _check_locked(request)
    job = _own_job(request, pk)
    if request.method == "GET":
        return JsonResponse({**_job_json(job), "sop_instance_uids": held_sop_instance_uids(job)})
    if not job.destination.is_accessible_by_user(request.user, "destination"):
        return JsonResponse(
            {"error": f"Your active group may not use {job.destination.name} as destination."},
            status=403,
        )
    if request.content_type == "multipart/related":
        return _receive_parts(request, job)
    if request.content_type != "application/dicom":
        return JsonResponse(
            {
                "error": "Send DICOM files as Content-Type application/dicom (one file) or "
                'multipart/related; type="application/dicom" (several).'
            },
            status=415,
        )
    try:
        length = int(request.headers.get("Content-Length", ""))
    except ValueError:
        length = None
    try:
        received = receive_instance(job, request, length)
    except Refusal as refusal:
        return _refused(refusal)
    instance = received.instance
    _dispatch(request, job)
    return JsonResponse(
        {"sop_instance_uid": instance.sop_instance_uid, "already_held": not received.created},
        status=201 if received.created else 200,
    )


def _receive_parts(request: HttpRequest, job: UploadJob) -> JsonResponse:
    # A part is held in memory while it is checked: a batch may be at most as large as one
    # file may be (the page sends a few MB at a time, a large file alone).
    try:
        length = int(request.headers.get("Content-Length", ""))
    except ValueError:
        return JsonResponse({"error": "The request has no Content-Length."}, status=411)
    if length > settings.UPLOAD_MAX_FILE_SIZE:
        return JsonResponse(
            {
                "error": f"A batch of files may be at most {settings.UPLOAD_MAX_FILE_SIZE} bytes "
                "(UPLOAD_MAX_FILE_SIZE); send fewer files per request."
            },
            status=413,
        )
    _, params = parse_content_type(request.headers.get("Content-Type", ""))
    try:
        bodies = [body for _headers, body in iter_parts(request.read, params.get("boundary", ""))]
    except MultipartError as error:
        return JsonResponse({"error": f"The multipart body is malformed: {error}"}, status=400)
    results = receive_batch(job, bodies)
    _dispatch(request, job)
    return JsonResponse({"results": results})


def _dispatch(request: HttpRequest, job: UploadJob) -> None:
    # The worker stores what has arrived while the browser sends the rest.
    job.dispatch_received(settings.UPLOAD_DISPATCH_INSTANCES, by_staff=request.user.is_staff)


@login_required
@permission_required(PERMISSION)
@require_POST
def job_commit(request: HttpRequest, pk: int) -> JsonResponse:
    _check_locked(request)
    job = _own_job(request, pk)
    if not job.destination.is_accessible_by_user(request.user, "destination"):
        return JsonResponse(
            {"error": f"Your active group may not use {job.destination.name} as destination."},
            status=403,
        )
    tasks = job.commit_received(by_staff=request.user.is_staff)
    return JsonResponse({**_job_json(job), "new_tasks": tasks})
