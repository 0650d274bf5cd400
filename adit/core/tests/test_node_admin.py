"""Admin pages of DICOM nodes, and "test connection" against real peers (DCMTK, Orthanc)."""

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.urls import reverse

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core.dicom.config import ServerConfig
from adit.core.dicom.testing import peers
from adit.core.dicom.testing.peers import free_port, peer_environment, skip_or_fail
from adit.core.factories import (
    DicomFolderFactory,
    DicomNodeGroupAccessFactory,
    DicomServerFactory,
    DicomWebServerFactory,
)
from adit.core.models import DicomFolder, DicomServer
from adit.core.node_checks import c_echo, qido_probe, qido_url

ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def require_binary(name: str) -> str:
    """The binary's path; skip when missing, but fail on CI where every peer must be present.

    The virtualenv's bin directory is left out: pynetdicom installs its own `storescp` there,
    which is not DCMTK's.
    """
    venv_bin = str(Path(sys.executable).parent)
    search_path = os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry != venv_bin
    )
    path = shutil.which(name, path=search_path)
    if path is None:
        skip_or_fail(f"{name} is not installed (needed as a real DICOM peer)")
        raise AssertionError("unreachable")
    return path


def wait_for_port(port: int, process: subprocess.Popen, name: str, timeout: float = 20.0) -> None:
    peers.wait_for_port("127.0.0.1", port, process, name, timeout)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        # Orthanc takes seconds to shut down cleanly; its storage here is thrown away anyway.
        process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def storescp(tmp_path_factory) -> Iterator[ServerConfig]:
    """DCMTK's storescp on a free loopback port (it answers C-ECHO)."""
    binary = require_binary("storescp")
    port = free_port()
    output_dir = tmp_path_factory.mktemp("storescp")
    process = subprocess.Popen(
        [binary, "--aetitle", "STORESCP", "--output-directory", str(output_dir), str(port)],
        env=peer_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, "storescp")
        yield ServerConfig(name="storescp", ae_title="STORESCP", host="127.0.0.1", port=port)
    finally:
        stop(process)


ORTHANC_USER = "adit"
ORTHANC_PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[ServerConfig]:
    """Orthanc with DICOMweb and HTTP basic authentication; it checks the called AE title."""
    binary = require_binary("Orthanc")
    if not ORTHANC_DICOMWEB_PLUGIN.exists():
        skip_or_fail(f"Orthanc's DICOMweb plugin is missing ({ORTHANC_DICOMWEB_PLUGIN})")
    workdir = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "ADIT node admin test",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {ORTHANC_USER: ORTHANC_PASSWORD},
        "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    config_file = workdir / "orthanc.json"
    config_file.write_text(json.dumps(config))
    process = subprocess.Popen(
        [binary, str(config_file)],
        env=peer_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(http_port, process, "Orthanc")
        wait_for_port(dicom_port, process, "Orthanc")
        yield ServerConfig(
            name="orthanc",
            ae_title="ORTHANC",
            host="127.0.0.1",
            port=dicom_port,
            dicomweb_root_url=f"http://127.0.0.1:{http_port}/dicom-web",
            dicomweb_qido_support=True,
            dicomweb_authorization_header=basic_auth(ORTHANC_USER, ORTHANC_PASSWORD),
        )
    finally:
        stop(process)


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def admin_client(client, db):
    user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def run_test_connection_action(admin_client, *servers: DicomServer):
    return admin_client.post(
        reverse("admin:core_dicomserver_changelist"),
        {"action": "test_connection", "_selected_action": [server.pk for server in servers]},
        follow=True,
    )


# --- node checks without Django --------------------------------------------------------------


def test_c_echo_succeeds_against_storescp(storescp):
    result = c_echo(storescp, "ADIT")
    assert result.ok, result
    assert result.service == "C-ECHO"
    assert f"STORESCP@127.0.0.1:{storescp.port}" in result.detail


def test_c_echo_reports_a_closed_port():
    config = ServerConfig(name="closed", ae_title="NOBODY", host="127.0.0.1", port=free_port())
    result = c_echo(config, "ADIT", timeout=2)
    assert not result.ok
    assert f"NOBODY@127.0.0.1:{config.port}" in result.detail
    assert "could not connect" in result.detail


def test_c_echo_reports_a_rejected_called_ae_title(orthanc):
    config = ServerConfig(name="wrong AE", ae_title="WRONG", host="127.0.0.1", port=orthanc.port)
    result = c_echo(config, "ADIT")
    assert not result.ok
    assert "association rejected" in result.detail
    assert "called AE title not recognized" in result.detail


def test_qido_probe_sends_the_authorization_header(orthanc):
    assert qido_probe(orthanc).ok
    wrong = ServerConfig(
        name="orthanc",
        dicomweb_root_url=orthanc.dicomweb_root_url,
        dicomweb_authorization_header=basic_auth(ORTHANC_USER, "wrong"),
    )
    result = qido_probe(wrong)
    assert not result.ok
    assert "refused access (HTTP 401); check the Authorization header" in result.detail


def test_qido_probe_reports_an_unreachable_server():
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    result = qido_probe(ServerConfig(name="down", dicomweb_root_url=url), timeout=2)
    assert not result.ok
    assert f"could not reach {url}/studies" in result.detail


def test_qido_url_joins_root_and_prefix():
    config = ServerConfig(name="x", dicomweb_root_url="http://h/web/", dicomweb_qido_prefix="/q/")
    assert qido_url(config) == "http://h/web/q/studies"
    assert qido_url(ServerConfig(name="x", dicomweb_root_url="http://h/web")) == (
        "http://h/web/studies"
    )


# --- admin pages -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_server_and_folder_admin_pages_render(admin_client):
    server = DicomServerFactory(name="PACS", dicomweb_authorization_header="Bearer hidden-token")
    folder = DicomFolderFactory(name="Downloads")
    DicomNodeGroupAccessFactory(node=server, group=GroupFactory(name="Radiology"))

    changelist = admin_client.get(reverse("admin:core_dicomserver_changelist"))
    assert changelist.status_code == 200
    assert "PACS" in changelist.content.decode()
    assert "hidden-token" not in changelist.content.decode()

    change = admin_client.get(reverse("admin:core_dicomserver_change", args=[server.pk]))
    assert change.status_code == 200
    page = change.content.decode()
    assert "Radiology" in page  # the inline access row
    assert reverse("admin:core_dicomserver_test_connection", args=[server.pk]) in page

    assert admin_client.get(reverse("admin:core_dicomfolder_changelist")).status_code == 200
    folder_page = admin_client.get(reverse("admin:core_dicomfolder_change", args=[folder.pk]))
    assert folder_page.status_code == 200
    assert admin_client.get(reverse("admin:core_dicomserver_add")).status_code == 200


def inline_management(prefix: str, total: int) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


@pytest.mark.django_db
def test_adding_a_server_with_access_rows_in_the_admin(admin_client):
    group = GroupFactory(name="Radiology")
    data = {
        "name": "New PACS",
        "active": "on",
        "max_associations": "2",
        "max_search_results": "100",
        "ae_title": "NEWPACS",
        "host": "pacs.example.org",
        "port": "104",
        "study_root_find_support": "on",
        "dicomweb_root_url": "",
        "dicomweb_qido_prefix": "",
        "dicomweb_wado_prefix": "",
        "dicomweb_stow_prefix": "",
        "dicomweb_authorization_header": "",
        **inline_management("group_accesses", 1),
        "group_accesses-0-group": str(group.pk),
        "group_accesses-0-source": "on",
    }
    response = admin_client.post(reverse("admin:core_dicomserver_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    server = DicomServer.objects.get(name="New PACS")
    assert server.node_type == DicomServer.NodeType.SERVER
    access = server.group_accesses.get()
    assert (access.group, access.source, access.destination) == (group, True, False)


@pytest.mark.django_db
def test_admin_shows_validation_errors_of_a_server(admin_client):
    data = {
        "name": "Broken",
        "max_associations": "4",
        "max_search_results": "200",
        "ae_title": "BAD\\AE",
        "host": "pacs",
        "port": "70000",
        "dicomweb_qido_support": "on",
        **inline_management("group_accesses", 0),
    }
    response = admin_client.post(reverse("admin:core_dicomserver_add"), data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "contains characters not allowed in an AE title" in errors["ae_title"][0]
    assert errors["port"] == ["The port must be between 1 and 65535."]
    assert not DicomServer.objects.filter(name="Broken").exists()


@pytest.mark.django_db
def test_folder_admin_rejects_a_relative_path(admin_client):
    data = {
        "name": "Rel",
        "active": "on",
        "path": "data/out",
        **inline_management("group_accesses", 0),
    }
    response = admin_client.post(reverse("admin:core_dicomfolder_add"), data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["path"] == [
        "The folder path data/out must be absolute (start with /)."
    ]
    assert not DicomFolder.objects.exists()


# --- test connection -------------------------------------------------------------------------


@pytest.mark.django_db
def test_test_connection_action_succeeds_against_storescp(admin_client, storescp):
    server = DicomServerFactory(name="Local storescp", ae_title="STORESCP", port=storescp.port)
    response = run_test_connection_action(admin_client, server)
    assert response.status_code == 200
    [message] = messages_of(response)
    assert message.startswith("Local storescp: C-ECHO succeeded")
    assert [m.level_tag for m in response.context["messages"]] == ["success"]


@pytest.mark.django_db
def test_test_connection_action_reports_a_closed_port(admin_client):
    server = DicomServerFactory(name="Dead PACS", ae_title="DEAD", port=free_port())
    response = run_test_connection_action(admin_client, server)
    [message] = messages_of(response)
    assert message.startswith("Dead PACS: C-ECHO failed: DEAD@127.0.0.1:")
    assert "could not connect" in message
    assert [m.level_tag for m in response.context["messages"]] == ["error"]


@pytest.mark.django_db
def test_test_connection_checks_dimse_and_dicomweb_of_one_server(admin_client, orthanc):
    server = DicomServerFactory(
        name="Orthanc",
        ae_title=orthanc.ae_title,
        port=orthanc.port,
        dicomweb_root_url=orthanc.dicomweb_root_url,
        dicomweb_qido_support=True,
        dicomweb_authorization_header=orthanc.dicomweb_authorization_header,
    )
    web_only = DicomWebServerFactory(
        name="Orthanc without password",
        dicomweb_root_url=orthanc.dicomweb_root_url,
    )
    response = run_test_connection_action(admin_client, server, web_only)
    messages = {m.split(":")[0]: m for m in messages_of(response)}
    assert "C-ECHO succeeded" in messages["Orthanc"]
    assert "QIDO-RS succeeded" in messages["Orthanc"]
    assert "QIDO-RS failed" in messages["Orthanc without password"]
    assert "HTTP 401" in messages["Orthanc without password"]
    assert "C-ECHO" not in messages["Orthanc without password"]


@pytest.mark.django_db
def test_test_connection_button_on_the_change_page(admin_client, storescp):
    server = DicomServerFactory(name="Button PACS", ae_title="STORESCP", port=storescp.port)
    url = reverse("admin:core_dicomserver_test_connection", args=[server.pk])
    response = admin_client.post(url, follow=True)
    assert response.redirect_chain[-1][0] == reverse(
        "admin:core_dicomserver_change", args=[server.pk]
    )
    [message] = messages_of(response)
    assert message.startswith("Button PACS: C-ECHO succeeded")


@pytest.mark.django_db
def test_test_connection_button_needs_staff(client):
    server = DicomServerFactory()
    user = UserFactory(username="bob", groups=[GroupFactory(name="Users")])
    client.force_login(user)
    response = client.post(reverse("admin:core_dicomserver_test_connection", args=[server.pk]))
    assert response.status_code == 302
    assert "/login/" in response["Location"]
