"""Real DICOM peers for tests, demos and benchmarks: Orthanc (with DICOMweb) and pynetdicom's qrscp.

Every peer runs as its own process on free loopback ports with its own temporary storage, so
several test runs (and several helpers' test sessions) can run side by side.

Typical use outside the session fixtures (e.g. a receiver test that needs an Orthanc which knows
the receiver's AE as a C-MOVE destination)::

    orthanc = start_orthanc("ORTHANC_R", modalities={"ADIT_RECV": ("ADIT_RECV", "127.0.0.1", port)})
    try:
        orthanc.upload(make_study("PAT1"))
        ...  # use orthanc.server_config() with the DICOM layer
    finally:
        orthanc.stop()

or, on an already running instance, register the destination at runtime::

    orthanc_a.add_modality("ADIT_RECV", "ADIT_RECV", "127.0.0.1", port)

Orthanc refuses C-MOVE to destinations it does not know, so this is required for C-MOVE tests.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from adit.core.dicom.config import ServerConfig
from adit.core.testing import wait_until

ORTHANC_BINARY = os.environ.get("ORTHANC_BINARY", "/usr/sbin/Orthanc")
ORTHANC_DICOMWEB_PLUGIN = os.environ.get(
    "ORTHANC_DICOMWEB_PLUGIN", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
)
LOOPBACK = "127.0.0.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

# Modality entry as Orthanc expects it: (AE title, host, port).
Modality = tuple[str, str, int]


def free_port() -> int:
    """Returns a TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def skip_or_fail(reason: str) -> None:
    """Skips the current test because a peer is unavailable; fails instead when CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: missing test peers are a failure, not a skip)")
    pytest.skip(reason)


def require_orthanc() -> None:
    """Skips (or fails on CI) when Orthanc or its DICOMweb plugin is not installed."""
    if not Path(ORTHANC_BINARY).is_file():
        skip_or_fail(f"Orthanc binary not found at {ORTHANC_BINARY} (install Debian's 'orthanc')")
    if not Path(ORTHANC_DICOMWEB_PLUGIN).is_file():
        skip_or_fail(
            f"Orthanc DICOMweb plugin not found at {ORTHANC_DICOMWEB_PLUGIN} "
            "(install Debian's 'orthanc-dicomweb')"
        )


def require_binary(name: str) -> str:
    """Returns the path of an executable (e.g. a DCMTK tool), skipping/failing if missing."""
    # pynetdicom installs Python tools of the same names (storescu, ...) into the virtualenv;
    # look only outside of it so that DCMTK's tools are found.
    venv_bin = str(Path(sys.prefix) / "bin")
    search_path = os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry != venv_bin
    )
    path = shutil.which(name, path=search_path)
    if path is None:
        skip_or_fail(f"'{name}' not found on PATH (install Debian's 'dcmtk')")
        raise AssertionError("unreachable")  # pytest.skip/fail raise
    return path


def peer_environment() -> dict[str, str]:
    """Environment for peer processes: TCP_NODELAY avoids ~40 ms stalls per DIMSE exchange."""
    return {**os.environ, "TCP_NODELAY": "1"}


def dataset_to_bytes(ds: Dataset) -> bytes:
    """Encodes a dataset as a DICOM Part-10 file (it must have file meta)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def wait_for_port(host: str, port: int, process: subprocess.Popen, what: str, timeout: float):
    """Wait until `process` listens on `port`; RuntimeError if it exits or times out first."""

    def listens() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    if not wait_until(listens, timeout, interval=0.1, raising=False):
        raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout} s")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_get_scp(ae_title: str, evt_handlers: list, with_find: bool = False) -> tuple[Any, int]:
    """A real Study Root C-GET SCP (pynetdicom, in this process) on a free loopback port: it
    sends CT images on the C-GET's own association (SCP role for them), C-FIND too when asked.
    `evt_handlers` as pynetdicom takes them. Returns (server, port); `server.shutdown()` ends it.
    """
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE, evt

    port = free_port()
    ae = AE(ae_title=ae_title)
    if with_find:
        ae.add_supported_context(STUDY_ROOT_FIND)
    ae.add_supported_context(STUDY_ROOT_GET)
    ae.add_supported_context(
        CTImageStorage,
        [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        scu_role=False,
        scp_role=True,
    )
    server = ae.start_server(
        (LOOPBACK, port),
        block=False,
        evt_handlers=[*evt_handlers, (evt.EVT_CONN_OPEN, _no_delay)],
    )
    assert server is not None
    return server, port


def _no_delay(event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class OrthancInstance:
    """One Orthanc process with the DICOMweb plugin, on free loopback ports.

    Create it (ports are chosen at once, so instances can know each other before they start),
    adjust `modalities` if needed, then `start()`. `start_orthanc()` does both.
    """

    name: str
    base_dir: Path
    modalities: dict[str, Modality] = field(default_factory=dict)
    ae_title: str = ""
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = field(default=None, repr=False)
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    remove_base_dir_on_stop: bool = False
    extra_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ae_title = self.ae_title or self.name.upper()[:16]
        if len(self.ae_title) > 16:
            raise ValueError(f"Orthanc AE title {self.ae_title!r} is longer than 16 characters")
        self.base_dir = Path(self.base_dir)

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """Root URL of the DICOMweb plugin."""
        return f"{self.url}/dicom-web"

    @property
    def as_modality(self) -> Modality:
        """This instance as an entry for another instance's `DicomModalities`."""
        return (self.ae_title, LOOPBACK, self.dicom_port)

    def config(self) -> dict:
        """The Orthanc configuration JSON of this instance."""
        return {
            "Name": self.name,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "StorageDirectory": str(self.base_dir / "storage"),
            "IndexDirectory": str(self.base_dir / "index"),
            "Plugins": [ORTHANC_DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            # Only loopback clients exist here; the REST API needs no auth then.
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {name: list(entry) for name, entry in self.modalities.items()},
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomCheckCalledAet": False,
            "UnknownSopClassAccepted": True,
            "StableAge": 1,
            "SaveJobs": False,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "StorageCompression": False,
            "OverwriteInstances": True,
            # Orthanc keeps its outgoing associations open for 5 s by default; tests would wait.
            "DicomAssociationCloseDelay": 0,
            "DicomScuTimeout": 30,
            "DicomScpTimeout": 30,
            "HttpTimeout": 30,
            **self.extra_config,
        }

    def start(self, timeout: float = 30.0) -> OrthancInstance:
        """Writes the configuration, starts Orthanc and waits until its REST API answers."""
        import json

        if self.process is not None:
            raise RuntimeError(f"Orthanc {self.name} is already running")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.base_dir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        log_path = self.base_dir / "orthanc.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [ORTHANC_BINARY, str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=peer_environment(),
                cwd=self.base_dir,
            )
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                self.process = None
                raise RuntimeError(
                    f"Orthanc {self.name} exited with code {process.returncode} while starting:\n"
                    f"{_tail(log_path)}"
                )
            try:
                return self.session.get(f"{self.url}/system", timeout=1).ok
            except requests.RequestException:
                return False

        if wait_until(answers, timeout, interval=0.1, raising=False):
            wait_for_port(LOOPBACK, self.dicom_port, process, self.name, timeout)
            return self
        self.stop()
        raise RuntimeError(
            f"Orthanc {self.name} did not answer on {self.url} within {timeout} s:\n"
            f"{_tail(log_path)}"
        )

    def stop(self) -> None:
        """Stops the process; its storage stays in `base_dir` unless it was a temporary one."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        self.session.close()
        if self.remove_base_dir_on_stop:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def server_config(self, name: str | None = None, **overrides) -> ServerConfig:
        """A `ServerConfig` for this Orthanc with every DIMSE and DICOMweb capability enabled."""
        values: dict[str, Any] = dict(
            name=name or self.name,
            ae_title=self.ae_title,
            host=LOOPBACK,
            port=self.dicom_port,
            patient_root_find_support=True,
            patient_root_get_support=True,
            patient_root_move_support=True,
            study_root_find_support=True,
            study_root_get_support=True,
            study_root_move_support=True,
            store_scp_support=True,
            dicomweb_root_url=self.dicomweb_url,
            dicomweb_qido_support=True,
            dicomweb_wado_support=True,
            dicomweb_stow_support=True,
        )
        values.update(overrides)
        return ServerConfig(**values)

    # --- REST helpers -------------------------------------------------------------------------

    def rest(self, method: str, path: str, **kwargs) -> requests.Response:
        """Calls the REST API and raises on HTTP errors."""
        response = self.session.request(method, f"{self.url}{path}", timeout=60, **kwargs)
        response.raise_for_status()
        return response

    def add_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        """Registers a DICOM modality at runtime (e.g. a C-MOVE destination)."""
        self.rest("PUT", f"/modalities/{name}", json={"AET": ae_title, "Host": host, "Port": port})
        self.modalities[name] = (ae_title, host, port)

    def remove_modality(self, name: str) -> None:
        self.rest("DELETE", f"/modalities/{name}")
        self.modalities.pop(name, None)

    def upload(self, datasets: Iterable[Dataset]) -> list[str]:
        """Stores instances through the REST API (POST /instances); returns Orthanc's IDs."""
        ids = []
        for ds in datasets:
            response = self.rest(
                "POST",
                "/instances",
                data=dataset_to_bytes(ds),
                headers={"Content-Type": "application/dicom"},
            )
            ids.append(response.json()["ID"])
        return ids

    def reset(self) -> None:
        """Deletes every patient (and so every study, series and instance)."""
        for patient_id in self.rest("GET", "/patients").json():
            self.rest("DELETE", f"/patients/{patient_id}")

    def delete_study(self, study_instance_uid: str) -> None:
        """Deletes one study by its StudyInstanceUID (no error if it is absent)."""
        ids = self.rest(
            "POST",
            "/tools/lookup",
            data=study_instance_uid,
        ).json()
        for item in ids:
            if item.get("Type") == "Study":
                self.rest("DELETE", f"/studies/{item['ID']}")

    def study_instance_uids(self, study_instance_uid: str) -> set[str]:
        """The SOPInstanceUIDs stored for a study (empty when the study is absent)."""
        found = self.rest(
            "POST",
            "/tools/find",
            json={
                "Level": "Instance",
                "Query": {"StudyInstanceUID": study_instance_uid},
                "Expand": True,
            },
        ).json()
        return {item["MainDicomTags"]["SOPInstanceUID"] for item in found}

    def _instance_id(self, sop_instance_uid: str) -> str:
        found = self.rest(
            "POST",
            "/tools/find",
            json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}},
        ).json()
        if not found:
            raise LookupError(f"instance {sop_instance_uid} not in Orthanc {self.name}")
        return found[0]

    def instance_transfer_syntax(self, sop_instance_uid: str) -> str:
        """The transfer syntax UID an instance is stored with."""
        instance_id = self._instance_id(sop_instance_uid)
        return self.rest("GET", f"/instances/{instance_id}/metadata?expand").json()[
            "TransferSyntax"
        ]

    def instance_file(self, sop_instance_uid: str) -> bytes:
        """The DICOM file of an instance as Orthanc stored it."""
        return self.rest("GET", f"/instances/{self._instance_id(sop_instance_uid)}/file").content

    def statistics(self) -> dict:
        return self.rest("GET", "/statistics").json()

    def move_study(self, study_instance_uid: str, destination: str) -> None:
        """Orthanc's own C-MOVE (SCU side) of a study to a registered modality, synchronously."""
        self.rest(
            "POST",
            f"/modalities/{destination}/store",
            json={"Resources": self._study_ids(study_instance_uid), "Synchronous": True},
        )

    def _study_ids(self, study_instance_uid: str) -> list[str]:
        found = self.rest(
            "POST",
            "/tools/find",
            json={"Level": "Study", "Query": {"StudyInstanceUID": study_instance_uid}},
        ).json()
        return list(found)


def start_orthanc(
    name: str,
    modalities: Mapping[str, Modality] | None = None,
    base_dir: str | Path | None = None,
    ae_title: str = "",
    extra_config: Mapping[str, Any] | None = None,
) -> OrthancInstance:
    """Starts an Orthanc with the DICOMweb plugin on free loopback ports and returns it.

    Args:
        name: instance name; also its AE title (upper case) unless `ae_title` is given.
        modalities: `DicomModalities` entries, name -> (AE title, host, port).
        base_dir: storage folder; a new temporary folder when omitted.
        ae_title: AE title, when it should differ from the name.
        extra_config: more Orthanc configuration (e.g. "LuaScripts"), overriding the defaults.

    The caller must call `stop()` (the fixtures do). Skips/fails the test if Orthanc is missing.
    """
    require_orthanc()
    temporary = base_dir is None
    if base_dir is None:
        base_dir = tempfile.mkdtemp(prefix=f"adit-orthanc-{name.lower()}-")
    instance = OrthancInstance(
        name=name,
        base_dir=Path(base_dir),
        modalities=dict(modalities or {}),
        ae_title=ae_title,
        remove_base_dir_on_stop=temporary,
        extra_config=dict(extra_config or {}),
    )
    return instance.start()


@dataclass
class QrScpInstance:
    """pynetdicom's `qrscp` application (Verification, Storage, Query/Retrieve SCP).

    Its C-MOVE destinations are fixed at start (`move_destinations`: AE title -> (host, port)).
    It matches only a few keys (PatientID, PatientName, StudyInstanceUID, StudyDate, StudyTime,
    AccessionNumber, StudyID, SeriesInstanceUID, Modality, SeriesNumber, SOPInstanceUID,
    InstanceNumber) and silently drops others from queries.
    """

    base_dir: Path
    ae_title: str = "QRSCP"
    port: int = field(default_factory=free_port)
    move_destinations: dict[str, tuple[str, int]] = field(default_factory=dict)
    process: subprocess.Popen | None = field(default=None, repr=False)

    def config_text(self) -> str:
        lines = [
            "[DEFAULT]",
            f"    ae_title: {self.ae_title}",
            f"    port: {self.port}",
            "    max_pdu: 0",
            "    acse_timeout: 30",
            "    dimse_timeout: 30",
            "    network_timeout: 30",
            f"    bind_address: {LOOPBACK}",
            f"    instance_location: {self.base_dir / 'instances'}",
            f"    database_location: {self.base_dir / 'instances.sqlite'}",
            "    log_identifier: False",
        ]
        for aet, (host, port) in self.move_destinations.items():
            lines += [f"[{aet}]", f"    address: {host}", f"    port: {port}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 30.0) -> QrScpInstance:
        if self.process is not None:
            raise RuntimeError("qrscp is already running")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "instances").mkdir(exist_ok=True)
        config_path = self.base_dir / "qrscp.ini"
        config_path.write_text(self.config_text())
        log_path = self.base_dir / "qrscp.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pynetdicom",
                    "qrscp",
                    "-c",
                    str(config_path),
                    "-ll",
                    "warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=peer_environment(),
                cwd=self.base_dir,
            )
        try:
            wait_for_port(LOOPBACK, self.port, self.process, "qrscp", timeout)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"{error}:\n{_tail(log_path)}") from None
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def server_config(self, name: str = "qrscp", **overrides) -> ServerConfig:
        """A `ServerConfig` for this qrscp (DIMSE only, every model supported)."""
        values: dict[str, Any] = dict(
            name=name,
            ae_title=self.ae_title,
            host=LOOPBACK,
            port=self.port,
            patient_root_find_support=True,
            patient_root_get_support=True,
            patient_root_move_support=True,
            study_root_find_support=True,
            study_root_get_support=True,
            study_root_move_support=True,
            store_scp_support=True,
        )
        values.update(overrides)
        return ServerConfig(**values)

    def upload(self, datasets: Iterable[Dataset]) -> None:
        """Stores instances with C-STORE (qrscp has no REST API)."""
        from adit.core.dicom.config import LocalConfig
        from adit.core.dicom.dimse import DimseConnector

        DimseConnector(self.server_config(), LocalConfig(calling_ae_title="PEERS")).send_c_store(
            list(datasets)
        )


def start_qrscp(
    move_destinations: Mapping[str, tuple[str, int]] | None = None,
    base_dir: str | Path | None = None,
    ae_title: str = "QRSCP",
) -> QrScpInstance:
    """Starts pynetdicom's qrscp on a free loopback port with its own database and returns it."""
    try:
        import sqlalchemy  # noqa: F401  (qrscp needs it)
    except ImportError:
        skip_or_fail("pynetdicom's qrscp needs sqlalchemy (uv sync --group dev)")
    if base_dir is None:
        base_dir = tempfile.mkdtemp(prefix="adit-qrscp-")
    instance = QrScpInstance(
        base_dir=Path(base_dir),
        ae_title=ae_title,
        move_destinations=dict(move_destinations or {}),
    )
    return instance.start()
