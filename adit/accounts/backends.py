"""Authentication backend whose group permissions are those of the user's active group."""

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission


class ActiveGroupModelBackend(ModelBackend):
    """Only the active group's permissions count (plus the user's own); superusers have all."""

    def _get_group_permissions(self, user_obj):
        active_group_id = getattr(user_obj, "active_group_id", None)
        if active_group_id is None:
            return Permission.objects.none()
        return Permission.objects.filter(group__id=active_group_id)
