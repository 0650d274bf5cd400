"""The explorer's pages: servers → search → patient → study → series → instance.

Each level is a GET page with a bookmarkable URL. Every view checks, in this order: logged in,
the explorer permission (a styled 403), the server (404 unless the active group may use it as
source), the parameters (400 naming the field). Views are sync: daphne runs them in its
thread pool, so a slow PACS or a large image never blocks the event loop.
"""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache

from adit.core.errors import check_permission

from . import services
from .forms import LocationForm, StudySearchForm, field_errors
from .rendering import PreviewError, frame_count, header_rows, placeholder_png

PERMISSION = "dicom_explorer.use_explorer"
THUMBNAIL_SIZE = 160


def explorer_view(view):
    """Login, then the explorer permission (the site's 403 page names it and the active group)."""

    @login_required
    @never_cache
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        check_permission(request, PERMISSION)
        return view(request, *args, **kwargs)

    return wrapper


def _bad_request(request: HttpRequest, form, server=None) -> HttpResponse:
    return render(
        request,
        "dicom_explorer/bad_request.html",
        {"errors": field_errors(form), "server": server},
        status=400,
    )


def _location(request: HttpRequest, kwargs: dict, required: tuple[str, ...]) -> LocationForm:
    data = {name: value for name, value in kwargs.items() if name != "server_id"}
    for name in ("patient_id", "frame"):
        if name in request.GET:
            data[name] = request.GET[name]
    return LocationForm(data, required=required)


def _patient_query(patient_id: str) -> str:
    return "?" + urlencode({"patient_id": patient_id}) if patient_id else ""


def _actions(request: HttpRequest, server, patient_id: str, study_uid: str) -> dict:
    """Links of the Transfer…/Download actions of a study (as selective transfer offers them)."""
    user = request.user
    transfer_url = ""
    if user.has_perm("selective_transfer.add_selectivetransferjob"):
        params = {"source": server.pk, "study_uid": study_uid}
        if patient_id:
            params["patient_id"] = patient_id
        transfer_url = f"{reverse('selective_transfer:job_create')}?{urlencode(params)}"
    download_url = ""
    if patient_id and user.has_perm("selective_transfer.can_download_study"):
        path = reverse("selective_transfer:download_study", kwargs={"server_id": server.pk})
        download_url = f"{path}?{urlencode({'patient_id': patient_id, 'study_uid': study_uid})}"
    return {
        "transfer_url": transfer_url,
        "download_url": download_url,
        "pseudonym_required": not user.has_perm("selective_transfer.can_transfer_unpseudonymized"),
    }


@explorer_view
def server_list(request: HttpRequest) -> HttpResponse:
    servers = services.source_servers(request.user)
    return render(request, "dicom_explorer/server_list.html", {"servers": servers})


@explorer_view
def search(request: HttpRequest, server_id: int) -> HttpResponse:
    server = services.get_server(request.user, server_id)
    bound = any(request.GET.get(name) for name in StudySearchForm.base_fields)
    form = StudySearchForm(request.GET if bound else None)
    context: dict = {"server": server, "form": form, "limit": settings.DICOM_EXPLORER_RESULT_LIMIT}
    if bound:
        if not form.is_valid():
            return render(
                request,
                "dicom_explorer/search.html",
                {**context, "errors": field_errors(form)},
                status=400,
            )
        outcome = services.search_studies(request, server, form.query_dataset())
        context.update(outcome=outcome, patients=services.patients_of(outcome.rows))
    return render(request, "dicom_explorer/search.html", context)


@explorer_view
def patient(request: HttpRequest, server_id: int) -> HttpResponse:
    server = services.get_server(request.user, server_id)
    form = _location(request, {}, required=("patient_id",))
    if not form.is_valid():
        return _bad_request(request, form, server)
    patient_id = form.cleaned_data["patient_id"]
    outcome = services.studies_of_patient(request, server, patient_id)
    outcome.rows.sort(key=lambda s: (s.study_date is not None, s.study_date), reverse=True)
    first = outcome.rows[0] if outcome.rows else None
    return render(
        request,
        "dicom_explorer/patient.html",
        {
            "server": server,
            "patient_id": patient_id,
            "patient_query": _patient_query(patient_id),
            "patient_row": first,
            "outcome": outcome,
            "limit": settings.DICOM_EXPLORER_RESULT_LIMIT,
        },
    )


@explorer_view
def study(request: HttpRequest, server_id: int, study_uid: str) -> HttpResponse:
    server = services.get_server(request.user, server_id)
    form = _location(request, {"study_uid": study_uid}, required=("study_uid",))
    if not form.is_valid():
        return _bad_request(request, form, server)
    patient_id, study_uid = form.cleaned_data["patient_id"], form.cleaned_data["study_uid"]
    study_row = services.study_of(request, server, study_uid)
    if study_row and not patient_id:
        patient_id = study_row.patient_id
    outcome = services.series_of_study(request, server, patient_id, study_uid)
    return render(
        request,
        "dicom_explorer/study.html",
        {
            "server": server,
            "patient_id": patient_id,
            "patient_query": _patient_query(patient_id),
            "study": study_row,
            "study_uid": study_uid,
            "outcome": outcome,
            "limit": settings.DICOM_EXPLORER_RESULT_LIMIT,
            **_actions(request, server, patient_id, study_uid),
        },
    )


@explorer_view
def series(request: HttpRequest, server_id: int, study_uid: str, series_uid: str) -> HttpResponse:
    server = services.get_server(request.user, server_id)
    form = _location(
        request,
        {"study_uid": study_uid, "series_uid": series_uid},
        required=("study_uid", "series_uid"),
    )
    if not form.is_valid():
        return _bad_request(request, form, server)
    data = form.cleaned_data
    outcome = services.instances_of_series(
        request, server, data["patient_id"], data["study_uid"], data["series_uid"]
    )
    # The series' own row (number, modality, description) for the heading; usually cached
    # from the study page the user came from.
    siblings = services.series_of_study(request, server, data["patient_id"], data["study_uid"])
    series_row = next((s for s in siblings.rows if s.series_uid == data["series_uid"]), None)
    return render(
        request,
        "dicom_explorer/series.html",
        {
            "server": server,
            "patient_id": data["patient_id"],
            "patient_query": _patient_query(data["patient_id"]),
            "study_uid": data["study_uid"],
            "series_uid": data["series_uid"],
            "series": series_row,
            "outcome": outcome,
            "limit": settings.DICOM_EXPLORER_RESULT_LIMIT,
            **_actions(request, server, data["patient_id"], data["study_uid"]),
        },
    )


def _instance_location(data: dict) -> services.InstanceLocation:
    return services.InstanceLocation(
        data["patient_id"], data["study_uid"], data["series_uid"], data["sop_uid"]
    )


@explorer_view
def instance(
    request: HttpRequest, server_id: int, study_uid: str, series_uid: str, sop_uid: str
) -> HttpResponse:
    server = services.get_server(request.user, server_id)
    form = _location(
        request,
        {"study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid},
        required=("study_uid", "series_uid", "sop_uid"),
    )
    if not form.is_valid():
        return _bad_request(request, form, server)
    data = form.cleaned_data
    where = _instance_location(data)
    context: dict = {
        "server": server,
        "patient_id": data["patient_id"],
        "patient_query": _patient_query(data["patient_id"]),
        "where": where,
        **_actions(request, server, data["patient_id"], data["study_uid"]),
    }
    try:
        ds = services.instance_for_page(request, server, where)
    except PreviewError as error:
        context["error"] = str(error)
        return render(request, "dicom_explorer/instance.html", context, status=502)
    has_pixels = any(keyword in ds for keyword in ("PixelData", "FloatPixelData"))
    context.update(
        header=header_rows(ds),
        frames=frame_count(ds) if has_pixels else 0,
        has_pixels=has_pixels,
        sop_class=getattr(ds.get("SOPClassUID"), "name", ""),
        transfer_syntax=getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""),
        image_url=reverse(
            "dicom_explorer:instance_image",
            kwargs={
                "server_id": server.pk,
                "study_uid": where.study_uid,
                "series_uid": where.series_uid,
                "sop_uid": where.sop_uid,
            },
        )
        + _patient_query(where.patient_id),
    )
    return render(request, "dicom_explorer/instance.html", context)


def _png(data: bytes, status: int = 200) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png", status=status)
    response["Cache-Control"] = "private, max-age=60"
    return response


def _preview_failed(error: PreviewError, size: int) -> HttpResponse:
    # 422: the request was fine, but this instance cannot be shown. The body is still an image
    # (the reason written on it) so that the page shows why, where the image would be.
    response = _png(placeholder_png(str(error), size), status=422)
    # One line of ASCII: a header must not hold line breaks (pydicom's messages have some).
    reason = " ".join(str(error).split()).encode("ascii", "replace").decode()
    response["X-Preview-Error"] = reason[:300]
    return response


def _image_param_error(form) -> HttpResponse:
    text = "; ".join(f"{label}: {message}" for label, message in field_errors(form))
    return HttpResponse(text, status=400, content_type="text/plain; charset=utf-8")


@explorer_view
def instance_image(
    request: HttpRequest, server_id: int, study_uid: str, series_uid: str, sop_uid: str
) -> HttpResponse:
    server = services.get_server(request.user, server_id)
    form = _location(
        request,
        {"study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid},
        required=("study_uid", "series_uid", "sop_uid"),
    )
    if not form.is_valid():
        return _image_param_error(form)
    data = form.cleaned_data
    try:
        png = services.preview_png(
            request, server, _instance_location(data), data["frame"] or 1, None
        )
    except PreviewError as error:
        return _preview_failed(error, 512)
    return _png(png)


@explorer_view
def series_thumbnail(
    request: HttpRequest, server_id: int, study_uid: str, series_uid: str
) -> HttpResponse:
    server = services.get_server(request.user, server_id)
    form = _location(
        request,
        {"study_uid": study_uid, "series_uid": series_uid},
        required=("study_uid", "series_uid"),
    )
    if not form.is_valid():
        return _image_param_error(form)
    data = form.cleaned_data
    try:
        where = services.representative_instance(
            request, server, data["patient_id"], data["study_uid"], data["series_uid"]
        )
        png = services.preview_png(request, server, where, 1, THUMBNAIL_SIZE)
    except PreviewError as error:
        return _preview_failed(error, THUMBNAIL_SIZE)
    return _png(png)
