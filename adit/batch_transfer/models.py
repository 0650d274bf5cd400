"""Batch transfer: the studies of a spreadsheet, one task per study."""

from django.contrib.postgres.fields import ArrayField
from django.db import models, transaction

from adit.core.models import DicomAppSettings, TransferJob, TransferTask
from adit.core.validators import validate_no_backslash_or_control_characters


class BatchTransferSettings(DicomAppSettings):
    class Meta:
        verbose_name = "batch transfer settings"
        verbose_name_plural = "batch transfer settings"

    def __str__(self) -> str:
        return "Batch transfer settings"


class BatchTransferJob(TransferJob):
    default_priority = 2
    urgent_priority = 6
    app_settings_model = BatchTransferSettings

    project_name = models.CharField(max_length=150)
    project_description = models.TextField(max_length=2000)
    ethics_application_id = models.CharField(
        "ethics committee approval",
        max_length=100,
        blank=True,
        validators=[validate_no_backslash_or_control_characters],
    )

    class Meta(TransferJob.Meta):
        verbose_name = "batch transfer job"


class BatchTransferTask(TransferTask):
    """One study (all rows of the file with its StudyInstanceUID; their lines in `lines`)."""

    job = models.ForeignKey(BatchTransferJob, on_delete=models.CASCADE, related_name="tasks")
    lines = ArrayField(models.PositiveIntegerField(), default=list)

    class Meta(TransferTask.Meta):
        verbose_name = "batch transfer task"

    @property
    def lines_label(self) -> str:
        return ", ".join(str(line) for line in self.lines)


def create_batch_transfer_job(owner, source, destination, studies, **job_fields):
    """Create the job and one task per study with bulk inserts, then submit it (one queue trip)."""
    with transaction.atomic():
        job = BatchTransferJob.objects.create(owner=owner, **job_fields)
        BatchTransferTask.objects.bulk_create(
            (
                BatchTransferTask(
                    job=job,
                    source=source,
                    destination=destination,
                    patient_id=study.patient_id,
                    study_uid=study.study_uid,
                    series_uids=study.series_uids,
                    pseudonym=study.pseudonym,
                    lines=study.lines,
                )
                for study in studies
            ),
            batch_size=2000,
        )
    job.submit(by_staff=owner.is_staff)
    return job
