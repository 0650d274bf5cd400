"""Queries, retrieves and API token use are audited where they happen (real Orthanc)."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from adit.accounts.factories import TokenFactory, UserFactory
from adit.accounts.models import generate_token
from adit.audit.models import AuditEntry
from adit.batch_query.models import BatchQueryJob, BatchQueryTask
from adit.batch_query.processors import BatchQueryTaskProcessor
from adit.core.dicom.testing.synthetic import make_study

pytestmark = pytest.mark.django_db

Action = AuditEntry.Action


def only(action: str) -> AuditEntry:
    return AuditEntry.objects.get(action=action)


def test_api_token_use_and_rejected_tokens_are_audited(client):
    user = UserFactory(username="api-user")
    clear_token = generate_token()
    token = TokenFactory(owner=user, clear_token=clear_token, description="analysis script")

    ok = client.get(
        "/api/transfer-jobs/", HTTP_AUTHORIZATION=f"Token {clear_token}", REMOTE_ADDR="10.9.8.7"
    )
    bad = client.get("/api/transfer-jobs/", HTTP_AUTHORIZATION="Token " + "0" * 40)

    assert (ok.status_code, bad.status_code) == (200, 401)
    used, rejected = AuditEntry.objects.filter(action=Action.TOKEN_USE).order_by("id")
    assert (used.username, used.outcome, used.client_address) == ("api-user", "success", "10.9.8.7")
    assert used.details == {
        "method": "GET",
        "path": "/api/transfer-jobs/",
        "token": token.pk,
        "token_description": "analysis script",
    }
    assert (rejected.user_id, rejected.outcome) == (None, "denied")
    assert rejected.details["reason"] == "Invalid token."
    assert "0" * 40 not in str(rejected.details)  # the token itself is never recorded


@pytest.mark.peers
def test_selective_transfer_query_without_websocket(client, researcher, orthanc_a, node_a):
    patient_id = f"AQ{uuid.uuid4().hex[:8]}"
    orthanc_a.upload(make_study(patient_id, series=(("CT", 1),)))
    client.force_login(researcher)

    response = client.post(
        "/selective-transfer/",
        {"action": "query", "source": node_a.pk, "patient_id": patient_id, "modalities": "CT"},
    )

    assert response.status_code == 200
    assert len(response.context["outcome"].rows) == 1
    entry = only(Action.QUERY)
    assert (entry.username, entry.patient_id, entry.source) == ("rita", patient_id, "Orthanc A")
    assert entry.details["query"]["PatientID"] == patient_id
    assert entry.details["query"]["ModalitiesInStudy"] == "CT"
    assert "PatientName" not in entry.details["query"]  # a return key, not asked for


@pytest.mark.peers
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
def test_zip_download_is_audited(client, researcher, orthanc_a, node_a):
    study = make_study(f"AD{uuid.uuid4().hex[:8]}", series=(("CT", 1),))
    orthanc_a.upload(study)
    patient_id, study_uid = study[0].PatientID, study[0].StudyInstanceUID
    client.force_login(researcher)
    url = reverse("selective_transfer:download_study", kwargs={"server_id": node_a.pk})
    params = {"patient_id": patient_id, "study_uid": study_uid, "pseudonym": "PSN-DL"}

    response = client.get(f"{url}?{urlencode(params)}")
    assert response.status_code == 200
    b"".join(response)  # type: ignore[arg-type]

    entry = only(Action.RETRIEVE)
    assert (entry.username, entry.outcome) == ("rita", "success")
    assert (entry.patient_id, entry.study_uid, entry.pseudonym) == (patient_id, study_uid, "PSN-DL")
    assert entry.source == "Orthanc A"
    assert entry.details["via"] == "ZIP download"


@pytest.mark.peers
def test_batch_query_task_records_its_query(orthanc_a):
    from adit.batch_query.tests.conftest import server_from_orthanc

    source = server_from_orthanc(orthanc_a, "Orthanc A")
    patient_id = f"AB{uuid.uuid4().hex[:8]}"
    orthanc_a.upload(make_study(patient_id, series=(("MR", 1),)))
    job = BatchQueryJob.objects.create(
        owner=UserFactory(username="bq-user"), project_name="P", project_description="D"
    )
    task = BatchQueryTask.objects.create(
        job=job, source=source, lines=[2], patient_id=patient_id, modalities=["MR"], pseudonym="X1"
    )

    BatchQueryTaskProcessor(task).process()

    entry = only(Action.QUERY)
    assert (entry.username, entry.patient_id, entry.pseudonym) == ("bq-user", patient_id, "X1")
    assert (entry.job_type, entry.job_id, entry.task_id) == ("batch_query", job.pk, task.pk)
    assert entry.details == {
        "query": {"patient_id": patient_id, "modalities": ["MR"]},
        "level": "STUDY",
    }
    assert not task.results.filter(patient_id="").exists()


@pytest.mark.peers
def test_rest_api_patient_id_lookup_is_audited(orthanc_a):
    from rest_framework.test import APIClient

    from adit.core.factories import DicomServerFactory
    from adit.core.tests.test_transfer_engine import orthanc_server
    from adit.dicom_web.testing import grant_access, make_api_user

    study = make_study(f"AR{uuid.uuid4().hex[:8]}", series=(("CT", 1),))
    orthanc_a.upload(study)
    study_uid = str(study[0].StudyInstanceUID)
    api_user = make_api_user(
        permissions=("selective_transfer.add_selectivetransferjob",), username="api-user"
    )
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = DicomServerFactory(name="Research PACS")
    grant_access(api_user.group, source, source=True, destination=False)
    grant_access(api_user.group, destination, source=False, destination=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_user.token}")

    response = client.post(
        "/api/transfer-jobs/",
        {
            "source": source.ae_title,
            "destination": destination.ae_title,
            "studies": [{"study_uid": study_uid}],  # no PatientID: ADIT asks the source
            "pseudonym": "PSN-API",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    entry = only(Action.QUERY)
    assert (entry.username, entry.study_uid, entry.source) == ("api-user", study_uid, "Orthanc A")
    assert entry.details["query"] == {"StudyInstanceUID": study_uid}
