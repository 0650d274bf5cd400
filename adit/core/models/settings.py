"""Rows of settings: the project's, each app's (`DicomAppSettings`) and the groups'
de-identification defaults."""

import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import Group
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from adit.core.dicom.deid_profile import DEID_OPTION_CHOICES
from adit.core.validators import (
    validate_deid_options,
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

    def clean(self) -> None:
        super().clean()
        if (self.transfer_window_start is None) != (self.transfer_window_end is None):
            raise ValidationError(
                "Give the transfer window both a start and an end, or leave both empty."
            )

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
