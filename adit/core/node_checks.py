"""Quick reachability checks of a DICOM server ("test connection" in the admin).

Plain functions over `ServerConfig`, no Django models: a C-ECHO over DIMSE and a QIDO-RS probe
(`GET <root>/<qido prefix>/studies?limit=1`) over DICOMweb. Each returns a `CheckResult` instead
of raising, so that the caller can show every outcome side by side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests

from adit.core.dicom.config import LocalConfig, ServerConfig, Timeouts
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.errors import DicomError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: which service, whether it worked, and a human-readable why."""

    service: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.service} {'succeeded' if self.ok else 'failed'}: {self.detail}"


def c_echo(
    config: ServerConfig, calling_ae_title: str, timeout: float = DEFAULT_TIMEOUT
) -> CheckResult:
    """Send one C-ECHO to the server's DIMSE address (on the same stack transfers use)."""
    service = "C-ECHO"
    if not config.supports_dimse:
        return CheckResult(service, False, "no DIMSE address (AE title, host, port) configured")
    address = f"{config.ae_title}@{config.host}:{config.port}"
    local = LocalConfig(
        calling_ae_title=calling_ae_title,
        timeouts=Timeouts(connection=timeout, acse=timeout, dimse=timeout, network=timeout),
    )
    try:
        DimseConnector(config, local).send_c_echo()
    except DicomError as error:
        # The connector's messages start with "C-ECHO on <server>: "; the check names the
        # address instead, which is what an administrator compares with the PACS's settings.
        reason = str(error).removeprefix(f"C-ECHO on {config}: ")
        return CheckResult(service, False, f"{address}: {reason}")
    except Exception as error:  # e.g. an unresolvable host name
        return CheckResult(service, False, f"could not connect to {address}: {error}")
    return CheckResult(service, True, f"{address} answered")


def qido_url(config: ServerConfig) -> str:
    """The URL of the QIDO-RS studies resource of the server."""
    url = config.dicomweb_root_url.rstrip("/")
    prefix = config.dicomweb_qido_prefix.strip("/")
    if prefix:
        url = f"{url}/{prefix}"
    return f"{url}/studies"


def qido_probe(config: ServerConfig, timeout: float = DEFAULT_TIMEOUT) -> CheckResult:
    """Ask the server's QIDO-RS for at most one study."""
    service = "QIDO-RS"
    if not config.dicomweb_root_url:
        return CheckResult(service, False, "no DICOMweb root URL configured")
    url = qido_url(config)
    headers = {"Accept": "application/dicom+json"}
    if config.dicomweb_authorization_header:
        headers["Authorization"] = config.dicomweb_authorization_header
    try:
        response = requests.get(url, params={"limit": "1"}, headers=headers, timeout=timeout)
    except requests.Timeout:
        return CheckResult(service, False, f"no answer from {url} within {timeout:g} s")
    except requests.RequestException as err:
        return CheckResult(service, False, f"could not reach {url}: {err}")

    if response.status_code in (401, 403):
        return CheckResult(
            service,
            False,
            f"{url} refused access (HTTP {response.status_code}); check the Authorization header",
        )
    if response.status_code == 204:
        return CheckResult(service, True, f"{url} answered (no studies)")
    if response.status_code != 200:
        return CheckResult(service, False, f"{url} answered HTTP {response.status_code}")
    try:
        studies = response.json()
    except ValueError:
        return CheckResult(service, False, f"{url} answered HTTP 200 but not with DICOM JSON")
    if not isinstance(studies, list):
        return CheckResult(service, False, f"{url} answered HTTP 200 but not with a JSON list")
    return CheckResult(service, True, f"{url} answered")


def check_server(
    config: ServerConfig, calling_ae_title: str, timeout: float = DEFAULT_TIMEOUT
) -> list[CheckResult]:
    """Run every check that the server's configuration allows (C-ECHO and/or QIDO-RS)."""
    results = []
    if config.supports_dimse:
        results.append(c_echo(config, calling_ae_title, timeout))
    if config.dicomweb_root_url:
        results.append(qido_probe(config, timeout))
    if not results:
        results.append(CheckResult("connection", False, "neither DIMSE nor DICOMweb configured"))
    for result in results:
        logger.info("Connection check of %s: %s", config.name, result)
    return results
