"""Upload: files a researcher drops in the browser, pseudonymized there, stored on a destination.

The browser creates an `UploadJob` (destination, pseudonym, trial protocol), then posts its
files one by one. Each accepted file is staged on disk (`settings.UPLOAD_STAGING_DIR`) and
recorded as an `UploadInstance`, unique per job by SOP Instance UID: that is what makes an
upload resumable without sending anything twice (the browser first asks which SOP Instance UIDs
the job already holds). When the browser has sent everything it commits the job: the staged
instances become one `UploadTask` per study, and a worker stores them on the destination.
A large upload does not wait for that: every `UPLOAD_DISPATCH_INSTANCES` received instances
become tasks at once (`dispatch_received`), so the worker stores while the browser sends.

A job may be committed more than once (an upload resumed after it was committed, e.g. with
files added to the folder): each commit adds tasks for the instances no task holds yet and
reopens a finished job.

A page that stops sending without committing (closed mid-upload, crashed, offline) would leave
its job receiving forever: after `UPLOAD_ABANDONED_AFTER_MINUTES` without a file the default
worker ends it (`end_interrupted`, via `services.end_abandoned_uploads`). What arrived is
stored as if committed and the job ends with a Warning that names the interruption (a
Failure when nothing arrived), never as a plain Success: the destination may hold part of
what the user chose. If the page comes back and commits after all, the job runs again for
what it sends and the interruption is forgotten.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from adit.core.dicom.deid_profile import DeidOption
from adit.core.models import DicomAppSettings, DicomNode, TransferJob, TransferTask
from adit.core.validators import validate_uid

logger = logging.getLogger(__name__)

UPLOAD_DEID_OPTIONS = [DeidOption.RETAIN_MODIFIED_DATES.value]
"""What the browser applies: the Basic Profile with dates shifted per patient (PS3.15 E.3.6)."""


class UploadSettings(DicomAppSettings):
    class Meta:
        verbose_name = "upload settings"
        verbose_name_plural = "upload settings"

    def __str__(self) -> str:
        return "Upload settings"


class UploadJob(TransferJob):
    default_priority = 3
    urgent_priority = 7
    app_settings_model = UploadSettings
    source_description = "files sent from the browser"

    destination = models.ForeignKey(DicomNode, on_delete=models.PROTECT, related_name="+")
    pseudonym = models.CharField(max_length=64, blank=True)
    # True while the browser sends files and has not committed them yet: a job without tasks
    # is then still waiting, not "done with nothing to process".
    receiving = models.BooleanField(default=True)
    # When the server ended an upload whose page had stopped sending without finishing it
    # (`end_abandoned_uploads`); cleared when the page commits after all.
    interrupted = models.DateTimeField(null=True, blank=True)

    class Meta(TransferJob.Meta):
        verbose_name = "upload job"

    def get_absolute_url(self) -> str:
        return reverse("upload:job_detail", args=[self.pk])

    @property
    def staging_dir(self) -> Path:
        return Path(settings.UPLOAD_STAGING_DIR) / f"job-{self.pk}"

    def received_bytes(self) -> int:
        return self.instances.aggregate(total=models.Sum("size"))["total"] or 0

    # A study may be stored by several tasks (see `dispatch_received`): the job page counts
    # studies, not tasks.
    def study_count(self) -> int:
        return self.tasks.values("study_uid").distinct().count()

    def transfer_totals(self) -> dict[str, int]:
        totals = super().transfer_totals()
        done = (UploadTask.Status.SUCCESS, UploadTask.Status.WARNING)
        unfinished = self.tasks.exclude(status__in=done).values("study_uid")
        totals["studies"] = (
            self.tasks.filter(status__in=done)
            .exclude(study_uid__in=unfinished)
            .values("study_uid")
            .distinct()
            .count()
        )
        return totals

    def status_from_tasks(self) -> tuple[str, str | None]:
        if self.receiving:
            if not self.tasks.exists():
                return self.Status.PENDING, None
            status, message = super().status_from_tasks()
            if status in (self.Status.SUCCESS, self.Status.WARNING, self.Status.FAILURE):
                # What has arrived so far is stored; the browser still sends the rest, so the
                # job has not ended (a failed part shows on its task, and in the job at commit).
                return (self.Status.IN_PROGRESS if self.start else self.Status.PENDING), None
            return status, message
        status, message = super().status_from_tasks()
        if self.interrupted is None:
            return status, message
        at = timezone.localtime(self.interrupted).strftime("%Y-%m-%d %H:%M")
        if not self.tasks.exists():
            return self.Status.FAILURE, (
                f"The upload was interrupted before any file arrived: the page stopped sending "
                f"and never finished (ended by ADIT at {at})."
            )
        if status in (self.Status.SUCCESS, self.Status.WARNING):
            received = self.instances.count()
            return self.Status.WARNING, (
                f"The upload was interrupted: the page stopped sending and never finished "
                f"(ended by ADIT at {at}). Of the {received} file(s) that had arrived: "
                f"{(message or '').rstrip('.').lower()}. Files the page had not sent are missing: "
                "pick the same folder again on the Upload page (same browser) to send them."
            )
        return status, message

    def _create_tasks(self) -> int:
        """One task per study for the staged instances no task holds yet (the job row locked)."""
        new = self.instances.filter(task=None)
        studies = sorted(set(new.values_list("study_uid", flat=True)))
        for study_uid in studies:
            task = UploadTask.objects.create(
                job=self,
                destination_id=self.destination_id,  # type: ignore[attr-defined]
                patient_id=self.pseudonym,
                pseudonym=self.pseudonym,
                study_uid=study_uid,
            )
            new.filter(study_uid=study_uid).update(task=task)
        return len(studies)

    def _queue_new_tasks(self, by_staff: bool) -> None:
        if self.status in self.FINAL_STATUSES or self.status == self.Status.PENDING:
            self.submit(by_staff=by_staff)
        elif self.status == self.Status.IN_PROGRESS:
            self.queue_pending_tasks()
        # Unverified: the tasks are queued when staff verify the job.

    def dispatch_received(self, at_least: int, by_staff: bool) -> int:
        """While the browser still sends: hand the staged instances no task holds yet to a
        worker once there are `at_least` of them, so that storing on the destination overlaps
        the rest of the upload instead of following it.

        The job keeps receiving (its status stays Pending/In Progress until `commit_received`);
        a study may so be stored by several tasks, each with the instances it holds.

        Returns:
            How many tasks were created (0: not enough new instances yet).
        """
        if at_least <= 0 or self.instances.filter(task=None).count() < at_least:
            return 0
        with transaction.atomic():
            job = self._locked()
            if not job.receiving:
                return 0  # committed meanwhile: commit_received takes care of the rest
            if job.status in (self.Status.CANCELING, self.Status.CANCELED):
                return 0  # canceled by its owner while the page still sends: stays so
            created = job._create_tasks()
        if created:
            self.refresh_from_db()
            self._queue_new_tasks(by_staff)
            self.update_status()
        return created

    def commit_received(self, by_staff: bool) -> int:
        """Turn the staged instances no task holds yet into one task per study and queue them.

        Returns:
            How many tasks were created (0: nothing new arrived since the last commit).
        """
        return self._commit(by_staff) or 0

    def end_interrupted(self, idle_since: datetime) -> bool:
        """Ends an upload whose page has sent nothing since `idle_since` and never committed:
        what arrived is stored as if committed, and the job says it was interrupted.

        Returns:
            False when it is not to be ended after all (a file or the commit came meanwhile:
            checked under the job's row lock, which a commit takes as well).
        """
        return self._commit(self.owner.is_staff, idle_since=idle_since) is not None

    def _commit(self, by_staff: bool, idle_since: datetime | None = None) -> int | None:
        """Stops receiving and queues a task per study for what no task holds yet; with
        `idle_since`, only if no file came since then, and as interrupted (None if not)."""
        with transaction.atomic():
            job = self._locked()
            interrupted = None
            if idle_since is not None:
                last = job.instances.aggregate(last=models.Max("received"))["last"] or job.created
                if not job.receiving or last >= idle_since:
                    return None
                logger.warning(
                    "Ending %s: its page sent nothing since %s and never finished", job, last
                )
                interrupted = timezone.now()
                if job.status in (self.Status.CANCELING, self.Status.CANCELED):
                    job.receiving = False  # canceled by its owner: stays so, nothing is queued
                    job.save(update_fields=["receiving"])
                    return 0
            studies = job._create_tasks()
            job.receiving = False
            job.interrupted = interrupted
            job.save(update_fields=["receiving", "interrupted"])
            if studies and job.status in self.FINAL_STATUSES:
                # More files came for a finished job: it runs again for them.
                job.start = job.end = None
                job.message = ""
                job.save(update_fields=["start", "end", "message"])
        self.refresh_from_db()
        if studies:
            self._queue_new_tasks(by_staff)
        self.update_status()
        return studies


class UploadTask(TransferTask):
    """The staged instances of one study, stored on the job's destination by a worker."""

    job = models.ForeignKey(UploadJob, on_delete=models.CASCADE, related_name="tasks")
    # The files come from the user's browser, not from a node.
    source = models.ForeignKey(
        DicomNode, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )

    class Meta(TransferTask.Meta):
        verbose_name = "upload task"

    def get_absolute_url(self) -> str:
        return reverse("upload:task_detail", args=[self.pk])


class UploadInstance(models.Model):
    """One file the server accepted for a job (its staged copy lives until it is stored)."""

    job = models.ForeignKey(UploadJob, on_delete=models.CASCADE, related_name="instances")
    task = models.ForeignKey(
        UploadTask, on_delete=models.SET_NULL, null=True, blank=True, related_name="instances"
    )
    sop_instance_uid = models.CharField(max_length=64, validators=[validate_uid])
    study_uid = models.CharField(max_length=64, validators=[validate_uid])
    series_uid = models.CharField(max_length=64, validators=[validate_uid])
    size = models.PositiveBigIntegerField()
    received = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "sop_instance_uid"], name="upload_instance_unique_per_job"
            )
        ]

    def __str__(self) -> str:
        return f"Upload instance {self.sop_instance_uid} of job {self.job_id}"  # type: ignore[attr-defined]

    @property
    def staged_path(self) -> Path:
        return (
            Path(settings.UPLOAD_STAGING_DIR)
            / f"job-{self.job_id}"
            / f"{self.sop_instance_uid}.dcm"
        )  # type: ignore[attr-defined]


@receiver(post_delete, sender=UploadJob)
def remove_staged_files(sender, instance: UploadJob, **kwargs) -> None:
    """A deleted job's staged files go with it (once the deletion is committed)."""
    staging_dir = instance.staging_dir
    transaction.on_commit(lambda: shutil.rmtree(staging_dir, ignore_errors=True))
