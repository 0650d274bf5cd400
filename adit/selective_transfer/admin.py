from django.contrib import admin

from adit.core.admin import DicomAppSettingsAdmin

from .models import SelectiveTransferJob, SelectiveTransferSettings, SelectiveTransferTask

admin.site.register(SelectiveTransferSettings, DicomAppSettingsAdmin)


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
