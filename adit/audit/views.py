"""Pages of the audit trail: the log (staff only) and the pseudonym mapping export.

Nothing here writes an entry except the audit records of the exports themselves; there is no
form, view or API endpoint that changes or deletes one (see models.py).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from . import services
from .exports import CONTENT_TYPES, audit_csv_chunks, mapping_bytes
from .forms import AuditFilterForm, MappingExportForm
from .models import AuditEntry

PAGE_SIZE = 50
MAPPING_PERMISSION = "audit.export_pseudonym_mapping"


def _require_staff(request: HttpRequest) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("Only staff may read the audit log.")


@require_safe
@login_required
def entry_list(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """The audit log, newest first, filtered by the GET parameters; ``format=csv`` exports."""
    _require_staff(request)
    form = AuditFilterForm(request.GET or None)
    entries = AuditEntry.objects.all()
    params: dict[str, str] = {}
    if form.is_bound:
        if form.is_valid():
            entries = form.filter(entries)
            params = form.as_params()
        else:
            entries = entries.none()
    if request.GET.get("format") == "csv" and (not form.is_bound or form.is_valid()):
        services.record(
            AuditEntry.Action.AUDIT_EXPORT, request=request, details={"filters": params}
        )
        response = StreamingHttpResponse(
            audit_csv_chunks(entries), content_type=CONTENT_TYPES["csv"]
        )
        stamp = timezone.now().strftime("%Y%m%d_%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="audit_log_{stamp}.csv"'
        return response
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "audit/entry_list.html",
        {
            "form": form,
            "page": page,
            "query": urlencode(params),
            "can_export_mapping": request.user.has_perm(MAPPING_PERMISSION),
        },
    )


@require_safe
@login_required
def mapping_export(request: HttpRequest) -> HttpResponse:
    """The pseudonym mapping of a job or of a pseudonym as a file (with GET parameters), else
    the form asking for one. Needs `audit.export_pseudonym_mapping`; a refused attempt is
    audited too."""
    has_permission = request.user.has_perm(MAPPING_PERMISSION)
    form = MappingExportForm(request.GET or None)
    if not has_permission:
        services.record(
            AuditEntry.Action.MAPPING_EXPORT,
            request=request,
            outcome=AuditEntry.Outcome.DENIED,
            pseudonym=request.GET.get("pseudonym", "")[:64],
            details={key: value[:100] for key, value in request.GET.items()},
        )
        raise PermissionDenied(
            "You lack the permission to export pseudonym mappings "
            f"({MAPPING_PERMISSION}); ask an administrator."
        )
    if not form.is_bound or not form.is_valid():
        status = 400 if form.is_bound else 200
        return render(request, "audit/mapping_export.html", {"form": form}, status=status)
    rows = form.mappings()
    data = form.cleaned_data
    file_format = data["format"]
    content = mapping_bytes(rows, file_format)
    services.record(
        AuditEntry.Action.MAPPING_EXPORT,
        request=request,
        pseudonym=data.get("pseudonym", ""),
        details={**form.request_details(), "rows": rows.count()},
    )
    if data.get("job_type"):
        name = f"pseudonym_mapping_{data['job_type']}_{data['job_id']}"
    else:
        name = "pseudonym_mapping"
    response = HttpResponse(content, content_type=CONTENT_TYPES[file_format])
    # The pseudonym is not put into the file name (it comes from users; any character).
    response["Content-Disposition"] = f'attachment; filename="{name}.{file_format}"'
    response["Cache-Control"] = "no-store"
    return response
