"""Toasts (small pop-up notices) triggered by HTMX responses.

Django messages added during a normal request appear as toasts on the next rendered page.
An HTMX response that swaps only part of the page can raise a toast right away instead::

    response = render(request, "partial.html")
    add_toast(response, "Saved.")

The browser receives the header `HX-Trigger: {"adit:toast": {...}}`; base.js shows the toast.
"""

import json
from typing import Literal

from django.http import HttpResponse

ToastLevel = Literal["success", "info", "warning", "error"]
TOAST_EVENT = "adit:toast"


def add_toast(
    response: HttpResponse, message: str, level: ToastLevel = "success", title: str = ""
) -> HttpResponse:
    """Make the browser show a toast when HTMX handles `response` (keeps other triggers)."""
    triggers: dict = {}
    existing = response.headers.get("HX-Trigger")
    if existing:
        try:
            parsed = json.loads(existing)
        except ValueError:
            parsed = None
        # A plain event name ("a, b") is also valid HX-Trigger syntax.
        triggers = (
            parsed
            if isinstance(parsed, dict)
            else {name.strip(): None for name in existing.split(",") if name.strip()}
        )
    triggers[TOAST_EVENT] = {"message": message, "level": level, "title": title}
    response["HX-Trigger"] = json.dumps(triggers)
    return response
