"""/health/: 200 JSON when the database answers, 503 when it does not."""

import socket

import pytest
from django.db import connection
from django.test import Client

from adit.core.models import ProjectSettings


@pytest.mark.django_db
def test_health_is_ok_without_login():
    response = Client().get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "up"}


@pytest.mark.django_db
def test_health_is_ok_in_maintenance():
    ProjectSettings.objects.update_or_create(pk=1, defaults={"maintenance": True})
    assert Client().get("/health/").status_code == 200


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_health_is_503_when_database_does_not_answer():
    # Point the connection at a port where no PostgreSQL listens: a real connection failure.
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(unused_port()))
    try:
        response = Client().get("/health/")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "down"}
    assert Client().get("/health/").status_code == 200
