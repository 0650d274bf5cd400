from django.contrib import admin

from .models import UploadJob, UploadSettings, UploadTask


@admin.register(UploadSettings)
class UploadSettingsAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "locked",
        "suspended",
        "transfer_window_start",
        "transfer_window_end",
    )


class UploadTaskInline(admin.TabularInline):
    model = UploadTask
    extra = 0
    fields = ("status", "destination", "study_uid", "attempts", "message")
    readonly_fields = fields
    can_delete = False


@admin.register(UploadJob)
class UploadJobAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "status", "destination", "pseudonym", "created")
    list_filter = ("status",)
    readonly_fields = ("owner", "status", "created", "start", "end", "message")
    exclude = ("archive_password",)
    inlines = [UploadTaskInline]
