"""Error pages (400, 403, 404, 500) in the site's layout, and the permission check that says
what is missing.

A 403 names what the user lacks where the code knows it: views check permissions with
`permission_required` below, which raises `MissingPermission` (a `PermissionDenied`) carrying
the permission's name and the user's active group; other checks raise `PermissionDenied` with a
sentence. `permission_denied` shows either, and whom to ask (the staff contact of the
installation). The 500 page is rendered from its template alone: no database, no context
processors, since whatever failed may be the database.
"""

from __future__ import annotations

import logging
from functools import wraps

from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.exceptions import DisallowedHost, PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseForbidden,
    HttpResponseNotFound,
    HttpResponseServerError,
)
from django.template import loader
from django.utils.html import escape

logger = logging.getLogger(__name__)


class MissingPermission(PermissionDenied):
    """The user (through the active group) lacks a permission a page needs."""

    def __init__(self, permission: str, permission_name: str, group_name: str | None) -> None:
        self.permission = permission
        self.permission_name = permission_name
        self.group_name = group_name
        where = f"your active group “{group_name}”" if group_name else "you (you are in no group)"
        super().__init__(
            f"This page needs the permission “{permission_name}” ({permission}), which {where} "
            "does not have."
        )


def permission_name(permission: str) -> str:
    """The human name of "app_label.codename" (e.g. "Can add selective transfer job")."""
    app_label, _, codename = permission.partition(".")
    name = (
        Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        .values_list("name", flat=True)
        .first()
    )
    return name or permission


def check_permission(request: HttpRequest, permission: str) -> None:
    """Raise `MissingPermission` unless the signed-in user has `permission`."""
    user = request.user
    if user.has_perm(permission):
        return
    group = getattr(user, "active_group", None)
    raise MissingPermission(permission, permission_name(permission), group.name if group else None)


def permission_required(permission: str):
    """Like Django's `permission_required(..., raise_exception=True)`, but the 403 page names
    the permission and the active group. Use after `login_required`."""

    def decorator(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            check_permission(request, permission)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def _contact() -> str:
    return getattr(settings, "SUPPORT_EMAIL", "") or ""


def render_error_page(
    template: str, context: dict, request: HttpRequest | None, status: int
) -> str:
    """The error page, or a plain one when the page itself cannot be rendered (e.g. static
    files not collected, a context processor that fails): an error handler must not fail."""
    try:
        return loader.render_to_string(template, context, request)
    except Exception:
        logger.exception("The %s page could not be rendered; a plain one was sent", status)
        title = escape(f"Error {status}")
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>{escape(context.get('reason') or '')}</p></body></html>"
        )


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    # A disallowed Host header raises again wherever the context processors read the host,
    # so such a request gets the page without them (like the 500 page).
    with_request = None if isinstance(exception, DisallowedHost) else request
    return HttpResponseBadRequest(
        render_error_page("400.html", {"contact": _contact()}, with_request, 400)
    )


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    context = {
        "reason": str(exception) if str(exception) else "",
        "permission": getattr(exception, "permission", ""),
        "permission_name": getattr(exception, "permission_name", ""),
        "group_name": getattr(exception, "group_name", None),
        "contact": _contact(),
    }
    return HttpResponseForbidden(render_error_page("403.html", context, request, 403))


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    context = {"path": request.path, "contact": _contact()}
    return HttpResponseNotFound(render_error_page("404.html", context, request, 404))


def server_error(request: HttpRequest) -> HttpResponse:
    # No request (no context processors, no session, no database): only settings and static.
    context = {"site_name": settings.SITE_NAME, "contact": _contact()}
    return HttpResponseServerError(render_error_page("500.html", context, None, 500))
