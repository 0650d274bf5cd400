"""Pages of batch query: upload form, results table, exports."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from adit.core.errors import permission_required
from adit.core.job_views import job_detail_url, visible_jobs
from adit.core.spreadsheets import sheet_settings

from .exports import CONTENT_TYPES, export_bytes, export_filename
from .forms import BatchQueryJobForm
from .models import BatchQueryJob, BatchQueryResult, BatchQuerySettings, create_batch_query_job
from .parsers import COLUMNS

PERMISSION = "batch_query.add_batchqueryjob"
RESULTS_PAGE_SIZE = 100


def _check_locked(request: HttpRequest) -> None:
    if BatchQuerySettings.get().locked and not request.user.is_superuser:
        raise PermissionDenied("Batch query is locked by the administrators.")


@login_required
@permission_required(PERMISSION)
def job_create(request: HttpRequest) -> HttpResponse:
    _check_locked(request)
    user = request.user
    if request.method == "POST":
        form = BatchQueryJobForm(request.POST, request.FILES, user=user)
        if form.is_valid():
            data = form.cleaned_data
            job = create_batch_query_job(
                user,
                data["source"],
                form.rows,
                project_name=data["project_name"],
                project_description=data["project_description"],
                urgent=data.get("urgent", False),
                send_finished_mail=data["send_finished_mail"],
            )
            messages.success(request, f"{job} with {len(form.rows)} queries was created.")
            return redirect(job_detail_url(job))
    else:
        form = BatchQueryJobForm(user=user)
    return render(
        request,
        "batch_query/job_form.html",
        {"form": form, "columns": COLUMNS, "limits": sheet_settings("BATCH_QUERY", user)},
        # An invalid submission is a refusal (400), so clients and tools can tell it from
        # a shown form; the page lists what was wrong.
        status=400 if form.is_bound else 200,
    )


def _job(request: HttpRequest, pk: int) -> BatchQueryJob:
    job = get_object_or_404(visible_jobs(BatchQueryJob, request.user), pk=pk)
    assert isinstance(job, BatchQueryJob)
    return job


@login_required
def results(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job(request, pk)
    found = BatchQueryResult.objects.filter(job=job).select_related("task")
    search = request.GET.get("q", "").strip()[:100]
    if search:
        found = found.filter(
            Q(patient_id__icontains=search)
            | Q(patient_name__icontains=search)
            | Q(accession_number__icontains=search)
            | Q(study_description__icontains=search)
            | Q(series_description__icontains=search)
            | Q(study_uid=search)
        )
    line = request.GET.get("line", "").strip()
    if line.isdigit():
        found = found.filter(task__lines__contains=[int(line)])
    else:
        line = ""
    modality = request.GET.get("modality", "").strip().upper()[:16]
    if modality:
        found = found.filter(modalities__contains=[modality])
    page = Paginator(found.order_by("task_id", "id"), RESULTS_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "batch_query/results.html",
        {
            "job": job,
            "page": page,
            "search": search,
            "line": line,
            "modality": modality,
            "with_series": job.tasks.exclude(series_description="", series_numbers=[]).exists(),
        },
    )


@login_required
def download(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job(request, pk)
    file_format = request.GET.get("format", "xlsx")
    if file_format not in CONTENT_TYPES:
        raise Http404(f"Unknown export format {file_format!r}; use xlsx or csv.")
    include_failures = request.GET.get("failures") == "1"
    response = HttpResponse(
        export_bytes(job, file_format, include_failures), content_type=CONTENT_TYPES[file_format]
    )
    filename = export_filename(job, file_format, include_failures)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
