"""Shared pieces of the DICOMweb API tests."""

from __future__ import annotations

import secrets
from io import BytesIO

import pytest
import requests
from adit_client.multipart import iter_parts, parse_content_type
from pydicom import Dataset, dcmread

from adit.core.dicom.testing.peers import dataset_to_bytes
from adit.core.dicom.testing.synthetic import make_study
from adit.core.models import DicomServer
from adit.dicom_web.testing import ApiUser, grant_access, make_api_user, server_from_config

MODES = ("dimse", "dicomweb")


def new_patient_id() -> str:
    return f"API{secrets.token_hex(4).upper()}"


def small_study(patient_id: str | None = None) -> list[Dataset]:
    return make_study(
        patient_id or new_patient_id(),
        patient_name="Apitest^Anna",
        birth_date="19800202",
        institution_name="Api Test Hospital",
        series=(("CT", 3), ("MR", 2)),
    )


def orthanc_server(orthanc, mode: str, ae_title: str | None = None) -> DicomServer:
    """A DicomServer row for Orthanc, DIMSE only (C-FIND, C-GET, C-STORE) or DICOMweb only."""
    dimse_off = dict(
        host="",
        port=0,
        patient_root_find_support=False,
        patient_root_get_support=False,
        patient_root_move_support=False,
        study_root_find_support=False,
        study_root_get_support=False,
        study_root_move_support=False,
        store_scp_support=False,
    )
    if mode == "dimse":
        config = orthanc.server_config(
            dicomweb_root_url="",
            dicomweb_qido_support=False,
            dicomweb_wado_support=False,
            dicomweb_stow_support=False,
            patient_root_move_support=False,
            study_root_move_support=False,
        )
    else:
        config = orthanc.server_config(**dimse_off)
    return server_from_config(
        config, f"{orthanc.name} {mode}", ae_title or f"{mode.upper()}_{orthanc.ae_title}"[:16]
    )


def setup_user_and_server(orthanc, mode: str, **user_kwargs) -> tuple[ApiUser, DicomServer]:
    api_user = make_api_user(**user_kwargs)
    server = orthanc_server(orthanc, mode)
    grant_access(api_user.group, server)
    return api_user, server


def dicomweb_url(live, server: DicomServer, service: str) -> str:
    return f"{live.url}/api/dicom-web/{server.ae_title}/{service}"


def parse_multipart(response: requests.Response) -> list[Dataset]:
    media_type, params = parse_content_type(response.headers["Content-Type"])
    assert media_type == "multipart/related"
    assert params["type"] == "application/dicom"
    stream = BytesIO(response.content)
    datasets = []
    for headers, body in iter_parts(stream.read, params["boundary"]):
        assert headers["content-type"] == "application/dicom", body[:200]
        datasets.append(dcmread(BytesIO(body)))
    return datasets


def multipart_body(payloads: list[bytes], boundary: str = "test-boundary-1234") -> bytes:
    body = b""
    for payload in payloads:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += payload + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def part10(ds: Dataset) -> bytes:
    return dataset_to_bytes(ds)


needs_orthanc = pytest.mark.peers
