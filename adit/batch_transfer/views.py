"""Pages of batch transfer: the upload form (the job pages are the shared ones)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from adit.core.errors import permission_required
from adit.core.job_views import job_detail_url
from adit.core.spreadsheets import sheet_settings

from .forms import BatchTransferJobForm
from .models import BatchTransferSettings, create_batch_transfer_job

PERMISSION = "batch_transfer.add_batchtransferjob"


def _check_locked(request: HttpRequest) -> None:
    if BatchTransferSettings.get().locked and not request.user.is_superuser:
        raise PermissionDenied("Batch transfer is locked by the administrators.")


@login_required
@permission_required(PERMISSION)
def job_create(request: HttpRequest) -> HttpResponse:
    _check_locked(request)
    user = request.user
    if request.method == "POST":
        form = BatchTransferJobForm(request.POST, request.FILES, user=user)
        if form.is_valid():
            data = form.cleaned_data
            job = create_batch_transfer_job(
                user,
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
            messages.success(
                request, f"{job} with {count} stud{'y' if count == 1 else 'ies'} was created."
            )
            return redirect(job_detail_url(job))
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
