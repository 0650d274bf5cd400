from django.contrib import admin

from .models import SelectiveTransferJob, SelectiveTransferSettings, SelectiveTransferTask


@admin.register(SelectiveTransferSettings)
class SelectiveTransferSettingsAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "locked",
        "suspended",
        "transfer_window_start",
        "transfer_window_end",
    )


class SelectiveTransferTaskInline(admin.TabularInline):
    model = SelectiveTransferTask
    extra = 0
    fields = ("status", "source", "destination", "study_uid", "attempts", "message")
    readonly_fields = fields
    can_delete = False


@admin.register(SelectiveTransferJob)
class SelectiveTransferJobAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "status", "urgent", "created")
    list_filter = ("status", "urgent")
    readonly_fields = ("owner", "status", "created", "start", "end", "message")
    exclude = ("archive_password",)
    inlines = [SelectiveTransferTaskInline]
