"""Demo PACS for trying ADIT out: start them, fill them with synthetic patients, register them.

Used by `cli demo`, by the management commands ``populate_example_data`` and
``populate_demo_pacs``, and by tests. Nothing here needs Django at import time (so `cli.py` can
start the demo PACS before Django is set up); only `register_demo_nodes` and
`receiver_address` read the database or the settings.

Two demo PACS run side by side: Orthanc with the DICOMweb plugin when it is installed, else
pynetdicom's ``qrscp``. Each knows the other and ADIT's receiver as C-MOVE destinations. Their
storage lives under ``<data dir>/demo-pacs/`` so loaded studies survive restarts, and the
addresses of the running ones are written to ``<data dir>/demo-pacs/running.json`` for the
management commands.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from adit.core.dicom.config import LocalConfig, ServerConfig, Timeouts

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEMO_DIR_NAME = "demo-pacs"
STATE_FILE_NAME = "running.json"

DEFAULT_DICOM_PORTS = (7501, 7502)
DEFAULT_HTTP_PORTS = (8501, 8502)
DEMO_NAMES = ("Demo PACS 1", "Demo PACS 2")
DEMO_AE_TITLES = ("DEMO_PACS_1", "DEMO_PACS_2")
DOWNLOADS_FOLDER_NAME = "Downloads"

ORTHANC_BINARY = os.environ.get("ORTHANC_BINARY", "/usr/sbin/Orthanc")
ORTHANC_DICOMWEB_PLUGIN = os.environ.get(
    "ORTHANC_DICOMWEB_PLUGIN", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
)


class DemoError(Exception):
    """A demo PACS could not be started, reached or filled; the message says why."""


@dataclass
class DemoPacs:
    """One demo PACS: a running peer we started, or a configured server we only talk to.

    Attributes:
        name: node name in ADIT.
        ae_title: its AE title ("" when only the REST API is known).
        host: DIMSE host ("" when unknown).
        dicom_port: DIMSE port (0 when unknown).
        rest_url: Orthanc's REST API base URL ("" for qrscp).
        kind: "orthanc" or "qrscp".
    """

    name: str
    ae_title: str = ""
    host: str = LOOPBACK
    dicom_port: int = 0
    rest_url: str = ""
    kind: str = "orthanc"
    peer: Any = field(default=None, repr=False, compare=False)
    """The running OrthancInstance/QrScpInstance when we started it."""

    @property
    def dicomweb_url(self) -> str:
        return f"{self.rest_url}/dicom-web" if self.rest_url else ""

    @property
    def has_dimse(self) -> bool:
        return bool(self.ae_title and self.host and self.dicom_port)

    def server_config(self) -> ServerConfig:
        """The DICOM layer's config for this PACS (every capability it offers enabled)."""
        dimse = self.has_dimse
        dicomweb = bool(self.rest_url)
        return ServerConfig(
            name=self.name,
            ae_title=self.ae_title,
            host=self.host if dimse else "",
            port=self.dicom_port if dimse else 0,
            patient_root_find_support=dimse,
            patient_root_get_support=dimse,
            patient_root_move_support=dimse,
            study_root_find_support=dimse,
            study_root_get_support=dimse,
            study_root_move_support=dimse,
            store_scp_support=dimse,
            dicomweb_root_url=self.dicomweb_url,
            dicomweb_qido_support=dicomweb,
            dicomweb_wado_support=dicomweb,
            dicomweb_stow_support=dicomweb,
        )

    def answers(self, timeout: float = 3.0) -> bool:
        """Whether the PACS is reachable (REST API for Orthanc, else C-ECHO)."""
        if self.rest_url:
            try:
                return requests.get(f"{self.rest_url}/system", timeout=timeout).ok
            except requests.RequestException:
                return False
        if not self.has_dimse:
            return False
        from adit.core.dicom.dimse import DimseConnector
        from adit.core.dicom.errors import DicomError

        try:
            DimseConnector(self.server_config(), _local_config(timeout)).send_c_echo()
        except (DicomError, OSError):
            return False
        return True

    def stop(self) -> None:
        """Stops the peer if we started it (its storage stays)."""
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.stop()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ae_title": self.ae_title,
            "host": self.host,
            "dicom_port": self.dicom_port,
            "rest_url": self.rest_url,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DemoPacs:
        known = {"name", "ae_title", "host", "dicom_port", "rest_url", "kind"}
        return cls(**{key: value for key, value in values.items() if key in known})


# --- starting ---------------------------------------------------------------------------------


def orthanc_available() -> bool:
    return Path(ORTHANC_BINARY).is_file() and Path(ORTHANC_DICOMWEB_PLUGIN).is_file()


def qrscp_available() -> bool:
    try:
        import sqlalchemy  # noqa: F401  (pynetdicom's qrscp stores its index with it)
    except ImportError:
        return False
    return True


def receiver_address() -> tuple[str, str, int]:
    """ADIT's receiver as a C-MOVE destination: (AE title, host, port).

    From the Django settings when they are configured, else from the same environment
    variables with the same defaults (so `cli.py` can call this before Django starts).
    """
    try:
        from django.conf import settings

        ae_title = settings.RECEIVER_AE_TITLE
        host = settings.STORE_SCP_HOST
        port = int(settings.STORE_SCP_PORT)
    except Exception:  # settings not configured (e.g. in cli.py before Django starts)
        ae_title = os.environ.get("RECEIVER_AE_TITLE", "ADIT")
        host = os.environ.get("STORE_SCP_HOST", LOOPBACK)
        port = int(os.environ.get("STORE_SCP_PORT", "11112"))
    if host in ("", "0.0.0.0", "::"):
        host = LOOPBACK  # the receiver listens everywhere; the demo PACS reach it on loopback
    return ae_title, host, port


def demo_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / DEMO_DIR_NAME


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _choose_port(wanted: int, taken: set[int]) -> int:
    port = wanted if wanted and wanted not in taken and _port_is_free(wanted) else _free_port()
    if wanted and port != wanted:
        logger.warning("Port %d is in use; a demo PACS uses port %d instead", wanted, port)
    taken.add(port)
    return port


def start_demo_pacs(
    data_dir: str | Path,
    dicom_ports: Sequence[int] = DEFAULT_DICOM_PORTS,
    http_ports: Sequence[int] = DEFAULT_HTTP_PORTS,
    receiver: tuple[str, str, int] | None = None,
    backend: str = "auto",
) -> list[DemoPacs]:
    """Starts the two demo PACS and returns them (stop them with `stop_demo_pacs`).

    Args:
        data_dir: ADIT's data folder; storage goes to ``<data_dir>/demo-pacs/<AE title>``.
        dicom_ports: DIMSE ports of the two PACS; a port in use is replaced by a free one.
            0 = any free port.
        http_ports: REST/DICOMweb ports of the two Orthanc instances (same rule).
        receiver: ADIT's receiver (AE title, host, port) as C-MOVE destination; from the
            settings/environment when omitted.
        backend: "orthanc", "qrscp" or "auto" (Orthanc when installed, else qrscp).

    Raises:
        DemoError: if neither Orthanc nor qrscp can run, or a PACS does not start.
    """
    if len(dicom_ports) != 2 or len(http_ports) != 2:
        raise DemoError("start_demo_pacs: give exactly two DICOM ports and two HTTP ports")
    if backend == "auto":
        backend = "orthanc" if orthanc_available() else "qrscp"
    if backend == "orthanc" and not orthanc_available():
        raise DemoError(
            f"Orthanc or its DICOMweb plugin is missing ({ORTHANC_BINARY}, "
            f"{ORTHANC_DICOMWEB_PLUGIN}); install Debian's orthanc and orthanc-dicomweb"
        )
    if backend == "qrscp" and not qrscp_available():
        raise DemoError(
            "Neither Orthanc nor pynetdicom's qrscp (needs sqlalchemy: uv sync --group dev) "
            "is available for the demo PACS"
        )
    if backend not in ("orthanc", "qrscp"):
        raise DemoError(f"Unknown demo PACS backend {backend!r}; use orthanc, qrscp or auto")

    receiver_ae, receiver_host, receiver_port = receiver or receiver_address()
    base = demo_dir(data_dir)
    base.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    ports = [_choose_port(port, taken) for port in dicom_ports]
    started: list[DemoPacs] = []
    try:
        if backend == "orthanc":
            web_ports = [_choose_port(port, taken) for port in http_ports]
            started = _start_orthanc_pair(base, ports, web_ports, receiver_ae, receiver_host,
                                          receiver_port)  # fmt: skip
        else:
            started = _start_qrscp_pair(base, ports, receiver_ae, receiver_host, receiver_port)
    except Exception as error:
        stop_demo_pacs(started)
        if isinstance(error, DemoError):
            raise
        raise DemoError(f"A demo PACS did not start: {error}") from error
    write_state(data_dir, started)
    return started


def _start_orthanc_pair(
    base: Path,
    dicom_ports: list[int],
    http_ports: list[int],
    receiver_ae: str,
    receiver_host: str,
    receiver_port: int,
) -> list[DemoPacs]:
    from adit.core.dicom.testing.peers import OrthancInstance

    instances = [
        OrthancInstance(
            name=name,
            base_dir=base / ae_title,
            ae_title=ae_title,
            dicom_port=dicom_port,
            http_port=http_port,
        )
        for name, ae_title, dicom_port, http_port in zip(
            DEMO_NAMES, DEMO_AE_TITLES, dicom_ports, http_ports, strict=True
        )
    ]
    for instance, other in ((instances[0], instances[1]), (instances[1], instances[0])):
        instance.modalities[other.ae_title] = other.as_modality
        instance.modalities[receiver_ae] = (receiver_ae, receiver_host, receiver_port)
    pacs: list[DemoPacs] = []
    for instance in instances:
        instance.start()
        pacs.append(
            DemoPacs(
                name=instance.name,
                ae_title=instance.ae_title,
                dicom_port=instance.dicom_port,
                rest_url=instance.url,
                kind="orthanc",
                peer=instance,
            )
        )
    return pacs


def _start_qrscp_pair(
    base: Path, dicom_ports: list[int], receiver_ae: str, receiver_host: str, receiver_port: int
) -> list[DemoPacs]:
    from adit.core.dicom.testing.peers import QrScpInstance

    pairs = zip(DEMO_AE_TITLES, dicom_ports, strict=True)
    destinations = {ae: (LOOPBACK, port) for ae, port in pairs}
    destinations[receiver_ae] = (receiver_host, receiver_port)
    pacs: list[DemoPacs] = []
    for name, ae_title, port in zip(DEMO_NAMES, DEMO_AE_TITLES, dicom_ports, strict=True):
        instance = QrScpInstance(
            base_dir=base / ae_title,
            ae_title=ae_title,
            port=port,
            move_destinations={k: v for k, v in destinations.items() if k != ae_title},
        )
        instance.start()
        pacs.append(
            DemoPacs(name=name, ae_title=ae_title, dicom_port=port, kind="qrscp", peer=instance)
        )
    return pacs


def stop_demo_pacs(pacs: Iterable[DemoPacs], data_dir: str | Path | None = None) -> None:
    """Stops the demo PACS we started; with `data_dir`, forgets them in the state file."""
    for item in pacs:
        try:
            item.stop()
        except Exception:
            logger.exception("Stopping the demo PACS %s failed", item.name)
    if data_dir is not None:
        (demo_dir(data_dir) / STATE_FILE_NAME).unlink(missing_ok=True)


def write_state(data_dir: str | Path, pacs: Iterable[DemoPacs]) -> Path:
    path = demo_dir(data_dir) / STATE_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([item.to_dict() for item in pacs], indent=2))
    return path


def known_demo_pacs(data_dir: str | Path) -> list[DemoPacs]:
    """The demo PACS last started for `data_dir`, else the default Orthanc pair's addresses."""
    path = demo_dir(data_dir) / STATE_FILE_NAME
    if path.is_file():
        try:
            return [DemoPacs.from_dict(item) for item in json.loads(path.read_text())]
        except (ValueError, TypeError) as error:
            raise DemoError(f"The demo PACS state file {path} is unreadable: {error}") from error
    return [
        DemoPacs(
            name=name,
            ae_title=ae_title,
            dicom_port=dicom_port,
            rest_url=f"http://{LOOPBACK}:{http_port}",
        )
        for name, ae_title, dicom_port, http_port in zip(
            DEMO_NAMES, DEMO_AE_TITLES, DEFAULT_DICOM_PORTS, DEFAULT_HTTP_PORTS, strict=True
        )
    ]


# --- demo studies -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoStudy:
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    study_date: str
    description: str
    series: tuple[tuple[str, int], ...]
    compressed: bool = False


DEMO_STUDIES: tuple[DemoStudy, ...] = (
    DemoStudy("DEMO0001", "Schneider^Lena", "19680412", "F", "20240115", "CT Thorax",
              (("CT", 24), ("SR", 1))),
    DemoStudy("DEMO0001", "Schneider^Lena", "19680412", "F", "20240702", "CT Thorax follow-up",
              (("CT", 24),)),
    DemoStudy("DEMO0002", "Okafor^James", "19810923", "M", "20231103", "MRT Schädel",
              (("MR", 12), ("MR", 12)), compressed=True),
    DemoStudy("DEMO0003", "Lindqvist^Maja", "19950218", "F", "20240305", "Röntgen Thorax",
              (("CR", 2),)),
    DemoStudy("DEMO0003", "Lindqvist^Maja", "19950218", "F", "20240611", "MRT Knie rechts",
              (("MR", 16),)),
    DemoStudy("DEMO0003", "Lindqvist^Maja", "19950218", "F", "20241120", "Röntgen Knie",
              (("CR", 2),)),
    DemoStudy("DEMO0004", "Moreau^Claire", "19540730", "F", "20240820", "CT Abdomen",
              (("CT", 20),)),
    DemoStudy("DEMO0005", "Tanaka^Hiroshi", "19770105", "M", "20240410", "Röntgen Thorax",
              (("CR", 2),)),
    DemoStudy("DEMO0005", "Tanaka^Hiroshi", "19770105", "M", "20240412", "CT Thorax",
              (("CT", 20),)),
)  # fmt: skip
"""A few patients with 1-3 studies each: CT, MR, CR, one SR, one compressed (RLE) series."""


def demo_study_datasets(study: DemoStudy, index: int) -> list[Dataset]:
    """The instances of one demo study; deterministic, so loading twice changes nothing."""
    from adit.core.dicom.testing.synthetic import make_study

    return make_study(
        study.patient_id,
        patient_name=study.patient_name,
        birth_date=study.birth_date,
        patient_sex=study.sex,
        study_date=study.study_date,
        study_time=f"{8 + index % 9:02d}{(index * 7) % 60:02d}00",
        study_description=study.description,
        series=study.series,
        compressed_series=study.compressed,
        institution_name="ADIT Demo Hospital",
        seed=f"adit-demo-{index}-{study.patient_id}",
        rows=64,
        columns=64,
    )


def demo_datasets() -> list[list[Dataset]]:
    """Every demo study as a list of its instances."""
    return [demo_study_datasets(study, index) for index, study in enumerate(DEMO_STUDIES)]


@dataclass
class LoadResult:
    loaded_studies: int = 0
    skipped_studies: int = 0
    instances: int = 0


def load_demo_studies(pacs: DemoPacs) -> LoadResult:
    """Stores the demo studies in `pacs`; studies it holds completely already are skipped.

    Orthanc is filled through its REST API, other PACS through C-STORE (existence checked with
    C-FIND).

    Raises:
        DemoError: if the PACS cannot be reached or refuses instances.
    """
    result = LoadResult()
    for study in demo_datasets():
        study_uid = str(study[0].StudyInstanceUID)
        if _stored_instance_count(pacs, study_uid) >= len(study):
            result.skipped_studies += 1
            continue
        _store(pacs, study)
        result.loaded_studies += 1
        result.instances += len(study)
    return result


def _local_config(timeout: float = 30.0) -> LocalConfig:
    return LocalConfig(
        calling_ae_title="ADIT_DEMO",
        timeouts=Timeouts(connection=timeout, acse=timeout, dimse=timeout, network=timeout),
    )


def _rest(pacs: DemoPacs, method: str, path: str, **kwargs) -> requests.Response:
    try:
        response = requests.request(method, f"{pacs.rest_url}{path}", timeout=60, **kwargs)
        response.raise_for_status()
    except requests.RequestException as error:
        raise DemoError(f"Orthanc REST API of {pacs.name} ({pacs.rest_url}): {error}") from error
    return response


def _stored_instance_count(pacs: DemoPacs, study_uid: str) -> int:
    if pacs.rest_url:
        found = _rest(
            pacs,
            "POST",
            "/tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}},
        ).json()
        return len(found)
    from adit.core.dicom.errors import DicomError
    from adit.core.dicom.operator import DicomOperator
    from adit.core.dicom.query import QueryDataset

    operator = DicomOperator(pacs.server_config(), _local_config())
    count = 0
    try:
        # Counted at IMAGE level: some PACS (qrscp) do not fill NumberOfStudyRelatedInstances.
        series_query = QueryDataset.create(StudyInstanceUID=study_uid, SeriesInstanceUID=None)
        for series in operator.find_series(series_query):
            image_query = QueryDataset.create(
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series.SeriesInstanceUID,
                SOPInstanceUID=None,
            )
            count += sum(1 for _ in operator.find_images(image_query))
    except DicomError as error:
        raise DemoError(f"C-FIND on {pacs.name}: {error}") from error
    return count


def _store(pacs: DemoPacs, datasets: list[Dataset]) -> None:
    if pacs.rest_url:
        for ds in datasets:
            _rest(
                pacs,
                "POST",
                "/instances",
                data=_to_bytes(ds),
                headers={"Content-Type": "application/dicom"},
            )
        return
    from adit.core.dicom.dimse import DimseConnector
    from adit.core.dicom.errors import DicomError

    try:
        DimseConnector(pacs.server_config(), _local_config()).send_c_store(datasets)
    except DicomError as error:
        raise DemoError(f"C-STORE to {pacs.name}: {error}") from error


def _to_bytes(ds: Dataset) -> bytes:
    import io

    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def reset_pacs(pacs: DemoPacs) -> int:
    """Deletes every patient from an Orthanc (REST API); returns how many were deleted."""
    if not pacs.rest_url:
        raise DemoError(
            f"{pacs.name} has no Orthanc REST API; only an Orthanc can be reset (--reset)"
        )
    patients = _rest(pacs, "GET", "/patients").json()
    for patient in patients:
        _rest(pacs, "DELETE", f"/patients/{patient}")
    return len(patients)


def delete_demo_storage(data_dir: str | Path) -> None:
    """Removes the demo PACS' storage folder (stop them first)."""
    shutil.rmtree(demo_dir(data_dir), ignore_errors=True)


# --- ADIT nodes -------------------------------------------------------------------------------


def register_demo_nodes(
    pacs: Iterable[DemoPacs],
    groups: Iterable[Any] = (),
    downloads_dir: str | Path | None = None,
) -> list[Any]:
    """Creates or updates the DicomServer rows for `pacs` and a "Downloads" DicomFolder.

    The group "Default" (the superuser's group), the active group of every superuser and
    `groups` may use the servers as source and destination and the folder as destination.

    Args:
        pacs: the demo PACS to register.
        groups: further groups that get access (e.g. the example groups).
        downloads_dir: folder of the "Downloads" node; ``ADIT_DATA_DIR / "downloads"`` when
            omitted.

    Returns:
        The registered nodes (servers first, then the folder).
    """
    from django.conf import settings
    from django.contrib.auth.models import Group
    from django.db import transaction

    from adit.accounts.models import User
    from adit.core.models import DicomFolder, DicomNodeGroupAccess, DicomServer

    default_group, _ = Group.objects.get_or_create(name="Default")
    access_groups = {default_group.pk: default_group}
    for user in User.objects.filter(is_superuser=True, active_group__isnull=False):
        assert user.active_group is not None
        access_groups[user.active_group.pk] = user.active_group
    for group in groups:
        access_groups[group.pk] = group

    folder_path = Path(downloads_dir or Path(settings.ADIT_DATA_DIR) / "downloads").resolve()
    folder_path.mkdir(parents=True, exist_ok=True)

    nodes: list[Any] = []
    with transaction.atomic():  # pyright: ignore[reportGeneralTypeIssues]
        for item in pacs:
            config = item.server_config()
            server = (
                DicomServer.objects.filter(ae_title=config.ae_title).first()
                or DicomServer.objects.filter(name=config.name).first()
                or DicomServer()
            )
            for key in (
                "name",
                "ae_title",
                "host",
                "port",
                *DicomServer.DIMSE_FLAGS,
                "dicomweb_root_url",
                *DicomServer.DICOMWEB_FLAGS,
            ):
                value = getattr(config, key)
                if key == "port":
                    value = value or None  # the model stores "no DIMSE port" as NULL
                setattr(server, key, value)
            server.active = True
            server.full_clean()
            server.save()
            nodes.append(server)
        folder = DicomFolder.objects.filter(name=DOWNLOADS_FOLDER_NAME).first() or DicomFolder(
            name=DOWNLOADS_FOLDER_NAME
        )
        folder.path = str(folder_path)
        folder.active = True
        folder.full_clean()
        folder.save()
        nodes.append(folder)

        for node in nodes:
            is_server = isinstance(node, DicomServer)
            for group in access_groups.values():
                DicomNodeGroupAccess.objects.update_or_create(
                    node=node,
                    group=group,
                    defaults={"source": is_server, "destination": True},
                )
    return nodes
