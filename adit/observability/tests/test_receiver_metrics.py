"""The receiver's associations reach /metrics: a real `manage.py receiver` process, DCMTK's
echoscu as the PACS, and a scrape of /metrics after the receiver flushed its counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from django.db import connection

from adit.core.dicom.testing.peers import LOOPBACK, free_port, peer_environment, require_binary
from adit.core.dicom.tests.test_receiver import _database_url
from adit.core.models import DicomServer
from adit.core.testing.workers import PROJECT_DIR
from adit.observability.tests.test_metrics import scrape, value

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]


def test_accepted_and_refused_associations_are_counted(client, tmp_path):
    echoscu = require_binary("echoscu")
    DicomServer.objects.create(name="Pusher", ae_title="PUSHER_AE", host=LOOPBACK, port=104)
    store_port, transmit_port = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "adit.settings.test",
        "DATABASE_URL": _database_url(connection.settings_dict),
        "ADIT_DATA_DIR": str(tmp_path / "data"),
        "RECEIVER_AE_TITLE": "METRICS_RECV",
        "STORE_SCP_PORT": str(store_port),
        "FILE_TRANSMIT_PORT": str(transmit_port),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "receiver", "--host", LOOPBACK],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )

    def echo(calling_ae: str, called_ae: str = "METRICS_RECV") -> int:
        return subprocess.run(
            [echoscu, "-aet", calling_ae, "-aec", called_ae, LOOPBACK, str(store_port)],
            capture_output=True, text=True, timeout=30, env=peer_environment(),
        ).returncode  # fmt: skip

    try:
        assert process.stdout is not None
        assert f"C-STORE port {store_port}" in process.stdout.readline()
        assert echo("PUSHER_AE") == 0
        assert echo("PUSHER_AE") == 0
        assert echo("INTRUDER") != 0
        assert echo("RANDOM_1234") != 0
        assert echo("PUSHER_AE", called_ae="SOMEONE_ELSE") != 0
        # SIGTERM: the receiver stops and writes what it counted.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()

    samples = scrape(client)
    name = "adit_receiver_associations_total"
    assert value(samples, name, calling_ae="PUSHER_AE", outcome="accepted") == 2
    unknown = "(not configured)"
    assert value(samples, name, calling_ae=unknown, outcome="refused_calling_ae") == 2
    assert value(samples, name, calling_ae=unknown, outcome="refused_called_ae") == 1
    # Titles of unknown peers never become labels.
    assert not any("INTRUDER" in str(labels) for _, labels in samples)
