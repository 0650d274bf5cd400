"""Fixtures of the selective transfer tests: users with the app's permissions, Orthanc nodes."""

from __future__ import annotations

import dataclasses

import pytest
from django.contrib.auth.models import Permission

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core.models import DicomNodeGroupAccess, DicomServer

APP_PERMISSIONS = (
    "add_selectivetransferjob",
    "can_download_study",
)


def grant(group, *codenames: str) -> None:
    group.permissions.add(
        *Permission.objects.filter(
            content_type__app_label="selective_transfer", codename__in=codenames
        )
    )


def server_from_orthanc(orthanc, name: str, **overrides) -> DicomServer:
    """A DicomServer row for a running Orthanc (DIMSE and DICOMweb)."""
    config = dataclasses.asdict(orthanc.server_config(name=name))
    config.update(overrides)
    return DicomServer.objects.create(**config)


def give_access(group, node, source: bool = True, destination: bool = True) -> None:
    DicomNodeGroupAccess.objects.create(
        node=node, group=group, source=source, destination=destination
    )


@pytest.fixture
def researchers(db):
    group = GroupFactory(name="Researchers")
    grant(group, *APP_PERMISSIONS)
    return group


@pytest.fixture
def researcher(researchers):
    """A non-staff user who may query, transfer (pseudonymized only) and download."""
    return UserFactory(username="rita", groups=[researchers])


@pytest.fixture
def node_a(orthanc_a, researchers):
    server = server_from_orthanc(orthanc_a, "Orthanc A")
    give_access(researchers, server, source=True, destination=False)
    return server


@pytest.fixture
def node_b(orthanc_b, researchers):
    server = server_from_orthanc(orthanc_b, "Orthanc B")
    give_access(researchers, server, source=False, destination=True)
    return server
