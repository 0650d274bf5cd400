"""Plain configuration values the DICOM layer works with (no Django models here).

`DicomServer` models turn themselves into a `ServerConfig`; Django settings become a
`LocalConfig`. Scripts and tests build both directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom import config as pydicom_config


@dataclass(frozen=True)
class ServerConfig:
    """A remote DICOM server reachable over DIMSE and/or DICOMweb."""

    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    patient_root_find_support: bool = False
    patient_root_get_support: bool = False
    patient_root_move_support: bool = False
    study_root_find_support: bool = False
    study_root_get_support: bool = False
    study_root_move_support: bool = False
    store_scp_support: bool = False
    dicomweb_root_url: str = ""
    dicomweb_qido_prefix: str = ""
    dicomweb_wado_prefix: str = ""
    dicomweb_stow_prefix: str = ""
    dicomweb_qido_support: bool = False
    dicomweb_wado_support: bool = False
    dicomweb_stow_support: bool = False
    dicomweb_authorization_header: str = ""
    max_search_results: int = 200
    # How many associations/requests ADIT may hold open to this server at once (all workers).
    max_associations: int = 4

    @property
    def supports_dimse(self) -> bool:
        return bool(self.ae_title and self.host and self.port)

    def __str__(self) -> str:
        return f"{self.name} ({self.ae_title or self.dicomweb_root_url})"


@dataclass(frozen=True)
class Timeouts:
    """Network timeouts in seconds."""

    connection: float = 10.0
    acse: float = 30.0
    dimse: float = 60.0
    network: float = 60.0
    http: float = 60.0


@dataclass(frozen=True)
class LocalConfig:
    """ADIT's own side of DICOM networking."""

    calling_ae_title: str = "ADIT"
    receiver_ae_title: str = "ADIT"
    file_transmit_host: str = "127.0.0.1"
    file_transmit_port: int = 14638
    timeouts: Timeouts = field(default_factory=Timeouts)


def prepare_dicom_libraries() -> None:
    """pydicom settings that cost a transfer CPU time and buy it nothing.

    pydicom checks every value set on or read from a data set against its VR and only warns
    about what does not fit (about a tenth of a relay's CPU time). ADIT validates what users
    enter itself and handles values from a PACS that cannot be converted, so these checks are
    switched off. Called before each association, so scripts using the DICOM layer get it too.
    """
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
