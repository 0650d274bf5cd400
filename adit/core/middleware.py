"""Maintenance mode: while `ProjectSettings.maintenance` is on, only staff use ADIT."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse

from .models import ProjectSettings

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
