"""Every email ADIT sends is composed here."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import mail_admins, send_mail

logger = logging.getLogger(__name__)


def _absolute_url(path: str) -> str:
    return settings.SITE_BASE_URL.rstrip("/") + path


def send_job_finished_mail(job) -> None:
    """Tell the owner that their job finished (only when they asked for it)."""
    if not job.owner.email:
        return
    url = _absolute_url(job.get_absolute_url()) if hasattr(job, "get_absolute_url") else ""
    body = (
        f"Hello {job.owner.get_full_name() or job.owner.username},\n\n"
        f"your {job._meta.verbose_name} #{job.pk} finished with status "
        f"{job.get_status_display()}: {job.message}\n" + (f"\nDetails: {url}\n" if url else "")
    )
    try:
        send_mail(
            f"{settings.EMAIL_SUBJECT_PREFIX}Job #{job.pk} finished: {job.get_status_display()}",
            body,
            settings.DEFAULT_FROM_EMAIL,
            [job.owner.email],
        )
    except OSError:
        logger.exception("Could not send the job finished mail of %s", job)


def send_low_disk_space_mail(folder_name: str, used_gb: float, warn_gb: float, quota) -> None:
    mail_admins(
        f"Folder {folder_name} is filling up",
        f"The DICOM folder {folder_name} uses {used_gb:.1f} GB; the warning size is "
        f"{warn_gb} GB and the quota {quota if quota is not None else 'not set'} GB.",
    )
