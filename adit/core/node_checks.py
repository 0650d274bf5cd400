"""Quick reachability checks of a DICOM server ("test connection" in the admin).

Plain functions over `ServerConfig`, no Django models: a C-ECHO over DIMSE and a QIDO-RS probe
(`GET <root>/<qido prefix>/studies?limit=1`) over DICOMweb. Each returns a `CheckResult` instead
of raising, so that the caller can show every outcome side by side.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import requests
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from adit.core.dicom.config import ServerConfig

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


def _set_tcp_nodelay(event: evt.Event) -> None:
    # Without TCP_NODELAY every DIMSE round trip waits for Nagle/delayed-ACK (~40 ms).
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def c_echo(
    config: ServerConfig, calling_ae_title: str, timeout: float = DEFAULT_TIMEOUT
) -> CheckResult:
    """Send one C-ECHO to the server's DIMSE address."""
    service = "C-ECHO"
    if not config.supports_dimse:
        return CheckResult(service, False, "no DIMSE address (AE title, host, port) configured")
    address = f"{config.ae_title}@{config.host}:{config.port}"

    ae = AE(ae_title=calling_ae_title)
    ae.add_requested_context(Verification)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    try:
        assoc = ae.associate(
            config.host,
            config.port,
            ae_title=config.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, _set_tcp_nodelay)],
        )
    except Exception as err:  # e.g. an unresolvable host name
        return CheckResult(service, False, f"could not connect to {address}: {err}")

    try:
        if assoc.is_rejected:
            reason = _rejection_reason(assoc)
            return CheckResult(service, False, f"association rejected by {address}: {reason}")
        if not assoc.is_established:
            return CheckResult(
                service,
                False,
                f"no association with {address} (connection refused, aborted or timed out)",
            )
        status = assoc.send_c_echo()
        if not status:
            return CheckResult(service, False, f"no response from {address} within {timeout:g} s")
        code = int(getattr(status, "Status", -1))
        if code != 0x0000:
            return CheckResult(service, False, f"{address} answered with status 0x{code:04X}")
        return CheckResult(service, True, f"{address} answered")
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _rejection_reason(assoc) -> str:
    primitive = assoc.acceptor.primitive
    if primitive is None:
        return "no reason given"
    reasons = {
        (1, 1): "no reason given",
        (1, 2): "application context not supported",
        (1, 3): "calling AE title not recognized",
        (1, 7): "called AE title not recognized",
        (2, 2): "protocol version not supported",
        (3, 1): "temporary congestion",
        (3, 2): "local limit exceeded",
    }
    reason = reasons.get((primitive.result_source, primitive.diagnostic))
    return reason or f"source {primitive.result_source}, reason {primitive.diagnostic}"


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
