"""The selective transfer page. With JavaScript it talks over the WebSocket (consumers.py);
without, the same form is POSTed and the results come back as a page."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from adit.audit.services import record_query
from adit.dicom_explorer.services import series_of_study

from .forms import (
    SelectiveTransferForm,
    StudySeriesForm,
    initial_from_preferences,
    initial_from_query,
    remember_preferences,
)
from .models import SelectiveTransferSettings
from .services import download_url, run_query, series_url

PERMISSION = "selective_transfer.add_selectivetransferjob"


def _check_locked(request: HttpRequest) -> None:
    if SelectiveTransferSettings.get().locked and not request.user.is_superuser:
        raise PermissionDenied("Selective transfer is locked by the administrators.")


@login_required
@permission_required(PERMISSION, raise_exception=True)
def job_create(request: HttpRequest) -> HttpResponse:
    _check_locked(request)
    user = request.user
    context: dict = {}
    if request.method == "POST":
        action = request.POST.get("action", "query")
        form = SelectiveTransferForm(request.POST, user=user, action=action)
        if form.is_valid():
            remember_preferences(user, form.cleaned_data)
            if form.action == "transfer":
                studies = form.selected_studies(
                    request.POST.getlist("selected_studies"),
                    request.POST.getlist("selected_series"),
                )
                if studies:
                    from .services import create_transfer_job

                    job = create_transfer_job(form, studies)
                    messages.success(request, f"{job} with {len(studies)} studies was created.")
                    return redirect(job)
            else:
                source, query = form.cleaned_data["source"].concrete, form.query_dataset()
                record_query(query, request=request, source=source)
                outcome = run_query(source, query)
                can_download = user.has_perm("selective_transfer.can_download_study")
                if can_download:
                    options = {
                        name: form.cleaned_data.get(name, "")
                        for name in ("pseudonym", "trial_protocol_id", "trial_protocol_name")
                    }
                    for row in outcome.rows:
                        row.download_url = download_url(
                            form.cleaned_data["source"].pk, row, options
                        )
                for row in outcome.rows:
                    row.series_url = series_url(form.cleaned_data["source"].pk, row)
                context.update(outcome=outcome, can_download=can_download)
    else:
        initial = {**initial_from_preferences(user), **initial_from_query(request.GET)}
        form = SelectiveTransferForm(initial=initial, user=user)
    context.update(
        form=form,
        folder_ids=form.destination_is_folder_ids,
        limit=settings.SELECTIVE_TRANSFER_RESULT_LIMIT,
        max_selection=None if user.is_staff else settings.SELECTIVE_TRANSFER_MAX_SELECTION,
    )
    return render(request, "selective_transfer/job_form.html", context)


@login_required
@permission_required(PERMISSION, raise_exception=True)
def study_series(request: HttpRequest) -> HttpResponse:
    """The series of one study as rows of checkboxes (the page inserts them below the study)."""
    _check_locked(request)
    form = StudySeriesForm(request.GET, user=request.user)
    if not form.is_valid():
        errors = [str(message) for messages_ in form.errors.values() for message in messages_]
        return render(
            request,
            "selective_transfer/_series.html",
            {"error": " ".join(errors)},
            status=400,
        )
    data = form.cleaned_data
    outcome = series_of_study(
        request, data["source"].concrete, data["patient_id"], data["study_uid"]
    )
    return render(
        request,
        "selective_transfer/_series.html",
        {
            "outcome": outcome,
            "study_key": f"{data['patient_id']}\\{data['study_uid']}",
        },
    )
