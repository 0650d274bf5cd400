"""/metrics: what Prometheus reads after real transfers, and who may read it.

Transfers run as in `adit/core/tests/test_transfer_engine.py`: a real `bg_worker` process moves
studies between two real Orthanc servers; the worker's counts reach /metrics through the
database, as they would from any number of workers.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from adit.core.dicom.testing.synthetic import make_study
from adit.core.models import DicomJob, DicomTask
from adit.core.tests.test_transfer_engine import (
    TaskSpec,
    closed_port_server,
    create_transfer_job,
    orthanc_server,
    run_dicom_worker,
    study_uid_of,
    task_report,
    unique_id,
)
from adit.observability.models import Counter

TOKEN = "metrics-test-token"


def scrape(client, token: str = TOKEN) -> dict[tuple[str, frozenset], float]:
    """Sample name and labels → value, from /metrics as Prometheus reads it."""
    with override_settings(METRICS_TOKEN=TOKEN):
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def present(samples, name: str, **labels: str) -> float:
    found = value(samples, name, **labels)
    assert found is not None, f"{name}{labels} is missing"
    return found


@pytest.mark.django_db(transaction=True)
def test_a_transfer_shows_in_the_metrics(client, orthanc_a, orthanc_b):
    datasets = make_study(unique_id(), series=(("CT", 3), ("MR", 2)))
    orthanc_a.upload(datasets)
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = orthanc_server(orthanc_b, "Orthanc B")
    job = create_transfer_job(
        source, destination, [TaskSpec(str(datasets[0].PatientID), study_uid_of(datasets))]
    )
    down = closed_port_server("Down PACS", "DOWN_PACS")
    failing = create_transfer_job(
        source, down, [TaskSpec(str(datasets[0].PatientID), study_uid_of(datasets))]
    )
    down_source_server = closed_port_server("Down source", "DOWN_SRC")
    down_source_server.study_root_get_support = True
    down_source_server.save()
    source_down = create_transfer_job(
        down_source_server,
        destination,
        [TaskSpec(str(datasets[0].PatientID), study_uid_of(datasets))],
    )
    before = scrape(client)
    labels = {"app": "example_app", "source": "Orthanc A", "destination": "Orthanc B"}
    assert value(before, "adit_transferred_instances_total", **labels) is None
    assert value(before, "adit_tasks", app="example_app", status="pending") == 3
    # Queue rows outlive transactional tests (Procrastinate's tables are not flushed): deltas.
    waiting_before = present(before, "adit_queue_jobs", queue="dicom", status="todo")
    assert waiting_before >= 3

    run_dicom_worker(env={"DICOM_TASK_MAX_ATTEMPTS": "1"})

    job.refresh_from_db()
    failing.refresh_from_db()
    assert job.status == DicomJob.Status.SUCCESS, task_report(job)
    assert failing.status == DicomJob.Status.FAILURE, task_report(failing)
    source_down.refresh_from_db()
    assert source_down.status == DicomJob.Status.FAILURE, task_report(source_down)
    after = scrape(client)
    assert value(after, "adit_transferred_instances_total", **labels) == 5
    # Bytes as received: at least the pixel data of the five instances.
    pixel_bytes = sum(len(ds.PixelData) for ds in datasets)
    assert present(after, "adit_transferred_bytes_total", **labels) >= pixel_bytes
    assert value(after, "adit_tasks", app="example_app", status="success") == 1
    assert value(after, "adit_tasks", app="example_app", status="failure") == 2
    assert value(after, "adit_jobs", app="example_app", status="success") == 1
    waiting_after = present(after, "adit_queue_jobs", queue="dicom", status="todo")
    assert waiting_before - waiting_after >= 3
    # Each error counts for the server that failed, in its role, once.
    error = {"server": "Down PACS", "role": "destination", "retriable": "true"}
    assert value(after, "adit_pacs_errors_total", **error) == 1
    down_source = {"server": "Down source", "role": "source", "retriable": "true"}
    assert value(after, "adit_pacs_errors_total", **down_source) == 1, task_report(source_down)
    errors = [key for key in after if key[0] == "adit_pacs_errors_total"]
    assert len(errors) == 2, errors
    durations = {"app": "example_app", "status": "success"}
    assert value(after, "adit_task_duration_seconds_count", **durations) == 1
    assert value(after, "adit_task_duration_seconds_bucket", **durations, le="+Inf") == 1
    assert present(after, "adit_task_duration_seconds_sum", **durations) > 0
    # Failures do not count as transferred.
    assert (
        value(after, "adit_transferred_instances_total", **{**labels, "destination": "Down PACS"})
        is None
    )


@pytest.mark.django_db
def test_without_the_token_metrics_are_refused(client):
    with override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=[]):
        off = client.get("/metrics")
        assert off.status_code == 403
        assert b"METRICS_TOKEN" in off.content
    with override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=[]):
        missing = client.get("/metrics")
        assert missing.status_code == 401
        assert missing["WWW-Authenticate"].startswith("Bearer")
        assert b"adit_" not in missing.content
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
        assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


@pytest.mark.django_db
def test_listed_client_addresses_need_no_token(client):
    import ipaddress

    local = [ipaddress.ip_network("127.0.0.0/8")]
    with override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=local):
        assert client.get("/metrics").status_code == 200
        other = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
        assert other.status_code == 403
        assert b"METRICS_ALLOWED_IPS" in other.content


@pytest.mark.django_db
def test_the_oldest_waiting_queue_job_is_measured_from_when_it_became_due(client):
    with connection.cursor() as cursor:
        # Rows left by earlier tests (Procrastinate's tables outlive them) would be older.
        cursor.execute("DELETE FROM procrastinate_jobs WHERE queue_name = 'dicom'")
        cursor.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, scheduled_at) VALUES "
            "('dicom', 'x', now() - interval '300 seconds'), "
            "('dicom', 'x', now() - interval '20 seconds'), "
            "('dicom', 'x', now() + interval '1 hour')"
        )
    samples = scrape(client)
    assert value(samples, "adit_queue_jobs", queue="dicom", status="todo") == 3
    oldest = value(samples, "adit_queue_oldest_waiting_seconds", queue="dicom")
    assert oldest is not None and 300 <= oldest < 360


@pytest.mark.django_db
def test_counters_add_up_per_label_set():
    Counter.add("adit_pacs_errors", {"server": "A", "role": "source", "retriable": "true"})
    Counter.add("adit_pacs_errors", {"role": "source", "server": "A", "retriable": "true"}, 2)
    Counter.add("adit_pacs_errors", {"server": "B", "role": "source", "retriable": "true"})
    values = dict(Counter.objects.values_list("labels__server", "value"))
    assert values == {"A": 3, "B": 1}


def test_task_statuses_have_metric_labels():
    # Labels are the statuses' names in snake case, as the dashboards expect them.
    from adit.observability.metrics import _status_label

    assert [_status_label(s.label) for s in DicomTask.Status] == [
        "pending",
        "in_progress",
        "canceled",
        "success",
        "warning",
        "failure",
    ]
