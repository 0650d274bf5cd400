"""Template context shared by every page (navbar, theme, maintenance banner)."""

from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from .site import MainMenuItem, main_menu_items

THEME_STORAGE_KEY = "adit-theme"


@dataclass(frozen=True)
class MenuLink:
    label: str
    url: str
    icon: str
    active: bool


def _menu_links(request: HttpRequest) -> list[MenuLink]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return []
    apps = [item for item in main_menu_items if item.is_visible_to(user)]
    items = [
        MainMenuItem("home", "Home", icon="house"),
        *apps,
        # The jobs of every app in one list, for whoever may use an app.
        *([MainMenuItem("all_jobs", "Jobs", icon="list-task")] if apps else []),
    ]
    links = []
    for item in items:
        if not item.is_visible_to(user):
            continue
        try:
            url = reverse(item.url_name)
        except NoReverseMatch:
            continue  # an app registered an entry whose URLs are not mounted (e.g. in a test)
        active = request.path == url if url == "/" else request.path.startswith(url)
        links.append(MenuLink(item.label, url, item.icon, active))
    return links


def _maintenance_mode(request: HttpRequest) -> bool:
    mode = getattr(request, "maintenance_mode", None)
    if mode is None:  # MaintenanceMiddleware skipped this request (e.g. the login page)
        from .middleware import is_maintenance_on

        mode = is_maintenance_on()
        request.maintenance_mode = mode  # type: ignore[attr-defined]
    return mode


def base_context(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)

    def user_groups() -> list:
        if user is None or not user.is_authenticated:
            return []
        return list(user.groups.order_by("name"))

    return {
        "site_name": settings.SITE_NAME,
        "main_menu": _menu_links(request),
        # Callables are evaluated lazily by the template engine, only where they are used.
        "user_groups": user_groups,
        "maintenance_mode": (lambda: _maintenance_mode(request)),
        "theme_storage_key": THEME_STORAGE_KEY,
    }
