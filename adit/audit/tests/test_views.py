"""The audit log page (staff only, filters, pagination, CSV export) and the login events."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.test import Client
from django.utils import timezone

from adit.accounts.factories import UserFactory
from adit.audit.models import AuditEntry
from adit.audit.services import record

pytestmark = pytest.mark.django_db

URL = "/audit/"


@pytest.fixture
def staff_client(client) -> Client:
    client.force_login(UserFactory(username="sam", is_staff=True))  # itself a "login" entry
    return client


def shown_patient_ids(response) -> list[str]:
    return [entry.patient_id for entry in response.context["page"].object_list]


def test_non_staff_get_403_and_anonymous_the_login(client):
    assert client.get(URL).status_code == 302
    client.force_login(UserFactory(username="rita"))
    assert client.get(URL).status_code == 403
    assert client.get(URL + "?format=csv").status_code == 403


def test_filters_by_user_patient_study_action_and_time(staff_client):
    rita, otto = UserFactory(username="rita"), UserFactory(username="otto")
    record(AuditEntry.Action.QUERY, user=rita, patient_id="P-RITA", study_uid="1.2.3")
    record(AuditEntry.Action.RETRIEVE, user=otto, patient_id="P-OTTO", study_uid="1.2.4")
    old = AuditEntry(
        time=timezone.now() - dt.timedelta(days=10), action="transfer", patient_id="P-OLD"
    )
    old.save()

    assert shown_patient_ids(staff_client.get(URL, {"user": "rita"})) == ["P-RITA"]
    assert shown_patient_ids(staff_client.get(URL, {"patient_id": "P-OTTO"})) == ["P-OTTO"]
    assert shown_patient_ids(staff_client.get(URL, {"study_uid": "1.2.3"})) == ["P-RITA"]
    assert shown_patient_ids(staff_client.get(URL, {"action": "transfer"})) == ["P-OLD"]
    five_days_ago = (timezone.localdate() - dt.timedelta(days=5)).isoformat()
    assert shown_patient_ids(staff_client.get(URL, {"until": five_days_ago})) == ["P-OLD"]
    assert sorted(shown_patient_ids(staff_client.get(URL, {"since": five_days_ago}))) == [
        "",  # sam's login
        "P-OTTO",
        "P-RITA",
    ]


def test_bad_filters_are_named_not_a_500(staff_client):
    response = staff_client.get(URL, {"since": "2024-13-40", "action": "hack"})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "since" in errors and "action" in errors
    response = staff_client.get(URL, {"since": "2024-05-02", "until": "2024-05-01"})
    assert "lies after" in response.content.decode()


def test_pagination_keeps_the_filters(staff_client):
    for n in range(55):
        record(AuditEntry.Action.QUERY, user=None, patient_id=f"PAGE{n:02d}")
    record(AuditEntry.Action.LOGIN, user=None)
    first = staff_client.get(URL, {"action": "query"})
    assert len(first.context["page"].object_list) == 50
    assert "?action=query&page=2" in first.content.decode()
    second = staff_client.get(URL, {"action": "query", "page": 2})
    assert len(second.context["page"].object_list) == 5


def test_html_is_escaped(staff_client):
    record(AuditEntry.Action.QUERY, user=None, patient_id="<script>alert(1)</script>")
    content = staff_client.get(URL).content.decode()
    assert "<script>alert(1)</script>" not in content
    assert "&lt;script&gt;" in content


def test_csv_export_is_formula_safe_filtered_and_audited(staff_client):
    record(AuditEntry.Action.QUERY, user=None, patient_id='=HYPERLINK("x")', study_uid="1.2")
    record(AuditEntry.Action.QUERY, user=None, patient_id="OTHER", study_uid="9.9")

    response = staff_client.get(URL, {"study_uid": "1.2", "format": "csv"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode("utf-8-sig")  # type: ignore[attr-defined]
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:5] == ["Time", "User", "Action", "Outcome", "PatientID"]
    assert [row[4] for row in rows[1:]] == ['\'=HYPERLINK("x")']
    export = AuditEntry.objects.get(action=AuditEntry.Action.AUDIT_EXPORT)
    assert export.username == "sam"
    assert export.details == {"filters": {"study_uid": "1.2"}}


def test_the_page_cannot_change_entries(staff_client):
    saved = record(AuditEntry.Action.QUERY, user=None, patient_id="P1")
    count = AuditEntry.objects.count()
    for method in ("post", "put", "patch", "delete"):
        response = getattr(staff_client, method)(URL, {"patient_id": "P2"})
        assert response.status_code == 405, method
    assert AuditEntry.objects.get(pk=saved.pk).patient_id == "P1"
    assert AuditEntry.objects.count() == count


def test_logins_logouts_and_failed_logins_are_recorded():
    UserFactory(username="lena", password="correct-horse-battery")
    client = Client(REMOTE_ADDR="10.1.2.3")

    client.post("/accounts/login/", {"username": "lena", "password": "wrong-password"})
    client.post("/accounts/login/", {"username": "lena", "password": "correct-horse-battery"})
    client.post("/accounts/logout/")

    entries = list(AuditEntry.objects.order_by("id"))
    assert [(e.action, e.outcome, e.username) for e in entries] == [
        ("login_failed", "failure", "lena"),
        ("login", "success", "lena"),
        ("logout", "success", "lena"),
    ]
    assert all(e.client_address == "10.1.2.3" for e in entries)
    assert entries[0].user_id is None
    assert "wrong-password" not in str(entries[0].details)
