"""Models every ADIT app shares."""

import secrets
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connection, models, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from adit.core.dicom.config import ServerConfig
from adit.core.dicom.deid_profile import DEID_OPTION_CHOICES, describe_options
from adit.core.processing import ProcessingResult
from adit.core.queue import abort_queued_job, cancel_queued_job, defer_dicom_tasks
from adit.core.statuses import FINAL_STATUSES, Status, TaskStatus

# Historic migrations name the node validators adit.core.models.<name>: keep them imported here.
from adit.core.validators import (
    validate_absolute_folder_path,
    validate_ae_title,
    validate_deid_options,
    validate_host,
    validate_http_url,
    validate_no_backslash_or_control_characters,
    validate_no_wildcards,
    validate_uid,
    validate_url_prefix,
)


class ProjectSettings(models.Model):
    """The one row of site-wide settings that staff edit at run time."""

    announcement = models.TextField(
        blank=True, help_text="Shown on the home page to every signed-in user (plain text)."
    )
    maintenance = models.BooleanField(
        default=False,
        help_text="While on, only staff can use ADIT; others and the API get 503.",
    )

    class Meta:
        verbose_name = "project settings"
        verbose_name_plural = "project settings"

    def __str__(self) -> str:
        return "Project settings"

    @classmethod
    def get(cls) -> "ProjectSettings":
        settings, _ = cls.objects.get_or_create(pk=1)
        return settings


# --- DICOM nodes --------------------------------------------------------------------------------

AccessDirection = Literal["source", "destination"]
ACCESS_DIRECTIONS: tuple[AccessDirection, ...] = ("source", "destination")


class DicomNodeQuerySet(models.QuerySet):
    def active(self):
        return self.filter(active=True)

    def accessible_by_user(self, user, direction: AccessDirection, all_groups: bool = False):
        """Active nodes that `user` may use as `direction` ("source" or "destination").

        Access comes from the user's active group (or, with `all_groups`, from any of the
        user's groups). Group and flag are matched on the *same* access row, so a source right
        of one group never combines with a destination right of another. Superusers get every
        active node; anonymous and inactive users get none.
        """
        if direction not in ACCESS_DIRECTIONS:
            raise ValueError(
                f"Unknown access direction {direction!r}; use 'source' or 'destination'."
            )
        nodes = self.active()
        if not user or not user.is_authenticated or not user.is_active:
            return nodes.none()
        if user.is_superuser:
            return nodes
        access_rows = DicomNodeGroupAccess.objects.filter(
            node=OuterRef("pk"), group__user=user, **{direction: True}
        )
        if not all_groups:
            if not user.active_group_id:
                return nodes.none()
            access_rows = access_rows.filter(group_id=user.active_group_id)
        return nodes.filter(Exists(access_rows))


class DicomNode(models.Model):
    """A place DICOM data comes from or goes to: a server or a folder.

    Concrete parent of `DicomServer` and `DicomFolder` (multi-table inheritance) so that jobs
    can point at any node with one foreign key.
    """

    class NodeType(models.TextChoices):
        SERVER = "SV", "Server"
        FOLDER = "FO", "Folder"

    name = models.CharField(max_length=64, unique=True)
    node_type = models.CharField(max_length=2, choices=NodeType.choices, editable=False)
    active = models.BooleanField(
        default=True, help_text="Inactive nodes are hidden everywhere and cannot be used."
    )
    created = models.DateTimeField(auto_now_add=True)
    modified = models.DateTimeField(auto_now=True)

    objects = DicomNodeQuerySet.as_manager()

    # Set by the subclasses.
    NODE_TYPE: str = ""

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if self.NODE_TYPE:
            self.node_type = self.NODE_TYPE
        super().save(*args, **kwargs)

    @property
    def concrete(self) -> "DicomServer | DicomFolder":
        """This node as its subclass (a `DicomNode` fetched directly knows only the base)."""
        if isinstance(self, DicomServer | DicomFolder):
            return self
        if self.node_type == self.NodeType.SERVER:
            return self.dicomserver  # type: ignore[attr-defined]
        if self.node_type == self.NodeType.FOLDER:
            return self.dicomfolder  # type: ignore[attr-defined]
        raise ValueError(f"The node {self.name!r} has an unknown type {self.node_type!r}.")

    @property
    def is_server(self) -> bool:
        return self.node_type == self.NodeType.SERVER

    @property
    def is_folder(self) -> bool:
        return self.node_type == self.NodeType.FOLDER

    def is_accessible_by_user(
        self, user, direction: AccessDirection, all_groups: bool = False
    ) -> bool:
        return (
            DicomNode.objects.accessible_by_user(user, direction, all_groups=all_groups)
            .filter(pk=self.pk)
            .exists()
        )


class DicomServer(DicomNode):
    """A PACS or other DICOM server reachable over DIMSE and/or DICOMweb."""

    NODE_TYPE = DicomNode.NodeType.SERVER

    ae_title = models.CharField(
        "AE title",
        max_length=16,
        unique=True,
        validators=[validate_ae_title],
        help_text="The server's (called) AE title; also its key in ADIT's DICOMweb API.",
    )
    host = models.CharField(max_length=255, blank=True, validators=[validate_host])
    port = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[
            MinValueValidator(1, "The port must be between 1 and 65535."),
            MaxValueValidator(65535, "The port must be between 1 and 65535."),
        ],
    )
    patient_root_find_support = models.BooleanField(default=False)
    patient_root_get_support = models.BooleanField(default=False)
    patient_root_move_support = models.BooleanField(default=False)
    study_root_find_support = models.BooleanField(default=False)
    study_root_get_support = models.BooleanField(default=False)
    study_root_move_support = models.BooleanField(default=False)
    store_scp_support = models.BooleanField(
        "C-STORE SCP support", default=False, help_text="The server accepts C-STORE from ADIT."
    )
    pushes_from_any_host = models.BooleanField(
        "C-MOVE pushes from any host",
        default=False,
        help_text=(
            "ADIT's receiver accepts C-MOVE pushes with this server's AE title only from the "
            "server's host. Tick this for a PACS behind NAT whose pushes come from elsewhere."
        ),
    )
    dicomweb_root_url = models.CharField(
        "DICOMweb root URL", max_length=2000, blank=True, validators=[validate_http_url]
    )
    dicomweb_qido_prefix = models.CharField(
        "QIDO-RS prefix", max_length=2000, blank=True, validators=[validate_url_prefix]
    )
    dicomweb_wado_prefix = models.CharField(
        "WADO-RS prefix", max_length=2000, blank=True, validators=[validate_url_prefix]
    )
    dicomweb_stow_prefix = models.CharField(
        "STOW-RS prefix", max_length=2000, blank=True, validators=[validate_url_prefix]
    )
    dicomweb_qido_support = models.BooleanField("QIDO-RS support", default=False)
    dicomweb_wado_support = models.BooleanField("WADO-RS support", default=False)
    dicomweb_stow_support = models.BooleanField("STOW-RS support", default=False)
    dicomweb_authorization_header = models.CharField(
        "DICOMweb Authorization header",
        max_length=2000,
        blank=True,
        help_text="Sent verbatim as the Authorization header, e.g. 'Bearer <token>'.",
    )
    max_search_results = models.PositiveIntegerField(
        default=200,
        validators=[MinValueValidator(1, "The maximum number of search results must be >= 1.")],
        help_text="How many results one query may return before ADIT splits it.",
    )
    max_associations = models.PositiveIntegerField(
        default=4,
        validators=[MinValueValidator(1, "The maximum number of associations must be >= 1.")],
        help_text="How many associations/requests ADIT may hold open to this server at once.",
    )

    DIMSE_FLAGS = (
        "patient_root_find_support",
        "patient_root_get_support",
        "patient_root_move_support",
        "study_root_find_support",
        "study_root_get_support",
        "study_root_move_support",
        "store_scp_support",
    )
    DICOMWEB_FLAGS = ("dicomweb_qido_support", "dicomweb_wado_support", "dicomweb_stow_support")

    class Meta:
        verbose_name = "DICOM server"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(port__isnull=True) | Q(port__gte=1, port__lte=65535),
                name="dicomserver_port_range",
            ),
            models.CheckConstraint(
                condition=Q(max_associations__gte=1), name="dicomserver_max_associations_min"
            ),
            models.CheckConstraint(
                condition=Q(max_search_results__gte=1), name="dicomserver_max_search_results_min"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.ae_title})"

    @property
    def has_dimse(self) -> bool:
        return bool(self.ae_title and self.host and self.port)

    @property
    def has_dicomweb(self) -> bool:
        return bool(self.dicomweb_root_url)

    def clean(self) -> None:
        super().clean()
        errors: dict[str, list[str]] = {}
        if self.host and not self.port:
            errors.setdefault("port", []).append("A host needs a port for DIMSE.")
        if self.port and not self.host:
            errors.setdefault("host", []).append("A port needs a host for DIMSE.")
        if not (self.host or self.port) and not self.dicomweb_root_url:
            errors.setdefault("__all__", []).append(
                "The server is not reachable: give a host and port (DIMSE) or a DICOMweb root URL."
            )
        if not (self.host and self.port):
            enabled = [
                str(self._meta.get_field(flag).verbose_name)
                for flag in self.DIMSE_FLAGS
                if getattr(self, flag)
            ]
            if enabled:
                errors.setdefault("__all__", []).append(
                    f"DIMSE support ({', '.join(enabled)}) needs a host and port."
                )
        if not self.dicomweb_root_url:
            for flag in self.DICOMWEB_FLAGS:
                if getattr(self, flag):
                    label = self._meta.get_field(flag).verbose_name
                    errors.setdefault(flag, []).append(f"{label} needs a DICOMweb root URL.")
        if errors:
            raise ValidationError(errors)  # pyright: ignore[reportArgumentType]

    def to_config(self) -> ServerConfig:
        """The plain config value the DICOM layer works with."""
        return ServerConfig(
            name=self.name,
            ae_title=self.ae_title,
            host=self.host,
            port=self.port or 0,
            patient_root_find_support=self.patient_root_find_support,
            patient_root_get_support=self.patient_root_get_support,
            patient_root_move_support=self.patient_root_move_support,
            study_root_find_support=self.study_root_find_support,
            study_root_get_support=self.study_root_get_support,
            study_root_move_support=self.study_root_move_support,
            store_scp_support=self.store_scp_support,
            dicomweb_root_url=self.dicomweb_root_url,
            dicomweb_qido_prefix=self.dicomweb_qido_prefix,
            dicomweb_wado_prefix=self.dicomweb_wado_prefix,
            dicomweb_stow_prefix=self.dicomweb_stow_prefix,
            dicomweb_qido_support=self.dicomweb_qido_support,
            dicomweb_wado_support=self.dicomweb_wado_support,
            dicomweb_stow_support=self.dicomweb_stow_support,
            dicomweb_authorization_header=self.dicomweb_authorization_header,
            max_search_results=self.max_search_results,
            max_associations=self.max_associations,
        )


class DicomFolder(DicomNode):
    """A directory (as the workers see it) that studies are written to."""

    NODE_TYPE = DicomNode.NodeType.FOLDER

    path = models.CharField(
        max_length=1024,
        validators=[validate_absolute_folder_path],
        help_text="Absolute path of the directory as the workers see it.",
    )
    quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="Disk quota in GB; a transfer that would exceed it fails."
    )
    warn_size = models.PositiveIntegerField(
        null=True, blank=True, help_text="Warn the admins when the folder grows beyond this (GB)."
    )

    class Meta:
        verbose_name = "DICOM folder"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.path})"

    def clean(self) -> None:
        super().clean()
        if self.quota is not None and self.warn_size is not None and self.warn_size > self.quota:
            raise ValidationError(
                {
                    "warn_size": f"The warn size ({self.warn_size} GB) must not exceed the "
                    f"quota ({self.quota} GB)."
                }
            )


class DicomNodeGroupAccess(models.Model):
    """What one group may do with one node."""

    node = models.ForeignKey(DicomNode, on_delete=models.CASCADE, related_name="group_accesses")
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="dicom_node_accesses")
    source = models.BooleanField(default=False, help_text="The group may read from this node.")
    destination = models.BooleanField(
        default=False, help_text="The group may send data to this node."
    )

    class Meta:
        verbose_name = "group access"
        verbose_name_plural = "group accesses"
        constraints = [
            models.UniqueConstraint(fields=["node", "group"], name="unique_node_group_access")
        ]

    def __str__(self) -> str:
        rights = [d for d in ACCESS_DIRECTIONS if getattr(self, d)] or ["no access"]
        return f"{self.group} → {self.node}: {', '.join(rights)}"

    def clean(self) -> None:
        super().clean()
        if not (self.source or self.destination):
            raise ValidationError(
                "Give the group source and/or destination access, or delete the row."
            )
        if self.source and self.node_id and self.node.node_type == DicomNode.NodeType.FOLDER:
            raise ValidationError({"source": "A folder can only be a destination, not a source."})


# --- Jobs and tasks -----------------------------------------------------------------------------
# A job is what a user asked for (e.g. "transfer these 40 studies"); it is made of tasks, each
# processed by a worker. Rows in PostgreSQL come first; the queue only carries task ids. Every
# status change happens in one method below.


def new_pseudonymization_seed() -> str:
    """Only for the initial migrations of the apps (jobs once had a random seed each; the seed
    is now derived per pseudonym, see `adit.core.deidentification`)."""
    return secrets.token_hex(16)


def deid_options_field(help_text: str) -> ArrayField:
    return ArrayField(
        models.CharField(max_length=40, choices=DEID_OPTION_CHOICES),
        default=list,
        blank=True,
        validators=[validate_deid_options],
        help_text=help_text,
    )


class GroupDeidentificationDefaults(models.Model):
    """The PS3.15 options a group's new transfer jobs get unless the user chooses others."""

    group = models.OneToOneField(
        Group, on_delete=models.CASCADE, related_name="deidentification_defaults"
    )
    options = deid_options_field(
        "Options of the Basic Application Level Confidentiality Profile (DICOM PS3.15 E.1) "
        "preselected for the group's transfer jobs."
    )

    class Meta:
        verbose_name = "de-identification defaults of a group"
        verbose_name_plural = "de-identification defaults of groups"

    def __str__(self) -> str:
        return f"De-identification defaults of {self.group.name}"


class DicomAppSettings(models.Model):
    """Per-app switches staff change at run time (one row per app)."""

    locked = models.BooleanField(
        default=False, help_text="Only superusers may use the app's pages while it is locked."
    )
    suspended = models.BooleanField(
        default=False, help_text="Workers leave the app's tasks waiting while it is suspended."
    )
    transfer_window_start = models.TimeField(
        null=True,
        blank=True,
        help_text="Non-urgent tasks only run between start and end (server time), e.g. 22:00.",
    )
    transfer_window_end = models.TimeField(null=True, blank=True, help_text="e.g. 06:00")

    class Meta:
        abstract = True

    @classmethod
    def get(cls):
        settings_row, _ = cls.objects.get_or_create(pk=1)
        return settings_row

    def next_window_start(self, now: datetime) -> datetime | None:
        """None when non-urgent tasks may run now, else when the transfer window opens next."""
        start, end = self.transfer_window_start, self.transfer_window_end
        if start is None or end is None or start == end:
            return None
        local_now = timezone.localtime(now)
        current = local_now.time()
        inside = start <= current < end if start < end else (current >= start or current < end)
        if inside:
            return None
        opening = local_now.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
        if opening <= local_now:
            opening += timedelta(days=1)
        return opening


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
        """This job's row, locked until the end of the surrounding transaction."""
        return type(self).objects.select_for_update().get(pk=self.pk)

    def _require(self, allowed: bool, action: str) -> None:
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
            job._set_status(self.Status.CANCELING if running.exists() else self.Status.CANCELED)
        self.refresh_from_db()

    def resume(self) -> None:
        with transaction.atomic():
            job = self._locked()
            job._require(job.is_resumable, "resumed")
            job.tasks.filter(status=DicomTask.Status.CANCELED).update(
                status=DicomTask.Status.PENDING, message="", end=None, queued_job_id=None
            )
            job._set_status(self.Status.PENDING, message="")
        self._run_again()

    def retry(self) -> None:
        """Run the failed tasks again (only those)."""
        with transaction.atomic():
            job = self._locked()
            job._require(job.is_retriable, "retried")
            job.tasks.filter(status=DicomTask.Status.FAILURE).update(**TASK_RESET_VALUES)
            job._set_status(self.Status.PENDING, message="")
        self._run_again()

    def restart(self) -> None:
        """Run every task again (staff)."""
        with transaction.atomic():
            job = self._locked()
            job._require(job.is_restartable, "restarted")
            job.tasks.update(**TASK_RESET_VALUES)
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
        self.refresh_from_db()
        if finished and self.send_finished_mail:
            from .mail import send_job_finished_mail

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
        if status in (Status.IN_PROGRESS, Status.CANCELING):
            if self.status != status or self.start is None:
                if self.start is None and status == Status.IN_PROGRESS:
                    self.start = timezone.now()
                self.status = status
                self.save(update_fields=["status", "start"])
            return False
        if status == Status.PENDING:
            if self.status != status:
                self._set_status(status)
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

    def _locked(self):
        return type(self).objects.select_for_update().get(pk=self.pk)

    def _require(self, allowed: bool, action: str) -> None:
        if not allowed:
            raise JobActionError(
                f"{self} cannot be {action} while it is {self.get_status_display()}."
            )

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
            type(self).objects.filter(pk=self.pk).update(**TASK_RESET_VALUES)
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
        self.refresh_from_db()
        self.job.update_status()
        return True

    def finish(self, result) -> None:
        """Store the processor's result and update the job."""
        log = self._append_log(*result.log)
        type(self).objects.filter(pk=self.pk).update(
            status=result.status, message=result.message, log=log, end=timezone.now()
        )
        self.refresh_from_db()
        self.job.update_status()

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
        stamp = timezone.localtime().strftime("%Y-%m-%d %H:%M:%S")
        new = "\n".join(f"[{stamp}] {entry}" for entry in entries if entry)
        current = type(self).objects.values_list("log", flat=True).get(pk=self.pk)
        return f"{current}\n{new}".strip() if new else current


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

    class Meta(DicomTask.Meta):
        abstract = True
