"""Template filters for job and task statuses (`{% load statuses %}`)."""

from django import template

from adit.core.statuses import BADGE_CLASSES

register = template.Library()


@register.filter
def status_badge_class(status: str) -> str:
    """The Bootstrap classes of a status badge (light with a border for waiting states)."""
    return BADGE_CLASSES.get(status, "text-bg-light border")  # type: ignore[call-overload]
