"""Batch query: one task per spreadsheet row, its findings stored as `BatchQueryResult` rows."""

from django.contrib.postgres.fields import ArrayField
from django.db import models

from adit.core.models import DicomAppSettings, DicomJob, DicomTask


class BatchQuerySettings(DicomAppSettings):
    class Meta:
        verbose_name = "batch query settings"
        verbose_name_plural = "batch query settings"

    def __str__(self) -> str:
        return "Batch query settings"


class BatchQueryJob(DicomJob):
    default_priority = 3
    urgent_priority = 7
    app_settings_model = BatchQuerySettings

    project_name = models.CharField(max_length=150)
    project_description = models.TextField(max_length=2000)

    class Meta(DicomJob.Meta):
        verbose_name = "batch query job"


class BatchQueryTask(DicomTask):
    """One row of the uploaded file (its spreadsheet line is kept in `lines`)."""

    job = models.ForeignKey(BatchQueryJob, on_delete=models.CASCADE, related_name="tasks")
    lines = ArrayField(models.PositiveIntegerField(), default=list)
    patient_id = models.CharField(max_length=64, blank=True)
    patient_name = models.CharField(max_length=324, blank=True)
    patient_birth_date = models.DateField(null=True, blank=True)
    accession_number = models.CharField(max_length=16, blank=True)
    study_date_start = models.DateField(null=True, blank=True)
    study_date_end = models.DateField(null=True, blank=True)
    modalities = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    study_description = models.CharField(max_length=64, blank=True)
    series_description = models.CharField(max_length=64, blank=True)
    series_numbers = ArrayField(models.CharField(max_length=12), default=list, blank=True)
    pseudonym = models.CharField(max_length=64, blank=True)

    class Meta(DicomTask.Meta):
        verbose_name = "batch query task"

    @property
    def is_series_query(self) -> bool:
        return bool(self.series_description or self.series_numbers)

    @property
    def lines_label(self) -> str:
        return ", ".join(str(line) for line in self.lines)


class BatchQueryResult(models.Model):
    """A study (or, for a series query, a series) that a task found."""

    job = models.ForeignKey(BatchQueryJob, on_delete=models.CASCADE, related_name="results")
    task = models.ForeignKey(BatchQueryTask, on_delete=models.CASCADE, related_name="results")
    patient_id = models.CharField(max_length=64)
    patient_name = models.CharField(max_length=324, blank=True)
    patient_birth_date = models.DateField(null=True, blank=True)
    accession_number = models.CharField(max_length=64, blank=True)
    study_date = models.DateField(null=True, blank=True)
    study_time = models.TimeField(null=True, blank=True)
    modalities = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    image_count = models.PositiveIntegerField(null=True, blank=True)
    study_description = models.CharField(max_length=64, blank=True)
    series_description = models.CharField(max_length=64, blank=True)
    series_number = models.CharField(max_length=12, blank=True)
    pseudonym = models.CharField(max_length=64, blank=True)
    study_uid = models.CharField(max_length=64)
    series_uid = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["task_id", "id"]

    def __str__(self) -> str:
        return f"Result #{self.pk} of task #{self.task_id}"  # type: ignore[attr-defined]


def create_batch_query_job(owner, source, rows, **job_fields) -> BatchQueryJob:
    """Create the job and one task per row with bulk inserts, then submit it (one queue trip)."""
    from django.db import transaction

    with transaction.atomic():
        job = BatchQueryJob.objects.create(owner=owner, **job_fields)
        BatchQueryTask.objects.bulk_create(
            (BatchQueryTask(job=job, source=source, **row.fields) for row in rows),
            batch_size=2000,
        )
    job.submit(by_staff=owner.is_staff)
    return job
