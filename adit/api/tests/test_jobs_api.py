"""The jobs REST API: the same permissions, access rules and state machine as the web pages."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from adit.accounts.factories import GroupFactory
from adit.batch_query.models import BatchQueryJob
from adit.core.factories import DicomFolderFactory, DicomServerFactory
from adit.core.models import DicomJob, GroupDeidentificationDefaults
from adit.dicom_web.models import APIUsage
from adit.dicom_web.testing import grant_access, make_api_user
from adit.selective_transfer.models import SelectiveTransferJob

pytestmark = pytest.mark.django_db

STUDY_UID = "1.2.826.0.1.3680043.8.498.11"
TRANSFER_PERMISSIONS = ("selective_transfer.add_selectivetransferjob",)
BATCH_QUERY_PERMISSIONS = ("batch_query.add_batchqueryjob",)


class JsonClient(APIClient):
    """APIClient whose responses type-check as responses (django-types says WSGIRequest)."""

    def get(self, *args, **kwargs) -> Any:
        return super().get(*args, **kwargs)

    def post(self, *args, **kwargs) -> Any:
        return super().post(*args, **kwargs)


def client_for(api_user) -> JsonClient:
    client = JsonClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_user.token}")
    return client


@pytest.fixture
def setup():
    api_user = make_api_user(
        permissions=(
            *TRANSFER_PERMISSIONS,
            "selective_transfer.can_transfer_unpseudonymized",
        )
    )
    source = DicomServerFactory()
    destination = DicomServerFactory()
    grant_access(api_user.group, source, source=True, destination=False)
    grant_access(api_user.group, destination, source=False, destination=True)
    return api_user, source, destination


def _payload(source, destination, **extra) -> dict:
    return {
        "source": source.ae_title,
        "destination": destination.ae_title,
        "studies": [{"study_uid": STUDY_UID, "patient_id": "PAT1"}],
        **extra,
    }


def test_create_list_get_and_tasks(setup):
    api_user, source, destination = setup
    client = client_for(api_user)
    response = client.post(
        "/api/transfer-jobs/",
        _payload(
            source,
            destination,
            pseudonym="PSEUDO1",
            trial_protocol_id="T1",
            studies=[
                {"study_uid": STUDY_UID, "patient_id": "PAT1"},
                {"study_uid": f"{STUDY_UID}2", "patient_id": "PAT1", "series_uids": ["1.2.3"]},
            ],
        ),
        format="json",
    )
    assert response.status_code == 201, response.json()
    job_data = response.json()
    assert job_data["status"] == DicomJob.Status.PENDING
    assert job_data["task_counts"]["Pending"] == 2
    job = SelectiveTransferJob.objects.get(pk=job_data["id"])
    assert job.owner == api_user.user
    assert job.trial_protocol_id == "T1"
    tasks = list(job.tasks.order_by("id"))
    assert [t.pseudonym for t in tasks] == ["PSEUDO1", "PSEUDO1"]
    assert tasks[1].series_uids == ["1.2.3"]
    assert all(t.queued_job_id for t in tasks), "tasks are queued for the workers"

    listed = client.get("/api/transfer-jobs/").json()
    assert [item["id"] for item in listed["results"]] == [job.pk]
    detail = client.get(f"/api/transfer-jobs/{job.pk}/").json()
    assert detail["status_label"] == "Pending"
    task_data = client.get(f"/api/transfer-jobs/{job.pk}/tasks/").json()["results"]
    assert [t["study_uid"] for t in task_data] == [STUDY_UID, f"{STUDY_UID}2"]
    assert task_data[0]["source"]["ae_title"] == source.ae_title
    usage = APIUsage.objects.get(owner=api_user.user)
    assert usage.request_count == 4
    assert usage.bytes_received == 0 and usage.bytes_sent > 0


def test_cancel_then_resume_and_wrong_state_is_409(setup):
    api_user, source, destination = setup
    client = client_for(api_user)
    job_id = client.post(
        "/api/transfer-jobs/", _payload(source, destination), format="json"
    ).json()["id"]
    response = client.post(f"/api/transfer-jobs/{job_id}/retry/")
    assert response.status_code == 409
    assert "cannot be retried while it is Pending" in response.json()["detail"]
    response = client.post(f"/api/transfer-jobs/{job_id}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == DicomJob.Status.CANCELED
    response = client.post(f"/api/transfer-jobs/{job_id}/resume/")
    assert response.status_code == 200
    assert response.json()["status"] == DicomJob.Status.PENDING


def test_users_see_only_their_own_jobs_staff_all(setup):
    api_user, source, destination = setup
    job_id = (
        client_for(api_user)
        .post("/api/transfer-jobs/", _payload(source, destination), format="json")
        .json()["id"]
    )
    other = make_api_user(permissions=TRANSFER_PERMISSIONS)
    other_client = client_for(other)
    assert other_client.get(f"/api/transfer-jobs/{job_id}/").status_code == 404
    assert other_client.post(f"/api/transfer-jobs/{job_id}/cancel/").status_code == 404
    assert other_client.get("/api/transfer-jobs/").json()["results"] == []
    staff = make_api_user(permissions=(), is_staff=True)
    assert client_for(staff).get(f"/api/transfer-jobs/{job_id}/").status_code == 200


def test_create_needs_permission_and_token(setup):
    _, source, destination = setup
    no_permission = make_api_user(permissions=())
    grant_access(no_permission.group, source)
    grant_access(no_permission.group, destination)
    response = client_for(no_permission).post(
        "/api/transfer-jobs/", _payload(source, destination), format="json"
    )
    assert response.status_code == 403
    assert "selective_transfer.add_selectivetransferjob" in response.json()["detail"]
    assert JsonClient().get("/api/transfer-jobs/").status_code == 401


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"source": "NOPE"}, "source", "No server 'NOPE' is available"),
        ({"studies": []}, "studies", "at least one study"),
        ({"studies": [{"study_uid": "1.2.x"}]}, "studies", "UID"),
        ({"studies": [{"study_uid": STUDY_UID, "patient_id": "P*"}]}, "studies", "ildcard"),
        ({"urgent": True}, "urgent", "permission to process jobs urgently"),
        ({"archive_password": "secret"}, "archive_password", "folder destination"),
        ({"trial_protocol_id": "a\\b"}, "trial_protocol_id", "Backslashes"),
    ],
)
def test_invalid_requests_are_400_naming_the_field(setup, change, field, message):
    api_user, source, destination = setup
    response = client_for(api_user).post(
        "/api/transfer-jobs/", {**_payload(source, destination), **change}, format="json"
    )
    assert response.status_code == 400, response.json()
    assert message in str(response.json()[field])
    assert not SelectiveTransferJob.objects.exists()


def test_node_access_follows_the_active_group_and_direction(setup):
    api_user, source, destination = setup
    client = client_for(api_user)
    # The destination is not a source of the group, and vice versa.
    response = client.post(
        "/api/transfer-jobs/",
        {**_payload(source, destination), "source": destination.ae_title},
        format="json",
    )
    assert response.status_code == 400
    assert "as a source" in str(response.json()["source"])
    elsewhere = DicomServerFactory()
    other_group = GroupFactory()
    api_user.user.join_group(other_group)  # member, not active
    grant_access(other_group, elsewhere)
    response = client.post("/api/transfer-jobs/", {**_payload(source, elsewhere)}, format="json")
    assert response.status_code == 400
    assert "destination" in response.json()


def test_pseudonym_required_without_the_permission():
    api_user = make_api_user(permissions=TRANSFER_PERMISSIONS)
    source, folder = DicomServerFactory(), DicomFolderFactory()
    grant_access(api_user.group, source)
    grant_access(api_user.group, folder, source=False, destination=True)
    client = client_for(api_user)
    payload = {
        "source": source.ae_title,
        "destination": folder.name,
        "studies": [{"study_uid": STUDY_UID, "patient_id": "PAT1"}],
    }
    response = client.post("/api/transfer-jobs/", payload, format="json")
    assert response.status_code == 400
    assert "A pseudonym is required" in str(response.json()["pseudonym"])
    response = client.post(
        "/api/transfer-jobs/",
        {**payload, "pseudonym": "P1", "archive_password": "pw"},
        format="json",
    )
    assert response.status_code == 201, response.json()


def test_batch_query_jobs(setup):
    api_user = make_api_user(permissions=BATCH_QUERY_PERMISSIONS)
    source = DicomServerFactory()
    grant_access(api_user.group, source)
    client = client_for(api_user)
    response = client.post(
        "/api/batch-query-jobs/",
        {
            "source": source.pk,
            "project_name": "Project",
            "project_description": "Why",
            "queries": [
                {"PatientID": "P1", "Modality": "CT"},
                {"PatientName": "Doe, John", "PatientBirthDate": "1970-01-01", "Modality": "MR"},
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    job = BatchQueryJob.objects.get(pk=response.json()["id"])
    assert job.tasks.count() == 2
    assert client.get(f"/api/batch-query-jobs/{job.pk}/tasks/").json()["count"] == 2
    assert client.get(f"/api/batch-query-jobs/{job.pk}/results/").json()["results"] == []
    assert client.post(f"/api/batch-query-jobs/{job.pk}/cancel/").status_code == 200

    response = client.post(
        "/api/batch-query-jobs/",
        {
            "source": source.pk,
            "project_name": "Project",
            "project_description": "Why",
            "queries": [{"PatientID": "P*"}],
        },
        format="json",
    )
    assert response.status_code == 400
    problems = " ".join(response.json()["queries"])
    assert "Query 1" in problems and "Modality" in problems


def test_schema_and_docs_are_served(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    text = response.content.decode()
    assert "/api/transfer-jobs/" in text
    assert "/api/batch-query-jobs/{id}/results/" in text
    assert "/api/dicom-web/{ae_title}/qidors/studies" in text  # see dicom_web/tests/test_openapi
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_deid_options_default_to_the_groups_and_are_validated(setup):
    api_user, source, destination = setup
    GroupDeidentificationDefaults.objects.create(
        group=api_user.group, options=["retain_full_dates"]
    )
    client = client_for(api_user)

    defaulted = client.post(
        "/api/transfer-jobs/", _payload(source, destination, pseudonym="P1"), format="json"
    ).json()
    chosen = client.post(
        "/api/transfer-jobs/",
        _payload(source, destination, pseudonym="P1", deid_options=["retain_safe_private"]),
        format="json",
    ).json()
    refused = client.post(
        "/api/transfer-jobs/",
        _payload(source, destination, pseudonym="P1", deid_options=["keep_everything"]),
        format="json",
    )

    assert defaulted["deid_options"] == ["retain_full_dates"]
    assert defaulted["deid_description"][1] == (
        "Retain Longitudinal Temporal Information with Full Dates"
    )
    assert SelectiveTransferJob.objects.get(pk=chosen["id"]).deid_options == ["retain_safe_private"]
    assert refused.status_code == 400
    assert "keep_everything" in str(refused.json()["deid_options"])
