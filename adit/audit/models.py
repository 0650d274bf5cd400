"""The audit trail (who did what with which patient) and the pseudonym mapping.

`AuditEntry` is append-only. Three layers keep it so:

- the model refuses `save()` of an existing row and `delete()`; its queryset refuses
  `update()`, `delete()` and `bulk_update()`, so no ORM path (views, admin, API, a shell
  session) can alter an entry;
- a PostgreSQL trigger (migration 0001) raises on every UPDATE and on every DELETE, also from
  raw SQL. The one exception is the retention purge (`manage.py purge_audit_log`): it sets the
  transaction-local setting ``adit.audit_purge_before`` to its cut-off, and the trigger lets a
  DELETE through only for rows older than that cut-off; younger rows stay refused even then;
- the admin shows entries read-only, and no view or API endpoint writes them.

A database owner can still drop the trigger or TRUNCATE the table (Django's test flush does);
who may do that is a matter of database roles, not of the application.

An entry copies what it names (user name, node names, job and task ids) instead of pointing at
those rows with foreign keys: deleting a user, node or job must neither cascade into the trail
nor need to update it (a SET NULL would be an UPDATE the trigger refuses).

`PseudonymMapping` lives here, not in core, because it is the trusted party's record of the
same events: it is written where transfers are audited, read only through the export that
`audit.export_pseudonym_mapping` guards, and every read is itself an audit entry. One row per
pseudonymized series of a task: original PatientID ↔ pseudonym and original ↔ pseudonymized
StudyInstanceUID and SeriesInstanceUID. A task that runs twice writes the same rows again,
which the unique constraint absorbs.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.db import models
from django.utils import timezone


class AppendOnlyError(Exception):
    """An audit entry was to be changed or deleted."""


class AuditEntryQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit entries cannot be changed.")

    def delete(self):
        raise AppendOnlyError("Audit entries cannot be deleted (see manage.py purge_audit_log).")

    def bulk_update(self, objs, fields, batch_size=None):
        raise AppendOnlyError("Audit entries cannot be changed.")

    def update_or_create(self, defaults=None, create_defaults=None, **kwargs):
        raise AppendOnlyError("Audit entries cannot be changed.")


class AuditEntry(models.Model):
    """One audited event. Fields left empty do not apply to the event."""

    class Action(models.TextChoices):
        QUERY = "query", "Query (C-FIND / QIDO-RS)"
        RETRIEVE = "retrieve", "Retrieve (WADO-RS / download)"
        TRANSFER = "transfer", "Transfer"
        MAPPING_EXPORT = "mapping_export", "Pseudonym mapping export"
        AUDIT_EXPORT = "audit_export", "Audit log export"
        TOKEN_USE = "token_use", "API token use"
        LOGIN = "login", "Login"
        LOGIN_FAILED = "login_failed", "Failed login"
        LOGOUT = "logout", "Logout"
        PURGE = "purge", "Retention purge"

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"
        DENIED = "denied", "Denied"

    time = models.DateTimeField(default=timezone.now, db_index=True)
    # No constraint and DO_NOTHING: deleting a user leaves the trail as it is (see above).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    username = models.CharField(max_length=150, blank=True, db_index=True)
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    patient_id = models.CharField(max_length=64, blank=True, db_index=True)
    pseudonym = models.CharField(max_length=64, blank=True)
    study_uid = models.CharField(max_length=64, blank=True, db_index=True)
    series_uids = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=128, blank=True)
    destination = models.CharField(max_length=128, blank=True)
    job_type = models.CharField(max_length=64, blank=True)  # the job's app label
    job_id = models.BigIntegerField(null=True, blank=True)
    task_id = models.BigIntegerField(null=True, blank=True)
    # What was asked (a query's keys, a download's options), never the results.
    details = models.JSONField(default=dict, blank=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-id"]
        default_permissions = ("view",)
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.username or '—'} {self.action}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise AppendOnlyError("Audit entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit entries cannot be deleted (see manage.py purge_audit_log).")

    @property
    def details_json(self) -> str:
        return json.dumps(self.details, ensure_ascii=False, sort_keys=True) if self.details else ""


class PseudonymMapping(models.Model):
    """Original ↔ pseudonymized identifiers of one series a task transferred."""

    created = models.DateTimeField(default=timezone.now)
    job_type = models.CharField(max_length=64)  # the job's app label, e.g. selective_transfer
    job_id = models.BigIntegerField()
    task_id = models.BigIntegerField()
    patient_id = models.CharField(max_length=64)
    pseudonym = models.CharField(max_length=64, db_index=True)
    study_uid = models.CharField(max_length=64)
    pseudonymized_study_uid = models.CharField(max_length=64)
    series_uid = models.CharField(max_length=64)
    pseudonymized_series_uid = models.CharField(max_length=64)

    class Meta:
        ordering = ["job_type", "job_id", "task_id", "study_uid", "series_uid"]
        default_permissions = ("view",)
        permissions = [
            ("export_pseudonym_mapping", "Can export the pseudonym mapping (trusted party)")
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["job_type", "task_id", "study_uid", "series_uid"],
                name="audit_pseudonym_mapping_unique_series",
            )
        ]
        indexes = [models.Index(fields=["job_type", "job_id"])]

    def __str__(self) -> str:
        return f"{self.job_type} job {self.job_id} task {self.task_id}: {self.pseudonym}"
