"""Fixtures of the upload tests: a researcher allowed to upload, destinations, valid files."""

from __future__ import annotations

import dataclasses
import io
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Permission
from pydicom import Dataset

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core.dicom.pseudonymizer import Pseudonymizer
from adit.core.dicom.testing.peers import LOOPBACK
from adit.core.dicom.testing.synthetic import make_study
from adit.core.factories import DicomFolderFactory
from adit.core.models import DicomNodeGroupAccess, DicomServer
from adit.core.testing.proxy import CountingProxy
from adit.upload.models import UPLOAD_DEID_OPTIONS

PSEUDONYM = "UPL-1"


def grant(group, *codenames: str) -> None:
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="upload", codename__in=codenames)
    )


def give_access(group, node, destination: bool = True) -> None:
    DicomNodeGroupAccess.objects.create(
        node=node, group=group, source=False, destination=destination
    )


def server_from_orthanc(orthanc, name: str) -> DicomServer:
    return DicomServer.objects.create(**dataclasses.asdict(orthanc.server_config(name=name)))


@pytest.fixture
def uploaders(db):
    group = GroupFactory(name="Uploaders")
    grant(group, "add_uploadjob")
    return group


@pytest.fixture
def uploader(uploaders):
    """A non-staff researcher who may upload (pseudonymized only)."""
    return UserFactory(username="uma", groups=[uploaders])


def deidentify_like_the_browser(ds: Dataset, pseudonym: str = PSEUDONYM) -> Dataset:
    """What the page sends, made with the server-side pseudonymizer (same table and options);
    its UIDs are then put under the browser's 2.25 root."""
    Pseudonymizer(seed="test-upload", options=UPLOAD_DEID_OPTIONS).pseudonymize(ds, pseudonym)
    for element in ds.iterall():
        if element.VR == "UI" and not element.keyword.endswith("ClassUID"):
            value = str(element.value)
            if value.startswith("2.") and not value.startswith("2.25."):
                element.value = "2.25." + value[2:40].lstrip("0")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def recording_proxy(target_url: str) -> CountingProxy:
    """A relay in front of ADIT's web server that keeps every byte the browser sends.

    The browser talks to ADIT only through it (the page is opened at its `url`), so what it
    recorded is everything that left the browser for ADIT: request lines, headers and bodies
    exactly as on the wire, however the page built them (a Blob of file slices included, which
    DevTools' request interception does not show).
    """
    parts = urlsplit(target_url)
    return CountingProxy(parts.port or 80, parts.hostname or LOOPBACK, record_sent=True)


# --- a job of the researcher, and the files the page would send ---------------------------------


@pytest.fixture
def staging(tmp_path, settings):
    settings.UPLOAD_STAGING_DIR = tmp_path / "staging"
    return settings.UPLOAD_STAGING_DIR


@pytest.fixture
def folder(uploaders, tmp_path):
    (tmp_path / "out").mkdir()
    node = DicomFolderFactory(name="Research folder", path=str(tmp_path / "out"))
    give_access(uploaders, node)
    return node


def new_job(client, destination, pseudonym=PSEUDONYM, **fields):
    return client.post(
        "/upload/jobs/new/", {"destination": destination.pk, "pseudonym": pseudonym, **fields}
    )


def post_file(client, job_id: int, data: bytes, content_type: str = "application/dicom"):
    return client.post(f"/upload/jobs/{job_id}/instances/", data, content_type=content_type)


@pytest.fixture
def job_id(client, uploader, folder) -> int:
    client.force_login(uploader)
    response = new_job(client, folder, trial_protocol_id="TRIAL-7")
    assert response.status_code == 201, response.content
    return response.json()["job"]


def browser_file(**changes) -> bytes:
    ds = make_study("PAT-UP-1", series=(("CT", 1),), seed=None)[0]
    deidentify_like_the_browser(ds)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return encode(ds)
