"""The audit table is append-only: the ORM, raw SQL and the admin cannot change or delete an
entry; only the retention purge deletes, and only entries older than the retention."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from adit.accounts.factories import UserFactory
from adit.audit.models import AppendOnlyError, AuditEntry
from adit.audit.services import purge_expired, record

pytestmark = pytest.mark.django_db

TABLE = AuditEntry._meta.db_table


def entry(days_old: float = 0, **kwargs) -> AuditEntry:
    created = record(AuditEntry.Action.QUERY, user=None, patient_id="P1", **kwargs)
    if days_old:
        # Entries cannot be back-dated through the ORM (no update); insert an old one directly.
        old = AuditEntry(
            time=timezone.now() - dt.timedelta(days=days_old),
            action=AuditEntry.Action.QUERY,
            patient_id="OLD",
        )
        old.save()
        return old
    return created


def test_orm_refuses_to_change_or_delete():
    saved = entry()
    saved.patient_id = "P2"
    with pytest.raises(AppendOnlyError):
        saved.save()
    with pytest.raises(AppendOnlyError):
        saved.delete()
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.filter(pk=saved.pk).update(patient_id="P2")
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.filter(pk=saved.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.bulk_update([saved], ["patient_id"])
    assert AuditEntry.objects.get(pk=saved.pk).patient_id == "P1"


@pytest.mark.parametrize(
    "sql",
    [
        f"UPDATE {TABLE} SET patient_id = 'P2' WHERE id = %s",
        f"DELETE FROM {TABLE} WHERE id = %s",
    ],
)
def test_raw_sql_update_and_delete_are_refused_by_the_trigger(sql):
    saved = entry()
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [saved.pk])
    assert AuditEntry.objects.get(pk=saved.pk).patient_id == "P1"


def test_a_purge_cutoff_set_by_hand_still_protects_younger_entries():
    young = entry()
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cutoff = (timezone.now() - dt.timedelta(days=1)).isoformat()
            cursor.execute("SELECT set_config('adit.audit_purge_before', %s, true)", [cutoff])
            cursor.execute(f"DELETE FROM {TABLE} WHERE id = %s", [young.pk])
    assert AuditEntry.objects.filter(pk=young.pk).exists()


def test_purge_removes_only_entries_older_than_the_retention(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    old = entry(days_old=31)
    kept = entry(days_old=29)
    fresh = entry()

    deleted = purge_expired()

    assert deleted == 1
    assert not AuditEntry.objects.filter(pk=old.pk).exists()
    assert AuditEntry.objects.filter(pk__in=[kept.pk, fresh.pk]).count() == 2
    purge = AuditEntry.objects.get(action=AuditEntry.Action.PURGE)
    assert purge.details["deleted"] == 1
    assert purge.details["retention_days"] == 30
    # After the purge the transaction-local cut-off is gone: deleting is refused again.
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {TABLE} WHERE id = %s", [kept.pk])


def test_purge_command(capsys):
    entry(days_old=400)
    call_command("purge_audit_log", "--days", "365")
    assert "1 audit entry purged." in capsys.readouterr().out
    with pytest.raises(Exception, match="at least 1 day"):
        call_command("purge_audit_log", "--days", "0")


def test_deleting_a_user_leaves_the_trail_intact():
    user = UserFactory(username="gone")
    saved = record(AuditEntry.Action.LOGIN, user=user)
    user.delete()
    saved = AuditEntry.objects.get(pk=saved.pk)
    assert saved.username == "gone"


def test_admin_shows_entries_read_only(client):
    admin = UserFactory(username="boss", is_staff=True, is_superuser=True)
    saved = entry()
    client.force_login(admin)
    change_url = f"/admin/audit/auditentry/{saved.pk}/change/"
    delete_url = f"/admin/audit/auditentry/{saved.pk}/delete/"

    page = client.get(change_url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert client.post(change_url, {"patient_id": "P2"}).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    assert client.get("/admin/audit/auditentry/add/").status_code == 403
    assert AuditEntry.objects.get(pk=saved.pk).patient_id == "P1"
