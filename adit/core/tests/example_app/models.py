from django.db import models

from adit.core.models import DicomAppSettings, TransferJob, TransferTask


class ExampleAppSettings(DicomAppSettings):
    pass


class ExampleTransferJob(TransferJob):
    default_priority = 3
    urgent_priority = 7
    app_settings_model = ExampleAppSettings


class ExampleTransferTask(TransferTask):
    job = models.ForeignKey(ExampleTransferJob, on_delete=models.CASCADE, related_name="tasks")
