"""Each audit entry goes to a syslog collector too when AUDIT_SYSLOG_ADDRESS is set."""

from __future__ import annotations

import socket

import pytest

from adit.audit.models import AuditEntry
from adit.audit.services import record

pytestmark = pytest.mark.django_db


@pytest.fixture
def collector():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_entry_is_sent_as_rfc5424_message(settings, collector):
    settings.AUDIT_SYSLOG_ADDRESS = f"127.0.0.1:{collector.getsockname()[1]}"
    record(
        AuditEntry.Action.RETRIEVE,
        user=None,
        username="x",
        patient_id='P"1]',
        study_uid="1.2.3",
        source="PACS",
        details={"via": "WADO-RS"},
    )
    message = collector.recv(65535).decode()
    assert message.startswith("<37>1 ")
    assert " adit - AUDIT [adit-audit " in message
    assert 'EventID="retrieve"' in message
    assert 'EventActionCode="R"' in message
    assert 'EventOutcomeIndicator="0"' in message
    assert 'PatientID="P\\"1\\]"' in message  # RFC 5424 escaping
    assert 'StudyInstanceUID="1.2.3"' in message
    assert message.endswith("Retrieve (WADO-RS / download)")


def test_unreachable_collector_does_not_lose_the_entry(settings):
    settings.AUDIT_SYSLOG_ADDRESS = "no-such-host.invalid:514"
    entry = record(AuditEntry.Action.QUERY, user=None)
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
