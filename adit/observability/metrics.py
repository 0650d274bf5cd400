"""The Prometheus metrics of /metrics, computed at scrape time from PostgreSQL.

Gauges (jobs and tasks by app and status, the queue) are counted from the tables as they are
now; counters (instances and bytes transferred, PACS errors, receiver associations) are the
`Counter` rows the workers and the receiver add to; task durations are a histogram over the
finished tasks still stored. Nothing lives in process memory, so it does not matter which web
process Prometheus reaches, how many workers run, or whether one restarted. Metric names follow
Prometheus' conventions (`adit_` prefix, base units, `_total` for counters).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.apps import apps
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .models import Counter

# Counter names the processes add to, with their help and label names.
TRANSFERRED_INSTANCES = "adit_transferred_instances"
TRANSFERRED_BYTES = "adit_transferred_bytes"
PACS_ERRORS = "adit_pacs_errors"
RECEIVER_ASSOCIATIONS = "adit_receiver_associations"
DATABASE_BACKUPS = "adit_database_backups"
COUNTERS = {
    TRANSFERRED_INSTANCES: (
        "Instances transferred to a destination (by app, source and destination)",
        ["app", "source", "destination"],
    ),
    TRANSFERRED_BYTES: (
        "Bytes of the transferred instances as received from the source",
        ["app", "source", "destination"],
    ),
    PACS_ERRORS: (
        "DICOM operations of transfer tasks that failed, by server and its role",
        ["server", "role", "retriable"],
    ),
    RECEIVER_ASSOCIATIONS: (
        "Associations the receiver accepted or refused, by calling AE title",
        ["calling_ae", "outcome"],
    ),
    DATABASE_BACKUPS: (
        "Daily database backups that succeeded or failed",
        ["outcome"],
    ),
}
# Seconds; a task moves a study, which takes from seconds to hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600)


def _status_label(display: str) -> str:
    return display.lower().replace(" ", "_")


def _concrete(kind: str) -> list:
    """The concrete job or task models of all apps."""
    from adit.core.models import DicomJob, DicomTask

    wanted = {"job": DicomJob, "task": DicomTask}[kind]
    return [
        model
        for model in apps.get_models()
        if issubclass(model, wanted) and not model._meta.abstract
    ]


class AditCollector(Collector):
    """Reads every metric from the database when the registry is collected."""

    def collect(self) -> Iterator[Metric]:
        yield from self._by_status("job", "adit_jobs", "Jobs by app and status")
        yield from self._by_status("task", "adit_tasks", "Tasks by app and status")
        yield from self._queue()
        yield from self._task_durations()
        yield from self._counters()

    def _by_status(self, kind: str, name: str, documentation: str) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(name, documentation, labels=["app", "status"])
        for model in _concrete(kind):
            counts = dict(model.objects.order_by().values_list("status").annotate(n=Count("pk")))
            app = model._meta.app_label
            for status in model.Status:
                gauge.add_metric([app, _status_label(status.label)], counts.get(status.value, 0))
        yield gauge

    def _queue(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "adit_queue_jobs", "Procrastinate jobs by queue and status", labels=["queue", "status"]
        )
        oldest = GaugeMetricFamily(
            "adit_queue_oldest_waiting_seconds",
            "Age of the oldest queue job that is due and waits for a worker (0: none waits)",
            labels=["queue"],
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs "
                "GROUP BY queue_name, status"
            )
            rows = cursor.fetchall()
            # A job waits from when it became due: its schedule, else when it was deferred.
            cursor.execute(
                "SELECT j.queue_name, EXTRACT(EPOCH FROM now() - min(coalesce(j.scheduled_at, "
                "(SELECT min(e.at) FROM procrastinate_events e WHERE e.job_id = j.id), now()))) "
                "FROM procrastinate_jobs j WHERE j.status = 'todo' "
                "AND (j.scheduled_at IS NULL OR j.scheduled_at <= now()) GROUP BY j.queue_name"
            )
            waiting = {queue: float(seconds) for queue, seconds in cursor.fetchall()}
        queues = {"default", "dicom"} | {row[0] for row in rows}
        counts = {(queue, status): n for queue, status, n in rows}
        for queue in sorted(queues):
            for status in ("todo", "doing"):
                jobs.add_metric([queue, status], counts.get((queue, status), 0))
            oldest.add_metric([queue], max(waiting.get(queue, 0.0), 0.0))
        yield jobs
        yield oldest

    def _task_durations(self) -> Iterator[Metric]:
        histogram = HistogramMetricFamily(
            "adit_task_duration_seconds",
            "Run time of finished tasks (their last attempt), by app and status",
            labels=["app", "status"],
        )
        for model in _concrete("task"):
            finished = model.objects.filter(
                status__in=model.FINAL_STATUSES, start__isnull=False, end__isnull=False
            ).annotate(duration=ExpressionWrapper(F("end") - F("start"), DurationField()))
            # Counted in the database: there may be very many finished tasks.
            aggregates = {
                f"le_{index}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
                for index, bound in enumerate(DURATION_BUCKETS)
            }
            rows = (
                finished.order_by()
                .values("status")
                .annotate(total=Count("pk"), seconds=Sum("duration"), **aggregates)
            )
            for row in rows.order_by("status"):
                buckets = [
                    (str(bound), row[f"le_{index}"]) for index, bound in enumerate(DURATION_BUCKETS)
                ]
                buckets.append(("+Inf", row["total"]))
                histogram.add_metric(
                    [model._meta.app_label, _status_label(model.Status(row["status"]).label)],
                    buckets,
                    row["seconds"].total_seconds() if row["seconds"] else 0.0,
                )
        yield histogram

    def _counters(self) -> Iterator[Metric]:
        families = {
            name: CounterMetricFamily(name, documentation, labels=labels)
            for name, (documentation, labels) in COUNTERS.items()
        }
        for counter in Counter.objects.filter(name__in=families).order_by("name", "id"):
            labels = COUNTERS[counter.name][1]
            families[counter.name].add_metric(
                [str(counter.labels.get(label, "")) for label in labels], counter.value
            )
        yield from families.values()


def render() -> bytes:
    """The metrics in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AditCollector())
    return generate_latest(registry)
