"""ADIT's own middleware: maintenance mode, and HTTP limits answered naming the limit.

While `ProjectSettings.maintenance` is on, only staff use ADIT. Every request is checked
against ADIT's HTTP limits first (`RequestLimitsMiddleware`).
"""

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.encoding import escape_uri_path

from .errors import render_error_page
from .models import ProjectSettings
from .validators import BIDI_CONTROLS

MAINTENANCE_API_DETAIL = (
    "ADIT is in maintenance mode. The API is unavailable for now; please try again later."
)
API_PREFIX = "/api/"


def is_maintenance_on() -> bool:
    """Read the flag from the database (one tiny indexed query).

    Read on every request rather than cached, so switching maintenance on in the admin takes
    effect at once in every web process.
    """
    flag = ProjectSettings.objects.filter(pk=1).values_list("maintenance", flat=True).first()
    return bool(flag)


class MaintenanceMiddleware:
    """Turn away everyone but staff while maintenance mode is on.

    Always reachable: `/health/`, static files, login and logout (so staff can sign in) and the
    admin's own login page. Staff work normally and see a banner (base.html reads
    `request.maintenance_mode`). Other users get a 503 page; any path under `/api/` gets a
    503 JSON answer, whoever asks.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self._exempt_paths: frozenset[str] | None = None

    def exempt_paths(self) -> frozenset[str]:
        # Resolved lazily: the URLconf is not loaded yet when middleware is instantiated.
        if self._exempt_paths is None:
            paths = set()
            for name in ("health", "login", "logout", "accounts:login", "accounts:logout"):
                try:
                    paths.add(reverse(name))
                except NoReverseMatch:
                    pass
            self._exempt_paths = frozenset(paths)
        return self._exempt_paths

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path in self.exempt_paths() or path.startswith(settings.STATIC_URL or "/static/"):
            return self.get_response(request)

        maintenance = is_maintenance_on()
        request.maintenance_mode = maintenance  # type: ignore[attr-defined]
        if not maintenance:
            return self.get_response(request)

        if path.startswith(API_PREFIX):
            return JsonResponse({"detail": MAINTENANCE_API_DETAIL}, status=503)

        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_active and user.is_staff:
            return self.get_response(request)
        try:
            admin_login = reverse("admin:login")
        except NoReverseMatch:
            admin_login = None
        if path == admin_login:
            return self.get_response(request)

        response = render(request, "core/maintenance.html", {"hide_main_menu": True}, status=503)
        response["Retry-After"] = "600"
        if getattr(request, "htmx", False):
            # HTMX does not swap error responses; reload so the user sees the maintenance page.
            response["HX-Refresh"] = "true"
        return response


# --- Request limits --------------------------------------------------------------------------

MAX_PATH_BYTES = 2048
"""Longest URL path (percent-encoded, as sent) ADIT serves; longer ones get 414."""
MAX_QUERY_STRING_BYTES = 8192
"""Longest query string; longer ones get 414. A QIDO-RS query of 100 UIDs fits easily."""
MAX_HEADER_BYTES = 16384
"""All request headers together (names and values); more gets 431."""


class RequestRefused(Exception):
    """A request that breaks one of ADIT's HTTP limits, with the status that answers it."""

    def __init__(self, status: int, limit: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.limit = limit
        self.message = message


def _control_character(text: str) -> str | None:
    """The first C0 control character, DEL or bidirectional control in `text`, named."""
    for char in text:
        if char < " " or char == "\x7f":
            return f"a control character (U+{ord(char):04X})"
        if BIDI_CONTROLS.match(char):
            return f"a bidirectional control character (U+{ord(char):04X})"
    return None


def _check_request(request: HttpRequest) -> None:
    """Raises `RequestRefused` naming the first limit the request breaks."""
    if len(escape_uri_path(request.path)) > MAX_PATH_BYTES:
        raise RequestRefused(
            414, "path_length", f"The URL path is longer than {MAX_PATH_BYTES} bytes."
        )
    query_string = request.META.get("QUERY_STRING", "")
    if len(query_string) > MAX_QUERY_STRING_BYTES:
        raise RequestRefused(
            414,
            "query_string_length",
            f"The query string has {len(query_string)} bytes; at most "
            f"{MAX_QUERY_STRING_BYTES} are allowed.",
        )
    header_bytes = sum(
        len(key) + len(str(value))
        for key, value in request.META.items()
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
    )
    if header_bytes > MAX_HEADER_BYTES:
        raise RequestRefused(
            431,
            "header_size",
            f"The request headers have {header_bytes} bytes; at most {MAX_HEADER_BYTES} are "
            "allowed.",
        )
    if found := _control_character(request.path):
        raise RequestRefused(400, "control_character", f"The URL path contains {found}.")
    try:
        parameters = list(request.GET.lists())
    except TooManyFieldsSent:
        raise RequestRefused(
            400,
            "parameter_count",
            f"The query string has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} parameters.",
        ) from None
    for key, values in parameters:
        for text in (key, *values):
            if found := _control_character(text):
                raise RequestRefused(
                    400,
                    "control_character",
                    f"The query parameter {key[:64]!r} contains {found}.",
                )
    if request.method == "POST" and request.content_type in FORM_CONTENT_TYPES:
        # Parsed here (CsrfViewMiddleware would do it a moment later) so that a body beyond
        # Django's upload limits is answered naming the limit, not with a bare 400 page.
        try:
            request.POST  # noqa: B018
        except (SuspiciousOperation, MultiPartParserError) as error:
            raise _refusal_for(error) from None


FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _refusal_for(error: Exception) -> RequestRefused:
    if isinstance(error, TooManyFieldsSent):
        return RequestRefused(
            400,
            "field_count",
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields.",
        )
    if isinstance(error, TooManyFilesSent):
        return RequestRefused(
            400,
            "file_count",
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files.",
        )
    if isinstance(error, MultiPartParserError):
        return RequestRefused(
            400, "malformed_body", f"The request body is malformed (multipart/form-data): {error}"
        )
    if isinstance(error, RequestDataTooBig):
        return RequestRefused(
            413,
            "body_size",
            "The request body (without uploaded files) is larger than "
            f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
        )
    return RequestRefused(400, "malformed", f"The request is malformed: {error}")


def refusal_response(request: HttpRequest, refusal: RequestRefused) -> HttpResponse:
    """JSON under /api/ (what API clients parse), a small HTML page elsewhere."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse(
            {"detail": refusal.message, "limit": refusal.limit}, status=refusal.status
        )
    # Rendered without the request: sessions and authentication have not run yet, and the
    # context processors would read them.
    context = {
        "message": refusal.message,
        "status": refusal.status,
        "site_name": settings.SITE_NAME,
    }
    page = render_error_page("core/request_refused.html", context, None, refusal.status)
    return HttpResponse(page, status=refusal.status)


class RequestLimitsMiddleware:
    """Refuse requests beyond ADIT's HTTP limits with an answer that names the limit.

    Runs before anything reads the request (sessions, CSRF, views), so an oversized or
    malformed request costs no database query. Limits and answers:

    - URL path over `MAX_PATH_BYTES` or query string over `MAX_QUERY_STRING_BYTES`: 414.
    - Headers over `MAX_HEADER_BYTES` together: 431.
    - More query parameters or form fields than `DATA_UPLOAD_MAX_NUMBER_FIELDS`, more files
      than `DATA_UPLOAD_MAX_NUMBER_FILES`, or a control character (U+0000-U+001F, U+007F)
      or bidirectional control in the path or in a query parameter's name or value: 400.
      Nothing of ADIT needs them, and a NUL passed on to a PACS or into PostgreSQL fails
      there less clearly.
    - A form body over `DATA_UPLOAD_MAX_MEMORY_SIZE`: 413; a malformed multipart/form-data
      body: 400.

    Requests beyond what daphne (Twisted) takes at all never get here; ADIT's HTTP channel
    (`adit.core.http_channel`) answers those in the same words.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            _check_request(request)
        except RequestRefused as refusal:
            return refusal_response(request, refusal)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        # A view that reads the body itself (e.g. a JSON API parser) hits the same limits.
        if isinstance(
            exception,
            (TooManyFieldsSent, TooManyFilesSent, RequestDataTooBig, MultiPartParserError),
        ):
            return refusal_response(request, _refusal_for(exception))
        return None
