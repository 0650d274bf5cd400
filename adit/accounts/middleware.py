"""Keep every signed-in user's active group valid."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class ActiveGroupMiddleware:
    """Assign the first group when a signed-in user's active group is unset or invalid.

    Group membership can change at any time (admin, other sessions), so the check runs on
    each request; it costs one small query. API requests authenticated by token are handled
    by TokenAuthentication, which runs after the middleware.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            user.ensure_valid_active_group()
        return self.get_response(request)
