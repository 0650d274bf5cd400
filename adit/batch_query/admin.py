from django.contrib import admin

from adit.core.admin import DicomAppSettingsAdmin

from .models import BatchQuerySettings

admin.site.register(BatchQuerySettings, DicomAppSettingsAdmin)
