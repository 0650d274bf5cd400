from django.contrib import admin

from adit.core.admin import DicomAppSettingsAdmin

from .models import BatchTransferSettings

admin.site.register(BatchTransferSettings, DicomAppSettingsAdmin)
