"""Selective transfer: a job of studies a user picked from live query results."""

from django.conf import settings
from django.db import models
from django.urls import reverse

from adit.core.models import DicomAppSettings, TransferJob, TransferTask


class SelectiveTransferSettings(DicomAppSettings):
    class Meta:
        verbose_name = "selective transfer settings"
        verbose_name_plural = "selective transfer settings"
        permissions = [("can_download_study", "Can download a study directly")]

    def __str__(self) -> str:
        return "Selective transfer settings"


class SelectiveTransferJob(TransferJob):
    default_priority = settings.SELECTIVE_TRANSFER_DEFAULT_PRIORITY
    urgent_priority = settings.SELECTIVE_TRANSFER_URGENT_PRIORITY
    app_settings_model = SelectiveTransferSettings

    class Meta(TransferJob.Meta):
        verbose_name = "selective transfer job"

    def get_absolute_url(self) -> str:
        return reverse("selective_transfer:job_detail", args=[self.pk])


class SelectiveTransferTask(TransferTask):
    job = models.ForeignKey(SelectiveTransferJob, on_delete=models.CASCADE, related_name="tasks")

    class Meta(TransferTask.Meta):
        verbose_name = "selective transfer task"

    def get_absolute_url(self) -> str:
        return reverse("selective_transfer:task_detail", args=[self.pk])
