"""Jobs and tasks: the abstract bases of every app's job and task models and their state machines.

A job is what a user asked for (e.g. "transfer these 40 studies"); it is made of tasks, each
processed by a worker. Rows in PostgreSQL come first; the queue only carries task ids. Every
status change happens in one method below (see docs/architecture.md for the state machines).
"""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import connection, models, transaction
from django.db.models.functions import Concat
from django.utils import timezone

from adit.core.dicom.deid_profile import describe_options
from adit.core.processing import ProcessingResult
from adit.core.queue import abort_queued_job, cancel_queued_job, defer_dicom_tasks
from adit.core.statuses import FINAL_STATUSES, Status, TaskStatus
from adit.core.validators import (
    validate_no_backslash_or_control_characters,
    validate_no_wildcards,
    validate_uid,
)

from .nodes import DicomNode
from .settings import DicomAppSettings, deid_options_field


class DicomJob(models.Model):
    """What a user asked for; its status follows from its tasks (see `update_status`)."""

    Status = Status
    FINAL_STATUSES = FINAL_STATUSES

    # Procrastinate priorities (higher runs first); concrete jobs override them.
    default_priority = 2
    urgent_priority = 6
    # The app's DicomAppSettings model; concrete jobs set it.
    app_settings_model: type[DicomAppSettings] | None = None

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="%(app_label)s_jobs"
    )
    status = models.CharField(max_length=2, choices=Status.choices, default=Status.UNVERIFIED)
    urgent = models.BooleanField(default=False)
    message = models.TextField(blank=True, default="")
    send_finished_mail = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    start = models.DateTimeField(null=True, blank=True)
    end = models.DateTimeField(null=True, blank=True)

    tasks: models.Manager

    class Meta:
        abstract = True
        ordering = ["-created"]
        permissions = [("can_process_urgently", "Can process urgently")]

    def __str__(self) -> str:
        return f"{self._meta.verbose_name} #{self.pk}"

    @property
    def priority(self) -> int:
        return self.urgent_priority if self.urgent else self.default_priority

    @property
    def duration(self) -> timedelta | None:
        """From the first task's start to the job's end (None while it has not ended)."""
        return self.end - self.start if self.start and self.end else None

    # --- what may happen next (buttons; the actions check again under a lock) -----------------

    @property
    def is_verifiable(self) -> bool:
        return self.status == self.Status.UNVERIFIED

    @property
    def is_deletable(self) -> bool:
        return self.status in (self.Status.UNVERIFIED, self.Status.PENDING) and not (
            self.tasks.exclude(status=DicomTask.Status.PENDING).exists()
            or self.tasks.filter(attempts__gt=0).exists()
        )

    @property
    def is_cancelable(self) -> bool:
        return self.status in (self.Status.PENDING, self.Status.IN_PROGRESS)

    @property
    def is_resumable(self) -> bool:
        return self.status == self.Status.CANCELED

    @property
    def is_retriable(self) -> bool:
        return self.status == self.Status.FAILURE

    @property
    def is_restartable(self) -> bool:
        return self.status in self.FINAL_STATUSES

    def task_counts(self) -> dict[str, int]:
        counts = dict(self.tasks.values_list("status").annotate(n=models.Count("id")).order_by())
        return {status: counts.get(status, 0) for status in DicomTask.Status.values}

    # --- actions -----------------------------------------------------------------------------

    def _locked(self):
        """This row (a job's or a task's), locked until the end of the surrounding transaction."""
        return type(self).objects.select_for_update().get(pk=self.pk)

    def _require(self, allowed: bool, action: str) -> None:
        """Refuse an action the current status does not allow (a job's or a task's)."""
        if not allowed:
            raise JobActionError(
                f"{self} cannot be {action} while it is {self.get_status_display()}."
            )

    def submit(self, by_staff: bool) -> None:
        """After creation: start at once, or wait for a staff member to verify the job."""
        needs_verification = not by_staff and self._app_settings_require_verification()
        if needs_verification:
            self._set_status(self.Status.UNVERIFIED)
        else:
            self._set_status(self.Status.PENDING)
            self.queue_pending_tasks()

    def _app_settings_require_verification(self) -> bool:
        setting = f"START_{self._meta.app_label.upper()}_UNVERIFIED"
        return not getattr(settings, setting, True)

    def verify(self) -> None:
        with transaction.atomic():
            job = self._locked()
            job._require(job.is_verifiable, "verified")
            job._set_status(self.Status.PENDING)
        self._run_again()

    def delete_if_untouched(self) -> None:
        """Delete a job none of whose tasks has started, with its queue entries."""
        with transaction.atomic():
            job = self._locked()
            job._require(job.is_deletable, "deleted")
            for queue_id in _queue_ids(job.tasks.all()):
                cancel_queued_job(queue_id)
            job.delete()

    def cancel(self) -> None:
        """Cancel pending tasks at once; abort running ones (the job is Canceling meanwhile)."""
        with transaction.atomic():
            job = self._locked()
            job._require(job.is_cancelable, "canceled")
            pending = job.tasks.filter(status=DicomTask.Status.PENDING)
            for queue_id in _queue_ids(pending):
                cancel_queued_job(queue_id)
            pending.update(
                status=DicomTask.Status.CANCELED,
                message="Canceled by the user before it ran.",
                queued_job_id=None,
                end=timezone.now(),
            )
            running = job.tasks.filter(status=DicomTask.Status.IN_PROGRESS)
            for queue_id in _queue_ids(running):
                abort_queued_job(queue_id)
            if running.exists():
                job._set_status(self.Status.CANCELING)
            else:  # nothing runs: the job has ended now
                job._finish(self.Status.CANCELED, "The job was canceled.")
        self.refresh_from_db()

    def resume(self) -> None:
        with transaction.atomic():
            job = self._locked()
            job._require(job.is_resumable, "resumed")
            job.tasks.filter(status=DicomTask.Status.CANCELED).update(
                status=DicomTask.Status.PENDING, message="", end=None, queued_job_id=None
            )
            job._set_status(self.Status.PENDING, message="")
            # Running again: the old end time is no longer true (set anew when it ends).
            job.end = None
            job.save(update_fields=["end"])
        self._run_again()

    def retry(self) -> None:
        """Run the failed tasks again (only those)."""
        with transaction.atomic():
            job = self._locked()
            job._require(job.is_retriable, "retried")
            job.tasks.filter(status=DicomTask.Status.FAILURE).update(
                **job.tasks.model.reset_values()
            )
            job._set_status(self.Status.PENDING, message="")
            # Running again: the old end time is no longer true (set anew when it ends).
            job.end = None
            job.save(update_fields=["end"])
        self._run_again()

    def restart(self) -> None:
        """Run every task again (staff)."""
        with transaction.atomic():
            job = self._locked()
            job._require(job.is_restartable, "restarted")
            job.tasks.update(**job.tasks.model.reset_values())
            job._set_status(self.Status.PENDING, message="")
            job.start = job.end = None
            job.save(update_fields=["start", "end"])
        self._run_again()

    def _run_again(self) -> None:
        """After resume, retry or restart: queue the pending tasks and let them decide the status.

        A job with nothing left to run (e.g. resumed after a cancel that came when its only task
        had already failed) ends now, not Pending forever.
        """
        self.refresh_from_db()
        self.queue_pending_tasks()
        self.update_status()

    def queue_pending_tasks(self) -> int:
        """Queue every pending task that is not queued yet (one round trip for all)."""
        with transaction.atomic():
            tasks = list(
                self.tasks.select_for_update()
                .filter(status=DicomTask.Status.PENDING, queued_job_id=None)
                .order_by("id")
            )
            if not tasks:
                return 0
            queue_ids = defer_dicom_tasks(tasks, self.priority)
            _record_queue_ids(type(tasks[0]), [task.pk for task in tasks], queue_ids)
        return len(tasks)

    # --- status follows from the tasks ----------------------------------------------------------

    def _set_status(self, status: str, message: str | None = None) -> None:
        self.status = status
        fields = ["status"]
        if message is not None:
            self.message = message
            fields.append("message")
        self.save(update_fields=fields)

    def update_status(self) -> bool:
        """Derive the job's status from its tasks, under a row lock.

        Returns:
            True when this call finished the job (it reached Success, Warning or Failure).
        """
        with transaction.atomic():
            job = self._locked()
            finished = job._derive_status()
        # The row as committed is the locked copy: taken over without reading it again.
        for field in self._meta.concrete_fields:
            setattr(self, field.attname, getattr(job, field.attname))
        if finished and self.send_finished_mail:
            from adit.core.mail import send_job_finished_mail

            transaction.on_commit(lambda: send_job_finished_mail(self))
        return finished

    def status_from_tasks(self) -> tuple[str, str | None]:
        """The status (and, for a final one, the message) that the tasks call for.

        The one place that maps task statuses to a job status: `update_status` applies it, and
        the stuck-work check (`adit.core.tasks.find_stuck_work`) compares it with the stored
        status. An unverified job keeps its status whatever its tasks say.
        """
        Status, TaskStatus = self.Status, DicomTask.Status
        if self.status == Status.UNVERIFIED:
            return self.status, None
        counts = self.task_counts()
        total = sum(counts.values())
        if total == 0:
            return Status.SUCCESS, "There was nothing to process."
        if counts[TaskStatus.IN_PROGRESS]:
            return (
                Status.CANCELING if self.status == Status.CANCELING else Status.IN_PROGRESS
            ), None
        canceled_by_user = self.status in (Status.CANCELING, Status.CANCELED)
        if counts[TaskStatus.PENDING] and not canceled_by_user:
            return (Status.IN_PROGRESS if self.start else Status.PENDING), None
        if canceled_by_user or counts[TaskStatus.CANCELED] == total:
            return Status.CANCELED, "The job was canceled."
        succeeded, warned, failed = (
            counts[TaskStatus.SUCCESS],
            counts[TaskStatus.WARNING],
            counts[TaskStatus.FAILURE],
        )
        canceled = counts[TaskStatus.CANCELED]
        some_canceled = f" ({canceled} canceled)" if canceled else ""
        if failed:
            done_fine = succeeded + warned
            summary = (
                "All tasks failed"
                if not done_fine and not canceled
                else (f"{failed} of {total} tasks failed")
            )
            return Status.FAILURE, summary + some_canceled + "."
        if warned:
            summary = (
                "All tasks finished with warnings"
                if not succeeded and not canceled
                else (f"{warned} of {total} tasks finished with warnings")
            )
            return Status.WARNING, summary + some_canceled + "."
        return Status.SUCCESS, "All tasks succeeded" + some_canceled + "."

    def _derive_status(self) -> bool:
        Status = self.Status
        status, message = self.status_from_tasks()
        if status == Status.UNVERIFIED:
            return False
        # A job that runs (again, e.g. after a task's reset) has not ended.
        if status in (Status.IN_PROGRESS, Status.CANCELING):
            if self.status != status or self.start is None or self.end is not None:
                if self.start is None and status == Status.IN_PROGRESS:
                    self.start = timezone.now()
                self.status = status
                self.end = None
                self.save(update_fields=["status", "start", "end"])
            return False
        if status == Status.PENDING:
            if self.status != status or self.end is not None:
                self.status, self.end = status, None
                self.save(update_fields=["status", "end"])
            return False
        self._finish(status, message or "")
        return status != Status.CANCELED

    def _finish(self, status: str, message: str) -> None:
        self.status = status
        self.message = message
        self.end = timezone.now()
        self.save(update_fields=["status", "message", "end"])


def _record_queue_ids(task_model, task_ids: list[int], queue_ids: list[int]) -> None:
    """Store each task's queue job id with one UPDATE (bulk_update is slow for 10,000 rows)."""
    table = connection.ops.quote_name(task_model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS task SET queued_job_id = queued.queue_id "  # noqa: S608
            "FROM unnest(%s::bigint[], %s::bigint[]) AS queued(task_id, queue_id) "
            "WHERE task.id = queued.task_id",
            [task_ids, queue_ids],
        )


def _queue_ids(tasks) -> list[int]:
    return list(tasks.exclude(queued_job_id=None).values_list("queued_job_id", flat=True))


class JobActionError(Exception):
    """An action that the job's or task's current status does not allow."""


TASK_RESET_VALUES = {
    "status": Status.PENDING,
    "attempts": 0,
    "message": "",
    "log": "",
    "start": None,
    "end": None,
    "queued_job_id": None,
}


class DicomTask(models.Model):
    """One unit of work a worker processes (e.g. one study)."""

    Status = TaskStatus
    FINAL_STATUSES = FINAL_STATUSES

    # Concrete tasks: job = models.ForeignKey(<Job>, on_delete=models.CASCADE, related_name="tasks")
    job: Any
    source = models.ForeignKey(DicomNode, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=2, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    message = models.TextField(blank=True, default="")
    log = models.TextField(blank=True, default="")
    # The Procrastinate job this task is queued as (None: not queued). Procrastinate deletes its
    # rows with its own SQL, so this is a plain id, not a foreign key.
    queued_job_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    created = models.DateTimeField(auto_now_add=True)
    start = models.DateTimeField(null=True, blank=True)
    end = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self._meta.verbose_name} #{self.pk}"

    @classmethod
    def model_label(cls) -> str:
        return cls._meta.label_lower

    @classmethod
    def reset_values(cls) -> dict[str, Any]:
        """The fields a task gets when it is to run again from the start (reset, retry)."""
        return dict(TASK_RESET_VALUES)

    @property
    def is_deletable(self) -> bool:
        return self.status == self.Status.PENDING

    @property
    def is_resettable(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def is_killable(self) -> bool:
        return self.status == self.Status.IN_PROGRESS

    # --- user actions --------------------------------------------------------------------------

    # The same row lock and status check as the job's.
    _locked = DicomJob._locked
    _require = DicomJob._require

    def delete_pending(self) -> None:
        job = self.job
        with transaction.atomic():
            task = self._locked()
            task._require(task.is_deletable, "deleted")
            if task.queued_job_id:
                cancel_queued_job(task.queued_job_id)
            task.delete()
        job.update_status()

    def reset(self) -> None:
        with transaction.atomic():
            task = self._locked()
            task._require(task.is_resettable, "reset")
            type(self).objects.filter(pk=self.pk).update(**self.reset_values())
        self.refresh_from_db()
        job = self.job
        if job.status == job.Status.UNVERIFIED:
            return
        job.queue_pending_tasks()
        job.update_status()
        self.refresh_from_db()

    def kill(self) -> None:
        """Abort the running task (staff); the worker marks it canceled when it has stopped."""
        with transaction.atomic():
            task = self._locked()
            task._require(task.is_killable, "killed")
            if task.queued_job_id:
                abort_queued_job(task.queued_job_id)

    # --- worker side ---------------------------------------------------------------------------

    def reason_to_wait(self) -> tuple[datetime, str] | None:
        """Whether the worker should put the task back for later (app suspended, time window)."""
        job = self.job
        app_settings = job.app_settings_model.get() if job.app_settings_model else None
        if app_settings is None:
            return None
        now = timezone.now()
        if app_settings.suspended:
            return now + timedelta(minutes=5), "The app is suspended; the task waits."
        if not job.urgent:
            opening = app_settings.next_window_start(now)
            if opening is not None:
                return opening, f"Waiting for the transfer window ({opening:%H:%M})."
        return None

    def claim(self, queue_job_id: int) -> bool:
        """Mark the task In Progress for the queue job that delivered it.

        A task still In Progress from a worker that died is claimed again by its retried queue
        job (same id). Returns False when the task is not this queue job's to run (canceled,
        finished, re-queued as another queue job meanwhile, or its job is being canceled).
        """
        now = timezone.now()
        with transaction.atomic():
            claimed = (
                type(self)
                .objects.filter(
                    pk=self.pk,
                    status__in=[self.Status.PENDING, self.Status.IN_PROGRESS],
                    queued_job_id=queue_job_id,
                )
                .exclude(job__status__in=[DicomJob.Status.CANCELING, DicomJob.Status.CANCELED])
                .update(
                    status=self.Status.IN_PROGRESS,
                    attempts=models.F("attempts") + 1,
                    start=now,
                    end=None,
                )
            )
            if not claimed:
                return False
            # A job already In Progress stays so while this task runs (a cancel after the claim
            # updates it itself): deriving its status again would cost four more round trips.
            job_status = (
                type(self.job).objects.filter(pk=self.job_id).values_list("status", flat=True)
            ).first()
        self.refresh_from_db(fields=["status", "attempts", "start", "end"])
        if job_status != DicomJob.Status.IN_PROGRESS:
            self.job.update_status()
        return True

    def finish(self, result) -> None:
        """Store the processor's result (and what it counted) and update the job.

        The log grows inside the UPDATE and only the written fields are read back, so the job
        stays loaded: a task of a few instances spent a tenth of its time on round trips here.
        """
        values = {
            "status": result.status,
            "message": result.message,
            "end": timezone.now(),
            **self.counted_values(result),
        }
        new = self._log_entries(*result.log)
        if new:
            values["log"] = models.Case(
                models.When(log="", then=models.Value(new)),
                default=Concat(models.F("log"), models.Value("\n" + new)),
                output_field=models.TextField(),
            )
        type(self).objects.filter(pk=self.pk).update(**values)
        self.refresh_from_db(fields=list(values))
        if not self._job_stays_in_progress():
            self.job.update_status()

    def _job_stays_in_progress(self) -> bool:
        """Whether the job is In Progress and another of its tasks is still pending or running,
        so that deriving its status again would change nothing (one statement instead of the
        four round trips of `update_status`).

        Called after this task's end was committed. Under READ COMMITTED the last task to end
        therefore always sees every other one ended and derives the job's status. The job row
        is locked for the statement, so a cancel that is being written is waited for, and a
        job it left Canceling is derived as well.
        """
        if connection.in_atomic_block:
            return False  # a caller's transaction: its own view, derive as always
        job_model = type(self.job)
        job_field = type(self)._meta.get_field("job")
        statuses = [self.Status.PENDING, self.Status.IN_PROGRESS]
        sql = (
            f"WITH job AS (SELECT status FROM {job_model._meta.db_table} WHERE id = %s "
            f"FOR UPDATE) SELECT job.status, EXISTS (SELECT 1 FROM {self._meta.db_table} "
            f"WHERE {job_field.column} = %s AND id <> %s AND status IN (%s, %s)) FROM job"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [self.job_id, self.job_id, self.pk, *statuses])
            row = cursor.fetchone()
        return bool(row and row[0] == DicomJob.Status.IN_PROGRESS and row[1])

    def counted_values(self, result) -> dict[str, Any]:
        """The fields of what the processor counted (none for tasks that count nothing)."""
        return {}

    def finish_canceled_if_job_is_canceling(self, queue_job_id: int) -> None:
        """Ends a task that its queue job may no longer run because the job is being canceled
        (e.g. a task of a worker that died while canceling, handed back to the queue)."""
        self.refresh_from_db()
        if (
            self.queued_job_id == queue_job_id
            and self.status in (self.Status.PENDING, self.Status.IN_PROGRESS)
            and self.job.status in (DicomJob.Status.CANCELING, DicomJob.Status.CANCELED)
        ):
            self.finish_canceled()

    def finish_canceled(self) -> None:
        type(self).objects.filter(pk=self.pk).update(
            status=self.Status.CANCELED,
            message="Canceled while it was running.",
            end=timezone.now(),
            queued_job_id=None,
        )
        self.refresh_from_db()
        self.job.update_status()

    def fail_or_retry(self, error: Exception) -> None:
        """A transient error: try again later with exponential backoff, or give up."""
        self.refresh_from_db()
        max_attempts = settings.DICOM_TASK_MAX_ATTEMPTS
        if self.attempts < max_attempts:
            delay = min(
                settings.DICOM_TASK_RETRY_DELAY * 2 ** max(0, self.attempts - 1),
                settings.DICOM_TASK_RETRY_MAX_DELAY,
            )
            retry_at = timezone.now() + timedelta(seconds=delay)
            self.hand_back(
                f"Attempt {self.attempts} of {max_attempts} failed: {error}. Waiting {delay} s "
                "for the server (or ADIT's receiver) to recover; next attempt at "
                f"{timezone.localtime(retry_at):%H:%M:%S}.",
                retry_at,
                True,
            )
        else:
            self.finish(
                ProcessingResult.failure(
                    f"Failed after {self.attempts} attempts: {error}", str(error)
                )
            )

    def hand_back(self, message: str, run_at: datetime | None, log_it: bool) -> None:
        """Put the task back in the queue (to run at `run_at`, or as soon as possible)."""
        if self.job.status == DicomJob.Status.CANCELING:
            self.finish_canceled()
            return
        log = self._append_log(message) if log_it else self.log
        with transaction.atomic():
            type(self).objects.filter(pk=self.pk).update(
                status=self.Status.PENDING, message=message, log=log, queued_job_id=None
            )
            self.refresh_from_db()
            (queue_id,) = defer_dicom_tasks([self], self.job.priority, schedule_at=run_at)
            type(self).objects.filter(pk=self.pk).update(queued_job_id=queue_id)
        self.refresh_from_db()
        self.job.update_status()

    def _append_log(self, *entries: str) -> str:
        new = self._log_entries(*entries)
        current = type(self).objects.values_list("log", flat=True).get(pk=self.pk)
        return f"{current}\n{new}".strip() if new else current

    @staticmethod
    def _log_entries(*entries: str) -> str:
        """The entries as log lines, each with the time it was written ('' when none)."""
        stamp = timezone.localtime().strftime("%Y-%m-%d %H:%M:%S")
        return "\n".join(f"[{stamp}] {entry}" for entry in entries if entry).strip()


class TransferJob(DicomJob):
    trial_protocol_id = models.CharField(
        max_length=64, blank=True, validators=[validate_no_backslash_or_control_characters]
    )
    trial_protocol_name = models.CharField(
        max_length=64, blank=True, validators=[validate_no_backslash_or_control_characters]
    )
    archive_password = models.CharField(max_length=64, blank=True)
    # What pseudonymization does besides the Basic Profile (codes of DeidOption).
    deid_options = deid_options_field(
        "Options of the Basic Application Level Confidentiality Profile (DICOM PS3.15 E.1)."
    )

    class Meta(DicomJob.Meta):
        abstract = True
        permissions = [
            ("can_process_urgently", "Can process urgently"),
            ("can_transfer_unpseudonymized", "Can transfer unpseudonymized"),
        ]

    def study_count(self) -> int:
        """How many studies the job transfers: one per task (an app whose tasks may share a
        study overrides this and `transfer_totals`)."""
        return self.tasks.count()

    def transfer_totals(self) -> dict[str, int]:
        """Studies transferred (tasks that succeeded, with or without warnings), their
        instances and bytes as the tasks counted them."""
        done = self.tasks.filter(status__in=[DicomTask.Status.SUCCESS, DicomTask.Status.WARNING])
        totals = done.aggregate(
            studies=models.Count("id"),
            instances=models.Sum("transferred_instances"),
            bytes=models.Sum("transferred_bytes"),
        )
        return {key: value or 0 for key, value in totals.items()}

    def destinations(self) -> list:
        """The destinations of the job's tasks (usually one)."""
        ids = self.tasks.values_list("destination_id", flat=True).distinct()
        return list(DicomNode.objects.filter(pk__in=ids).order_by("name"))

    @property
    def deid_description(self) -> list[str]:
        """The profile and options the job's pseudonymized tasks apply, in the standard's words."""
        return describe_options(self.deid_options)


class TransferTask(DicomTask):
    destination = models.ForeignKey(DicomNode, on_delete=models.PROTECT, related_name="+")
    patient_id = models.CharField(
        max_length=64,
        validators=[validate_no_backslash_or_control_characters, validate_no_wildcards],
    )
    study_uid = models.CharField(max_length=64, validators=[validate_uid])
    series_uids = ArrayField(
        models.CharField(max_length=64, validators=[validate_uid]), default=list, blank=True
    )
    pseudonym = models.CharField(
        max_length=64, blank=True, validators=[validate_no_backslash_or_control_characters]
    )
    # What the last run delivered to the destination (None: not run to its end yet). Bytes are
    # those of the instances as received from the source.
    transferred_instances = models.PositiveIntegerField(null=True, blank=True)
    transferred_bytes = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta(DicomTask.Meta):
        abstract = True

    @classmethod
    def reset_values(cls) -> dict[str, Any]:
        return {**super().reset_values(), "transferred_instances": None, "transferred_bytes": None}

    def counted_values(self, result) -> dict[str, Any]:
        if result.instances is None:
            return {}
        return {"transferred_instances": result.instances, "transferred_bytes": result.bytes}

    @property
    def duration(self) -> timedelta | None:
        return self.end - self.start if self.start and self.end else None
