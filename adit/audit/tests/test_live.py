"""QIDO-RS and WADO-RS through a live ADIT (daphne), and the selective transfer's live query over
the WebSocket, against a real Orthanc: each is in the audit trail."""

from __future__ import annotations

import pytest
import requests
from channels.db import database_sync_to_async

from adit.audit.models import AuditEntry
from adit.dicom_web.tests.helpers import dicomweb_url, setup_user_and_server, small_study
from adit.selective_transfer.tests.test_consumer import connect, receive_until

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

Action = AuditEntry.Action


def test_qido_and_wado_are_audited(live_adit, orthanc_a):
    study = small_study()
    orthanc_a.upload(study)
    patient_id, study_uid = study[0].PatientID, str(study[0].StudyInstanceUID)
    api_user, server = setup_user_and_server(orthanc_a, "dimse", username="web-client")
    headers = api_user.headers

    qido = requests.get(
        f"{dicomweb_url(live_adit, server, 'qidors')}/studies",
        params={"PatientID": patient_id},
        headers=headers,
        timeout=30,
    )
    wado = requests.get(
        f"{dicomweb_url(live_adit, server, 'wadors')}/studies/{study_uid}",
        params={"pseudonym": "PSN-WADO"},
        headers=headers,
        timeout=60,
    )

    assert (qido.status_code, wado.status_code) == (200, 200), (qido.text, wado.text[:300])
    query = AuditEntry.objects.get(action=Action.QUERY)
    assert (query.username, query.patient_id, query.source) == (
        "web-client",
        patient_id,
        server.name,
    )
    assert query.details == {"query": {"PatientID": patient_id}, "level": "STUDY"}
    assert query.client_address == "127.0.0.1"
    retrieve = AuditEntry.objects.get(action=Action.RETRIEVE)
    assert (retrieve.username, retrieve.outcome) == ("web-client", "success")
    assert (retrieve.study_uid, retrieve.pseudonym) == (study_uid, "PSN-WADO")
    assert retrieve.details == {"via": "WADO-RS"}
    token_uses = AuditEntry.objects.filter(action=Action.TOKEN_USE, username="web-client")
    assert token_uses.count() == 2


def test_unknown_study_retrieve_is_audited_as_failure(live_adit, orthanc_a):
    api_user, server = setup_user_and_server(orthanc_a, "dimse", username="web-client")
    missing = "1.2.826.0.1.3680043.8.498.424242"
    response = requests.get(
        f"{dicomweb_url(live_adit, server, 'wadors')}/studies/{missing}",
        headers=api_user.headers,
        timeout=60,
    )
    assert response.status_code == 404
    retrieve = AuditEntry.objects.get(action=Action.RETRIEVE)
    assert (retrieve.study_uid, retrieve.outcome) == (missing, "failure")


@pytest.mark.asyncio
async def test_websocket_live_query_is_audited(researcher, researchers, orthanc_a):
    from adit.selective_transfer.tests.conftest import give_access, server_from_orthanc

    def setup():
        source = server_from_orthanc(orthanc_a, "Orthanc A")
        give_access(researchers, source, source=True, destination=False)
        return source

    source = await database_sync_to_async(setup)()
    study = small_study()
    await database_sync_to_async(orthanc_a.upload)(study)
    patient_id = study[0].PatientID

    communicator = await connect(researcher)
    await communicator.send_json_to(
        {"action": "query", "source": source.pk, "patient_id": patient_id}
    )
    messages = await receive_until(communicator, "done", "error", timeout=60)
    await communicator.disconnect()

    assert messages[-1]["type"] == "done", messages[-1]
    entry = await database_sync_to_async(AuditEntry.objects.get)(action=Action.QUERY)
    assert (entry.username, entry.patient_id, entry.source) == ("rita", patient_id, "Orthanc A")
    assert entry.details["query"]["PatientID"] == patient_id
