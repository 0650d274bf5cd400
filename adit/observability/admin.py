from django.contrib import admin

from .models import DatabaseBackupSettings


@admin.register(DatabaseBackupSettings)
class DatabaseBackupSettingsAdmin(admin.ModelAdmin):
    list_display = ["__str__", "enabled", "keep"]

    def has_add_permission(self, request) -> bool:
        return not DatabaseBackupSettings.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
