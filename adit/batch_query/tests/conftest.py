"""Fixtures of the batch app tests: users with the apps' permissions, nodes, Orthanc nodes."""

from __future__ import annotations

import dataclasses

import pytest
from django.contrib.auth.models import Permission

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core.factories import DicomServerFactory
from adit.core.models import DicomNodeGroupAccess, DicomServer


def grant(group, app_label: str, *codenames: str) -> None:
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
    )


def server_from_orthanc(orthanc, name: str) -> DicomServer:
    """A DicomServer row for a running Orthanc (DIMSE and DICOMweb)."""
    return DicomServer.objects.create(**dataclasses.asdict(orthanc.server_config(name=name)))


def give_access(group, node, source: bool = True, destination: bool = True) -> None:
    DicomNodeGroupAccess.objects.create(
        node=node, group=group, source=source, destination=destination
    )


@pytest.fixture
def researchers(db):
    group = GroupFactory(name="Researchers")
    grant(group, "batch_query", "add_batchqueryjob")
    grant(group, "batch_transfer", "add_batchtransferjob")
    return group


@pytest.fixture
def researcher(researchers):
    """A non-staff user who may run batch queries and (pseudonymized) batch transfers."""
    return UserFactory(username="rita", groups=[researchers])


@pytest.fixture
def source_server(researchers):
    server = DicomServerFactory(name="PACS")
    give_access(researchers, server, source=True, destination=False)
    return server


@pytest.fixture
def destination_server(researchers):
    server = DicomServerFactory(name="Research PACS")
    give_access(researchers, server, source=False, destination=True)
    return server
