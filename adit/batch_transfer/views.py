"""Pages of batch transfer: the upload form (the job pages are the shared ones)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from adit.batch_query.models import BatchQueryJob
from adit.core.job_views import job_detail_url, visible_jobs
from adit.core.spreadsheets import sheet_settings

from .forms import BatchTransferFromQueryForm, BatchTransferJobForm
from .from_query import FromQueryError
from .models import BatchTransferSettings, create_batch_transfer_job

PERMISSION = "batch_transfer.add_batchtransferjob"


def _check_locked(request: HttpRequest) -> None:
    if BatchTransferSettings.get().locked and not request.user.is_superuser:
        raise PermissionDenied("Batch transfer is locked by the administrators.")


def _create_job(request: HttpRequest, form: BatchTransferJobForm) -> HttpResponse:
    data = form.cleaned_data
    job = create_batch_transfer_job(
        form.user,
        data["source"],
        data["destination"],
        form.studies,
        project_name=data["project_name"],
        project_description=data["project_description"],
        ethics_application_id=data["ethics_application_id"],
        trial_protocol_id=data["trial_protocol_id"],
        trial_protocol_name=data["trial_protocol_name"],
        deid_options=data["deid_options"],
        urgent=data.get("urgent", False),
        send_finished_mail=data["send_finished_mail"],
    )
    count = len(form.studies)
    messages.success(request, f"{job} with {count} stud{'y' if count == 1 else 'ies'} was created.")
    return redirect(job_detail_url(job))


@login_required
@permission_required(PERMISSION, raise_exception=True)
def job_create(request: HttpRequest) -> HttpResponse:
    _check_locked(request)
    user = request.user
    if request.method == "POST":
        form = BatchTransferJobForm(request.POST, request.FILES, user=user)
        if form.is_valid():
            return _create_job(request, form)
    else:
        form = BatchTransferJobForm(user=user)
    return render(
        request,
        "batch_transfer/job_form.html",
        {
            "form": form,
            "limits": sheet_settings("BATCH_TRANSFER", user),
            "pseudonym_required": form.pseudonym_required,
            "ethics_required": settings.ETHICS_APPROVAL_REQUIRED,
        },
        # An invalid submission is a refusal (400), so clients and tools can tell it from
        # a shown form; the page lists what was wrong.
        status=400 if form.is_bound else 200,
    )


@login_required
@permission_required(PERMISSION, raise_exception=True)
def job_create_from_query(request: HttpRequest, query_job_id: int) -> HttpResponse:
    """ "Transfer these studies…" of a batch query job: a batch transfer of what it found."""
    _check_locked(request)
    user = request.user
    query_job = get_object_or_404(visible_jobs(BatchQueryJob, user), pk=query_job_id)
    if request.method == "POST":
        form = BatchTransferFromQueryForm(request.POST, user=user, query_job=query_job)
        if form.is_valid():
            return _create_job(request, form)
    else:
        form = BatchTransferFromQueryForm(user=user, query_job=query_job)
    studies, problem = [], ""
    try:
        studies = form.found_studies()
    except FromQueryError as error:
        problem = str(error)
    return render(
        request,
        "batch_transfer/job_form_from_query.html",
        {
            "form": form,
            "query_job": query_job,
            "studies": studies,
            "series_count": sum(len(study.series_uids) for study in studies),
            # Shown above the form until submitted; then the form's own error says it.
            "problem": problem if not form.is_bound else "",
        },
        status=400 if form.is_bound else 200,
    )
