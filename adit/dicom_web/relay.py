"""WADO-RS retrieves at the source's speed: relaying bytes, and encoding without re-encoding.

Two paths keep a retrieve through ADIT close to the speed of the PACS itself:

* **Relay (DICOMweb source).** When ADIT changes nothing (no pseudonym, no trial protocol),
  the client accepts any transfer syntax and the source speaks WADO-RS, the source's
  ``multipart/related`` answer is passed through byte for byte, as it arrives: no parsing, no
  decoding, no re-encoding, and memory bounded by one chunk per retrieve. Its boundary is
  reused in our Content-Type, so the parts need not even be found.
* **No listing beside a C-GET (DIMSE source).** A C-GET is whole when the PACS counts as
  many completed sub-operations as instances arrived and none failed (see
  `DicomOperator._fetch_with_c_get`); only when the counts do not add up is the source listed
  (IMAGE-level C-FIND) to name what is missing. A retrieve does not list the study beside the
  C-GET on a second association: on Orthanc the listing costs about as much CPU as the C-GET
  (it opens every instance), and on a small machine it slowed the retrieve by a third.
* **Undecoded (DIMSE source).** When nothing is changed and any transfer syntax is accepted,
  the C-GET's instances are not decoded at all (`DicomOperator.fetch_encoded`): each is
  checked (whole, the instance asked for) and written as a Part-10 file from the bytes it
  arrived as (`part10.EncodedInstance`). Decoding was the largest cost of such a retrieve.
* **Received encoding (DIMSE source).** Otherwise instances fetched by C-GET or C-MOVE keep the
  bytes they arrived as (`remember_received_encoding`); one that stays unchanged, e.g. asked
  for in its own transfer syntax, is written from those bytes instead of being encoded again
  element by element.

Both stream: the first instance leaves ADIT while the source is still sending the rest.

A relayed answer that breaks off (the source fails mid-way) ends without its closing
delimiter, which every multipart reader reports as incomplete; ADIT cannot add a part of its
own to a body whose parts it does not track.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import requests
from adit_client.multipart import parse_content_type
from pydicom import Dataset

from adit.core.dicom.config import ServerConfig
from adit.core.dicom.dicomweb import part10_pieces
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.pseudonymizer import InstanceTransformer

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
SOURCE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


# --- relay ------------------------------------------------------------------------------------


def accepts_any_transfer_syntax(accept: str) -> bool:
    """Whether the client's Accept header lets ADIT send instances in any transfer syntax.

    No Accept header, ``*/*``, ``multipart/related`` without a type, or a
    ``type="application/dicom"`` with ``transfer-syntax=*`` do; a named transfer syntax does
    not (that answer may need transcoding, which only the decoding path does).
    """
    if not accept.strip():
        return True
    for item in accept.split(","):
        media_type, params = parse_content_type(item)
        if media_type == "*/*":
            return True
        if media_type != "multipart/related":
            continue
        part_type = params.get("type", "").strip('"').lower()
        if not part_type:
            return True
        if part_type == "application/dicom" and params.get("transfer-syntax") == "*":
            return True
    return False


def can_relay(config: ServerConfig, transformer: InstanceTransformer, accept: str) -> bool:
    """Whether a retrieve can relay the source's WADO-RS answer unchanged."""
    return bool(
        transformer.is_noop
        and config.dicomweb_root_url
        and config.dicomweb_wado_support
        and accepts_any_transfer_syntax(accept)
    )


class Relay:
    """One WADO-RS retrieve from the source, passed through as it arrives.

    `open()` sends the request and waits for the status line and the first chunk of the body,
    so the view can still answer with a proper error (404 for what the source does not
    hold); `body()` then yields the body in chunks. `close()` ends the source's answer (the
    client went away or the response finished).
    """

    def __init__(
        self,
        config: ServerConfig,
        study_uid: str,
        series_uid: str | None,
        image_uid: str | None,
        timeouts: tuple[float, float],
    ) -> None:
        self.config = config
        self.timeouts = timeouts
        parts = ["studies", study_uid]
        if series_uid is not None:
            parts += ["series", series_uid]
            if image_uid is not None:
                parts += ["instances", image_uid]
        root = config.dicomweb_root_url.rstrip("/")
        prefix = (config.dicomweb_wado_prefix or "").strip("/")
        self.url = "/".join([root, *([prefix] if prefix else []), *parts])
        self.content_type = ""
        self.size = 0
        self._session = requests.Session()
        self._response: requests.Response | None = None
        self._first = b""

    def open(self) -> bool:
        """Starts the retrieve; False when the source holds nothing of the kind.

        Raises:
            DicomError: the source failed or answered no multipart body (RetriableDicomError
                when trying later may help).
        """
        headers = {"Accept": SOURCE_ACCEPT}
        if self.config.dicomweb_authorization_header:
            headers["Authorization"] = self.config.dicomweb_authorization_header
        where = f"WADO-RS on {self.config.name or self.config.ae_title}"
        try:
            response = self._session.get(
                self.url, headers=headers, stream=True, timeout=self.timeouts
            )
        except requests.RequestException as error:
            self.close()
            raise RetriableDicomError(f"{where}: {error}") from error
        self._response = response
        if response.status_code in (204, 404):
            self.close()
            return False
        if response.status_code != 200:
            reason = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
            self.close()
            error_class = (
                RetriableDicomError
                if response.status_code in (408, 429) or response.status_code >= 500
                else DicomError
            )
            raise error_class(f"{where}: {reason}")
        media_type, params = parse_content_type(response.headers.get("Content-Type", ""))
        boundary = params.get("boundary", "")
        if media_type != "multipart/related" or not boundary:
            self.close()
            raise DicomError(f"{where}: the answer is not multipart/related ({media_type})")
        self.content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
        try:
            self._first = self._read()
        except requests.RequestException as error:
            self.close()
            raise RetriableDicomError(f"{where}: {error}") from error
        # A source may answer an unknown UID with an empty multipart body.
        if self._first.lstrip(b"\r\n").startswith(f"--{boundary}--".encode()) or not self._first:
            self.close()
            return False
        return True

    def _read(self) -> bytes:
        assert self._response is not None
        data = self._response.raw.read(CHUNK_SIZE, decode_content=True)
        self.size += len(data)
        return data

    async def body(self) -> AsyncIterator[bytes]:
        """The source's body, chunk by chunk (the first one was read by `open()`).

        The next chunk is read from the source (in a thread) while the current one is
        written to the client, so neither side waits for the other.
        """
        pending: asyncio.Future[bytes] | None = None
        try:
            pending = asyncio.ensure_future(asyncio.to_thread(self._read))
            chunk, self._first = self._first, b""
            while chunk:
                yield chunk
                assert pending is not None
                chunk = await pending
                pending = asyncio.ensure_future(asyncio.to_thread(self._read)) if chunk else None
        except Exception as error:
            # The status line is sent: ending without the closing delimiter tells the client.
            logger.warning("WADO-RS relay from %s broke off: %s", self.config.ae_title, error)
        finally:
            if pending is not None and not pending.done():
                # A read is under way in its thread (the client went away): shutting the
                # socket down ends it at once; nobody waits for its outcome.
                pending.add_done_callback(_ignore_outcome)
                if self._response is not None:
                    with contextlib.suppress(Exception):
                        self._response.raw.shutdown()
            self.close()

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
        self._session.close()


def _ignore_outcome(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: asyncio does not log it as never retrieved


# --- DIMSE sources ----------------------------------------------------------------------------


def retrieve_operator(server) -> DicomOperator:
    """The operator of a retrieve from `server` (a DicomServer): its C-GET trusts the PACS's
    own counts and lists the study only when they do not add up (see the module)."""
    from .services import make_operator

    return make_operator(server)


# --- encoding from the received bytes ---------------------------------------------------------


def encode_received(ds: Dataset) -> bytes | None:
    """The instance as a Part-10 file from the bytes it arrived as, or None if it has none
    (or was changed since; then it must be encoded again)."""
    pieces = part10_pieces(ds)
    return None if pieces is None else b"".join(pieces)
