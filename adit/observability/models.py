"""What the processes of ADIT count, kept in PostgreSQL so that /metrics sees every process.

ADIT runs several processes (web, any number of dicom workers on any number of machines, the
receiver), while Prometheus scrapes one of them, the web. Counters held in process memory would
each tell a part and vanish on every restart. So the processes add to counters in the
database, one row per metric and label set, and /metrics reads them (see `adit.observability.
metrics`); the rest of the metrics are computed from ADIT's and Procrastinate's tables at scrape
time.
"""

from __future__ import annotations

from django.db import connection, models


class Counter(models.Model):
    """A monotonic counter of one Prometheus metric with one set of label values."""

    name = models.CharField(max_length=100)
    labels = models.JSONField(default=dict)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "labels"], name="unique_counter_labels")
        ]

    def __str__(self) -> str:
        return f"{self.name}{self.labels} = {self.value}"

    @classmethod
    def add(cls, name: str, labels: dict[str, str], amount: int = 1) -> None:
        """Add `amount` to the counter, creating it at 0 first; safe with concurrent callers."""
        cls.add_many([(name, labels, amount)])

    @classmethod
    def add_many(cls, additions: list[tuple[str, dict[str, str], int]]) -> None:
        """`add` for several counters (distinct names or labels) in one statement."""
        rows = [(name, _json(labels), amount) for name, labels, amount in additions if amount > 0]
        if not rows:
            return
        table = connection.ops.quote_name(cls._meta.db_table)
        values = ", ".join(["(%s, %s::jsonb, %s)"] * len(rows))
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (name, labels, value) VALUES {values} "
                f"ON CONFLICT (name, labels) DO UPDATE SET value = {table}.value + EXCLUDED.value",
                [value for row in rows for value in row],
            )


class DatabaseBackupSettings(models.Model):
    """Whether the default worker backs up the database every day (staff switch it in the admin).

    Where the dumps go is not set here but by DB_BACKUP_DIR: a path chosen in a web form could
    point anywhere the worker may write.
    """

    enabled = models.BooleanField(
        default=False, help_text="Back up the database every day (pg_dump, custom format)."
    )
    keep = models.PositiveSmallIntegerField(
        default=7, help_text="How many of the newest backups to keep; older ones are deleted."
    )

    class Meta:
        verbose_name = "database backup settings"
        verbose_name_plural = "database backup settings"

    def __str__(self) -> str:
        return "Database backups " + ("on" if self.enabled else "off")

    @classmethod
    def get(cls) -> DatabaseBackupSettings:
        settings, _ = cls.objects.get_or_create(pk=1)
        return settings


def _json(labels: dict[str, str]) -> str:
    import json

    return json.dumps({key: str(value) for key, value in sorted(labels.items())})
