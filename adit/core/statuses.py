"""The one status vocabulary of jobs and tasks (stored as two letters).

A job may be in any of these states; a task in a subset (`TaskStatus`: it is never waiting for
approval and never "canceling", which is the job's state while its running tasks stop). The task
enum takes its values and labels from the job's, so a value means the same in both and is
spelled only once. Compare and assign these members, never the literals.

A leaf module: it imports nothing of ADIT, so processors, tasks, models and template tags can
all use it.
"""

from django.db import models


class Status(models.TextChoices):
    """The status of a job; tasks use the members named in `TaskStatus`."""

    UNVERIFIED = "UV", "Unverified"
    PENDING = "PE", "Pending"
    IN_PROGRESS = "IP", "In Progress"
    CANCELING = "CI", "Canceling"
    CANCELED = "CA", "Canceled"
    SUCCESS = "SU", "Success"
    WARNING = "WA", "Warning"
    FAILURE = "FA", "Failure"


class TaskStatus(models.TextChoices):
    """The statuses a task can have: members of `Status` (its values and labels, not copies)."""

    PENDING = Status.PENDING.value, Status.PENDING.label
    IN_PROGRESS = Status.IN_PROGRESS.value, Status.IN_PROGRESS.label
    CANCELED = Status.CANCELED.value, Status.CANCELED.label
    SUCCESS = Status.SUCCESS.value, Status.SUCCESS.label
    WARNING = Status.WARNING.value, Status.WARNING.label
    FAILURE = Status.FAILURE.value, Status.FAILURE.label


FINAL_STATUSES = (Status.CANCELED, Status.SUCCESS, Status.WARNING, Status.FAILURE)
"""Where a job or task stays until a user acts (retry, resume, restart, reset)."""

RESULT_STATUSES = (Status.SUCCESS, Status.WARNING, Status.FAILURE)
"""What a processor may report (`adit.core.processing.ProcessingResult`)."""

BADGE_CLASSES = {
    Status.SUCCESS: "text-bg-success",
    Status.WARNING: "text-bg-warning",
    Status.FAILURE: "text-bg-danger",
    Status.IN_PROGRESS: "text-bg-primary",
    Status.CANCELING: "text-bg-secondary",
    Status.CANCELED: "text-bg-secondary",
}
"""Bootstrap classes of the status badges (`core/_status_badge.html`); others are light."""
