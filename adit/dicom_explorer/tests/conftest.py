"""Fixtures of the explorer tests: a group with the explorer permission and Orthanc nodes."""

from __future__ import annotations

import dataclasses

import pytest
from django.contrib.auth.models import Permission

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core.dicom.testing.synthetic import make_study
from adit.core.models import DicomNodeGroupAccess, DicomServer


def grant(group, app_label: str, *codenames: str) -> None:
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
    )


def server_from_orthanc(orthanc, name: str, **overrides) -> DicomServer:
    config = dataclasses.asdict(orthanc.server_config(name=name))
    config.update(overrides)
    return DicomServer.objects.create(**config)


def give_access(group, node, source: bool = True, destination: bool = False) -> None:
    DicomNodeGroupAccess.objects.create(
        node=node, group=group, source=source, destination=destination
    )


@pytest.fixture
def explorers(db):
    group = GroupFactory(name="Explorers")
    grant(group, "dicom_explorer", "use_explorer")
    return group


@pytest.fixture
def explorer_user(explorers):
    return UserFactory(username="erin", groups=[explorers])


@pytest.fixture
def orthanc_node(orthanc_a, explorers):
    """Orthanc A with DIMSE and DICOMweb (images rendered by Orthanc's /rendered)."""
    server = server_from_orthanc(orthanc_a, "Orthanc A")
    give_access(explorers, server)
    return server


@pytest.fixture
def dimse_node(orthanc_a, explorers):
    """Orthanc A over DIMSE only: ADIT fetches instances by C-GET and renders them itself."""
    server = server_from_orthanc(
        orthanc_a,
        "Orthanc A (DIMSE)",
        dicomweb_root_url="",
        dicomweb_qido_support=False,
        dicomweb_wado_support=False,
        dicomweb_stow_support=False,
    )
    give_access(explorers, server)
    return server


@pytest.fixture
def uploaded_study(orthanc_a):
    """A CT study on Orthanc A: an uncompressed CT series and an RLE Lossless CT series
    (the synthetic study compresses its last series)."""
    patient_id = "EX-" + make_study("x")[0].StudyInstanceUID[-10:]
    study = make_study(
        patient_id,
        patient_name="Explorer^Eva",
        study_date="20240302",
        study_description="Chest CT",
        series=(("CT", 3), ("CT", 2)),
        rows=64,
        columns=64,
    )
    orthanc_a.upload(study)
    return study


@pytest.fixture
def destination_node(orthanc_b, explorers):
    server = server_from_orthanc(orthanc_b, "Orthanc B")
    give_access(explorers, server, source=False, destination=True)
    return server
