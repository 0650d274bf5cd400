"""Audit entries in the admin: read-only (view permission only).

The pseudonym mapping is not in the admin at all: it is read only through its audited export.
"""

from django.contrib import admin

from .models import AuditEntry


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("time", "username", "action", "outcome", "patient_id", "study_uid")
    list_filter = ("action", "outcome")
    search_fields = ("username", "patient_id", "study_uid")
    date_hierarchy = "time"
    actions = None
