from django.contrib import admin

from .models import APIUsage


@admin.register(APIUsage)
class APIUsageAdmin(admin.ModelAdmin):
    list_display = (
        "owner",
        "request_count",
        "error_count",
        "bytes_sent",
        "bytes_received",
        "last_access",
    )
    readonly_fields = list_display
    search_fields = ("owner__username",)

    def has_add_permission(self, request) -> bool:
        return False
