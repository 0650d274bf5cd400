"""The ADIT API client: DICOMweb over ADIT's servers and ADIT's jobs."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from io import BytesIO
from typing import Any, TypeVar

import requests
from pydicom import Dataset, dcmread
from pydicom.filewriter import dcmwrite

from .errors import ERRORS_BY_STATUS, AditClientError, JobTimeoutError
from .multipart import encode_parts, iter_parts, new_boundary, parse_content_type

try:
    __version__ = version("adit-client")
except PackageNotFoundError:  # pragma: no cover — running from a source tree
    __version__ = "0"

DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
FINAL_JOB_STATUSES = ("CA", "SU", "WA", "FA")
JOB_KINDS = {"transfer": "transfer-jobs", "batch_query": "batch-query-jobs"}
IMAGE_MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}

DEFAULT_SKIP_ELEMENTS_ANONYMIZATION = [
    "AcquisitionDate",
    "AcquisitionDateTime",
    "AcquisitionTime",
    "ContentDate",
    "ContentTime",
    "SeriesDate",
    "SeriesTime",
    "StudyDate",
    "StudyTime",
]
"""What adit-client 0.5.2 kept by default when it pseudonymized on the client (dates and
times); ADIT pseudonymizes on the server now, where keeping them is the PS3.15 option
``retain_full_dates``."""

KEYWORD_ALIASES = {
    "study_instance_uid": "study_uid",
    "series_instance_uid": "series_uid",
    "sop_instance_uid": "instance_uid",
}
"""Keyword names of adit-client 0.5.2 (the DICOM attribute names) → the short ones."""

_DATE_OR_TIME_KEYWORD = re.compile(r"^[A-Za-z]+(Date|Time|DateTime)$")

F = TypeVar("F", bound=Callable[..., Any])


def _accepts_0_5_keywords(method: F) -> F:
    """Lets `method` also take the 0.5.2 keyword names (``study_instance_uid=`` ...).

    Passing both spellings of one argument is a TypeError, as for any duplicate argument.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        for old, new in KEYWORD_ALIASES.items():
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(
                        f"{method.__name__}() got both {old!r} and {new!r}; pass one of them."
                    )
                kwargs[new] = kwargs.pop(old)
        return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def deid_options_for_skipped_elements(elements: Iterable[str]) -> list[str]:
    """The ADIT de-identification options that keep what 0.5.2's ``skip_elements_anonymization``
    kept, where ADIT can: dates and times (``retain_full_dates``).

    Raises:
        ValueError: naming the elements ADIT's server-side pseudonymization cannot keep one by
            one (it applies the DICOM PS3.15 Basic Profile with its options; a script must
            not silently get less protection or less data than it asked for).
    """
    elements = list(elements)
    others = [name for name in elements if not _DATE_OR_TIME_KEYWORD.match(name)]
    if others:
        raise ValueError(
            "skip_elements_anonymization: ADIT pseudonymizes on the server by the DICOM PS3.15 "
            "Basic Profile and can keep dates and times (option retain_full_dates) but not "
            f"single elements; cannot keep {', '.join(others)}. Choose deid_options instead."
        )
    return ["retain_full_dates"] if elements else []


class AditClient:
    """A client for one ADIT server.

    Args:
        server_url: Base URL of ADIT, e.g. ``https://adit.example.org``.
        auth_token: An API token (ADIT's token page); sent as ``Authorization: Token ...``.
        verify: Verify the server's TLS certificate (or the path of a CA bundle).
        trial_protocol_id: ClinicalTrialProtocolID set on every retrieved instance.
        trial_protocol_name: ClinicalTrialProtocolName set on every retrieved instance.
        skip_elements_anonymization: As in adit-client 0.5.2: the elements a pseudonymized
            retrieve keeps. ADIT pseudonymizes on the server, so only dates and times can be
            kept (they map to the option ``retain_full_dates``); other elements raise
            ValueError. None (the default): your group's de-identification defaults apply.
        timeout: Seconds to wait for ADIT to start answering (a retrieval may then stream for
            as long as it takes).
        deid_options: De-identification option codes for pseudonymized retrieves (e.g.
            ``["retain_full_dates", "retain_device_identity"]``); default: your group's.

    Every DICOMweb method takes the AE title of an ADIT server (``ae_title``) that the token
    owner's active group may use. Errors raise :class:`AditClientError` subclasses (which are
    also ``requests.HTTPError``) carrying ADIT's ``detail``. The UID arguments also take the
    keyword names of 0.5.2 (``study_instance_uid``, ``series_instance_uid``).
    """

    def __init__(
        self,
        server_url: str,
        auth_token: str,
        verify: bool | str = True,
        trial_protocol_id: str | None = None,
        trial_protocol_name: str | None = None,
        skip_elements_anonymization: list[str] | None = None,
        timeout: float = 120,
        deid_options: list[str] | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.auth_token = auth_token
        self.verify = verify
        self.trial_protocol_id = trial_protocol_id
        self.trial_protocol_name = trial_protocol_name
        self.skip_elements_anonymization = skip_elements_anonymization
        self.deid_options: list[str] | None = (
            list(deid_options) if deid_options is not None else None
        )
        if skip_elements_anonymization is not None:
            kept = deid_options_for_skipped_elements(skip_elements_anonymization)
            if kept:
                self.deid_options = sorted({*(self.deid_options or []), *kept})
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update(self.auth_headers)
        self.session.headers["User-Agent"] = f"python-adit_client/{__version__}"
        self.session.verify = verify

    @property
    def auth_headers(self) -> dict[str, str]:
        """The header that authenticates every request against ADIT."""
        return {"Authorization": f"Token {self.auth_token}"}

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> AditClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.server_url}{path}"

    def _dicomweb_url(self, ae_title: str, service: str, *parts: str) -> str:
        path = "/".join([service, *parts])
        return self._url(f"/api/dicom-web/{ae_title}/{path}")

    def _request(self, method: str, url: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        response = self.session.request(method, url, **kwargs)
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def _retrieve_params(self, pseudonym: str | None) -> dict[str, str]:
        params = {
            "pseudonym": pseudonym,
            "trial_protocol_id": self.trial_protocol_id,
            "trial_protocol_name": self.trial_protocol_name,
        }
        if pseudonym and self.deid_options:
            params["deid_options"] = ",".join(self.deid_options)
        return {key: value for key, value in params.items() if value}

    # --- QIDO-RS ----------------------------------------------------------------------------

    def _search(self, url: str, query: Mapping[str, Any] | None) -> list[Dataset]:
        params: dict[str, Any] = {}
        for key, value in (query or {}).items():
            if isinstance(value, list | tuple):
                value = value if key == "includefield" else ",".join(map(str, value))
            params[key] = value
        response = self._request("GET", url, params=params, headers={"Accept": DICOM_JSON})
        return [Dataset.from_json(item) for item in response.json()]

    def search_for_studies(
        self, ae_title: str, query: Mapping[str, Any] | None = None
    ) -> list[Dataset]:
        """Studies matching `query` (DICOM keywords, plus ``includefield`` and ``limit``)."""
        return self._search(self._dicomweb_url(ae_title, "qidors", "studies"), query)

    @_accepts_0_5_keywords
    def search_for_series(
        self, ae_title: str, study_uid: str, query: Mapping[str, Any] | None = None
    ) -> list[Dataset]:
        url = self._dicomweb_url(ae_title, "qidors", "studies", study_uid, "series")
        return self._search(url, query)

    @_accepts_0_5_keywords
    def search_for_instances(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        query: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        url = self._dicomweb_url(
            ae_title, "qidors", "studies", study_uid, "series", series_uid, "instances"
        )
        return self._search(url, query)

    search_for_images = search_for_instances  # the name of the existing ADIT client

    # --- WADO-RS ----------------------------------------------------------------------------

    def _iter_instances(self, url: str, pseudonym: str | None) -> Iterator[Dataset]:
        response = self._request(
            "GET",
            url,
            params=self._retrieve_params(pseudonym),
            headers={"Accept": f"{MULTIPART_DICOM}; transfer-syntax=*"},
            stream=True,
        )
        with response:
            media_type, params = parse_content_type(response.headers.get("Content-Type", ""))
            if media_type != "multipart/related" or "boundary" not in params:
                raise AditClientError(
                    response.status_code,
                    f"Expected a multipart/related answer, got {media_type or 'nothing'}.",
                    url,
                    response=response,
                )

            def read(size: int) -> bytes:
                return response.raw.read(size, decode_content=True)

            for headers, body in iter_parts(read, params["boundary"]):
                content_type = headers.get("content-type", "application/dicom")
                if not content_type.startswith("application/dicom"):
                    # ADIT reports a failure after the retrieval started as a text part.
                    raise AditClientError(
                        None, body.decode("utf-8", "replace"), url, response=response
                    )
                yield dcmread(BytesIO(body))

    @_accepts_0_5_keywords
    def iter_study(
        self, ae_title: str, study_uid: str, pseudonym: str | None = None
    ) -> Iterator[Dataset]:
        """The instances of a study, one at a time as they arrive."""
        url = self._dicomweb_url(ae_title, "wadors", "studies", study_uid)
        return self._iter_instances(url, pseudonym)

    @_accepts_0_5_keywords
    def retrieve_study(
        self, ae_title: str, study_uid: str, pseudonym: str | None = None
    ) -> list[Dataset]:
        return list(self.iter_study(ae_title, study_uid, pseudonym))

    @_accepts_0_5_keywords
    def iter_series(
        self, ae_title: str, study_uid: str, series_uid: str, pseudonym: str | None = None
    ) -> Iterator[Dataset]:
        url = self._dicomweb_url(ae_title, "wadors", "studies", study_uid, "series", series_uid)
        return self._iter_instances(url, pseudonym)

    @_accepts_0_5_keywords
    def retrieve_series(
        self, ae_title: str, study_uid: str, series_uid: str, pseudonym: str | None = None
    ) -> list[Dataset]:
        return list(self.iter_series(ae_title, study_uid, series_uid, pseudonym))

    @_accepts_0_5_keywords
    def retrieve_instance(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        instance_uid: str,
        pseudonym: str | None = None,
    ) -> Dataset:
        url = self._dicomweb_url(
            ae_title,
            "wadors",
            "studies",
            study_uid,
            "series",
            series_uid,
            "instances",
            instance_uid,
        )
        instances = list(self._iter_instances(url, pseudonym))
        if len(instances) != 1:
            raise AditClientError(None, f"Expected one instance, got {len(instances)}.", url)
        return instances[0]

    retrieve_image = retrieve_instance

    def _metadata(self, url: str, pseudonym: str | None) -> list[dict]:
        response = self._request(
            "GET", url, params=self._retrieve_params(pseudonym), headers={"Accept": DICOM_JSON}
        )
        return response.json()

    @_accepts_0_5_keywords
    def retrieve_study_metadata(
        self, ae_title: str, study_uid: str, pseudonym: str | None = None
    ) -> list[dict]:
        """DICOM JSON of every instance of the study (without pixel data)."""
        url = self._dicomweb_url(ae_title, "wadors", "studies", study_uid, "metadata")
        return self._metadata(url, pseudonym)

    @_accepts_0_5_keywords
    def retrieve_series_metadata(
        self, ae_title: str, study_uid: str, series_uid: str, pseudonym: str | None = None
    ) -> list[dict]:
        url = self._dicomweb_url(
            ae_title, "wadors", "studies", study_uid, "series", series_uid, "metadata"
        )
        return self._metadata(url, pseudonym)

    @_accepts_0_5_keywords
    def retrieve_instance_metadata(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        instance_uid: str,
        pseudonym: str | None = None,
    ) -> dict:
        url = self._dicomweb_url(
            ae_title,
            "wadors",
            "studies",
            study_uid,
            "series",
            series_uid,
            "instances",
            instance_uid,
            "metadata",
        )
        return self._metadata(url, pseudonym)[0]

    retrieve_image_metadata = retrieve_instance_metadata

    # --- rendered images and thumbnails (WADO-RS) ------------------------------------------

    def _image(
        self,
        url: str,
        media_type: str,
        params: dict[str, str],
    ) -> bytes:
        accept = IMAGE_MEDIA_TYPES.get(media_type.lower(), media_type)
        response = self._request("GET", url, params=params, headers={"Accept": accept})
        content_type, type_params = parse_content_type(response.headers.get("Content-Type", ""))
        if content_type == "multipart/related" and "boundary" in type_params:
            # A server may wrap even one image in multipart/related; the first part is it.
            chunks = iter([response.content])

            def read(size: int) -> bytes:
                return next(chunks, b"")

            for _headers, body in iter_parts(read, type_params["boundary"]):
                return body
            raise AditClientError(response.status_code, "The answer holds no image.", url)
        return response.content

    def _rendered(
        self,
        ae_title: str,
        parts: list[str],
        resource: str,
        media_type: str,
        window: tuple[float, float] | tuple[float, float, str] | None = None,
        viewport: tuple[int, int] | None = None,
        quality: int | None = None,
    ) -> bytes:
        params: dict[str, str] = {}
        if window is not None:
            params["window"] = ",".join(
                f"{value:g}" if not isinstance(value, str) else value for value in window
            )
        if viewport is not None:
            params["viewport"] = ",".join(str(int(value)) for value in viewport)
        if quality is not None:
            params["quality"] = str(int(quality))
        url = self._dicomweb_url(ae_title, "wadors", *parts, resource)
        return self._image(url, media_type, params)

    @_accepts_0_5_keywords
    def retrieve_instance_rendered(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        instance_uid: str,
        media_type: str = "image/jpeg",
        window: tuple[float, float] | tuple[float, float, str] | None = None,
        viewport: tuple[int, int] | None = None,
        quality: int | None = None,
    ) -> bytes:
        """The instance rendered as an image for display (PS3.18 rendered resource).

        Args:
            media_type: ``"image/jpeg"`` (or ``"jpeg"``) or ``"image/png"`` (``"png"``).
            window: (center, width) or (center, width, function) of the VOI window, e.g.
                ``(40, 400)`` for soft tissue in a CT; default: the instance's own window.
            viewport: (columns, rows) the image is scaled to fit.
            quality: JPEG quality 1–100.

        Returns:
            The encoded image (e.g. JPEG bytes to write into a .jpg file).
        """
        parts = ["studies", study_uid, "series", series_uid, "instances", instance_uid]
        return self._rendered(ae_title, parts, "rendered", media_type, window, viewport, quality)

    @_accepts_0_5_keywords
    def retrieve_series_rendered(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        media_type: str = "image/jpeg",
        window: tuple[float, float] | tuple[float, float, str] | None = None,
        viewport: tuple[int, int] | None = None,
        quality: int | None = None,
    ) -> bytes:
        """The series rendered as an image (see :meth:`retrieve_instance_rendered`)."""
        parts = ["studies", study_uid, "series", series_uid]
        return self._rendered(ae_title, parts, "rendered", media_type, window, viewport, quality)

    @_accepts_0_5_keywords
    def retrieve_study_rendered(
        self,
        ae_title: str,
        study_uid: str,
        media_type: str = "image/jpeg",
        window: tuple[float, float] | tuple[float, float, str] | None = None,
        viewport: tuple[int, int] | None = None,
        quality: int | None = None,
    ) -> bytes:
        """The study rendered as an image (see :meth:`retrieve_instance_rendered`)."""
        parts = ["studies", study_uid]
        return self._rendered(ae_title, parts, "rendered", media_type, window, viewport, quality)

    @_accepts_0_5_keywords
    def retrieve_instance_thumbnail(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        instance_uid: str,
        media_type: str = "image/jpeg",
        viewport: tuple[int, int] | None = None,
    ) -> bytes:
        """A small image representing the instance (PS3.18 thumbnail resource)."""
        parts = ["studies", study_uid, "series", series_uid, "instances", instance_uid]
        return self._rendered(ae_title, parts, "thumbnail", media_type, viewport=viewport)

    @_accepts_0_5_keywords
    def retrieve_series_thumbnail(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        media_type: str = "image/jpeg",
        viewport: tuple[int, int] | None = None,
    ) -> bytes:
        """A small image representing the series."""
        parts = ["studies", study_uid, "series", series_uid]
        return self._rendered(ae_title, parts, "thumbnail", media_type, viewport=viewport)

    @_accepts_0_5_keywords
    def retrieve_study_thumbnail(
        self,
        ae_title: str,
        study_uid: str,
        media_type: str = "image/jpeg",
        viewport: tuple[int, int] | None = None,
    ) -> bytes:
        """A small image representing the study."""
        parts = ["studies", study_uid]
        return self._rendered(ae_title, parts, "thumbnail", media_type, viewport=viewport)

    # --- STOW-RS ----------------------------------------------------------------------------

    @_accepts_0_5_keywords
    def store_instances(
        self, ae_title: str, instances: Iterable[Dataset], study_uid: str | None = None
    ) -> Dataset:
        """Stores the instances (streamed, one request); returns ADIT's STOW-RS answer.

        The answer lists stored instances in ``ReferencedSOPSequence`` and refused ones in
        ``FailedSOPSequence`` (with ``FailureReason``). A partial failure is not an exception
        (check ``FailedSOPSequence``); if nothing was stored, AditClientError (409) is raised.
        """
        parts = ["studies", study_uid] if study_uid else ["studies"]
        url = self._dicomweb_url(ae_title, "stowrs", *parts)
        boundary = new_boundary("adit-client")
        response = self.session.post(
            url,
            data=encode_parts((_part10(ds) for ds in instances), boundary),
            headers={
                "Content-Type": f"{MULTIPART_DICOM}; boundary={boundary}",
                "Accept": DICOM_JSON,
            },
            timeout=self.timeout,
        )
        if response.status_code >= 400:
            raise _error_from(response)
        return Dataset.from_json(response.json())

    store_images = store_instances

    # --- jobs -------------------------------------------------------------------------------

    def create_transfer_job(
        self,
        source: str | int,
        destination: str | int,
        studies: Iterable[str | Mapping[str, Any]],
        pseudonym: str | None = None,
        trial_protocol_id: str | None = None,
        trial_protocol_name: str | None = None,
        urgent: bool = False,
        send_finished_mail: bool = False,
        archive_password: str | None = None,
    ) -> dict:
        """Creates a transfer job (one task per study) and returns it.

        Args:
            source: AE title (or id) of the source server.
            destination: AE title or name (or id) of the destination server or folder.
            studies: Study Instance UIDs, or dicts with ``study_uid`` and optionally
                ``patient_id`` and ``series_uids`` (only those series are transferred).
            pseudonym: applied to every study; required unless your group may transfer
                unpseudonymized data.
            trial_protocol_id, trial_protocol_name: default to the client's values.
        """
        payload: dict[str, Any] = {
            "source": source,
            "destination": destination,
            "studies": [
                {"study_uid": study} if isinstance(study, str) else dict(study) for study in studies
            ],
            "urgent": urgent,
            "send_finished_mail": send_finished_mail,
        }
        optional = {
            "pseudonym": pseudonym,
            "trial_protocol_id": trial_protocol_id or self.trial_protocol_id,
            "trial_protocol_name": trial_protocol_name or self.trial_protocol_name,
            "archive_password": archive_password,
        }
        payload.update({key: value for key, value in optional.items() if value})
        return self._request("POST", self._jobs_url("transfer"), json=payload).json()

    def create_batch_query_job(
        self,
        source: str | int,
        project_name: str,
        project_description: str,
        queries: Iterable[Mapping[str, Any]],
        urgent: bool = False,
    ) -> dict:
        """Creates a batch query job; each query uses the batch file's column names as keys."""
        payload = {
            "source": source,
            "project_name": project_name,
            "project_description": project_description,
            "queries": [dict(query) for query in queries],
            "urgent": urgent,
        }
        return self._request("POST", self._jobs_url("batch_query"), json=payload).json()

    def iter_batch_query_results(self, job_id: int) -> Iterator[dict]:
        """The results of a batch query job, one row at a time (all pages).

        Each row is one found study (or series, for series queries) with ``task`` (the query's
        task id), ``patient_id``, ``patient_name``, ``patient_birth_date``,
        ``accession_number``, ``study_date``, ``study_time``, ``modalities``, ``image_count``,
        ``study_description``, ``series_description``, ``series_number``, ``pseudonym``,
        ``study_uid`` and ``series_uid`` — the columns of the results file in the web UI.
        """
        url: str | None = self._jobs_url("batch_query", job_id, "results")
        while url:
            page = self._request("GET", url).json()
            yield from page["results"]
            url = page.get("next")

    def get_batch_query_results(self, job_id: int) -> list[dict]:
        """All results of a batch query job (see :meth:`iter_batch_query_results`)."""
        return list(self.iter_batch_query_results(job_id))

    def _jobs_url(self, kind: str, *parts: str | int) -> str:
        if kind not in JOB_KINDS:
            raise ValueError(f"Unknown job kind {kind!r}; use one of {', '.join(JOB_KINDS)}.")
        suffix = "".join(f"{part}/" for part in parts)
        return self._url(f"/api/{JOB_KINDS[kind]}/{suffix}")

    def get_job(self, job_id: int, kind: str = "transfer") -> dict:
        return self._request("GET", self._jobs_url(kind, job_id)).json()

    def list_jobs(self, kind: str = "transfer", status: str | None = None) -> list[dict]:
        """Your jobs (staff: all jobs), newest first; all pages."""
        jobs: list[dict] = []
        url: str | None = self._jobs_url(kind)
        params = {"status": status} if status else {}
        while url:
            page = self._request("GET", url, params=params).json()
            jobs.extend(page["results"])
            url, params = page.get("next"), {}
        return jobs

    def get_job_tasks(self, job_id: int, kind: str = "transfer") -> list[dict]:
        tasks: list[dict] = []
        url: str | None = self._jobs_url(kind, job_id, "tasks")
        while url:
            page = self._request("GET", url).json()
            tasks.extend(page["results"])
            url = page.get("next")
        return tasks

    def cancel_job(self, job_id: int, kind: str = "transfer") -> dict:
        return self._request("POST", self._jobs_url(kind, job_id, "cancel")).json()

    def retry_job(self, job_id: int, kind: str = "transfer") -> dict:
        return self._request("POST", self._jobs_url(kind, job_id, "retry")).json()

    def resume_job(self, job_id: int, kind: str = "transfer") -> dict:
        return self._request("POST", self._jobs_url(kind, job_id, "resume")).json()

    def wait_for_job(
        self, job_id: int, timeout: float = 3600, poll_interval: float = 2, kind: str = "transfer"
    ) -> dict:
        """Polls until the job has finished (Success, Warning, Failure or Canceled).

        Raises:
            JobTimeoutError: the job has not finished within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id, kind)
            if job["status"] in FINAL_JOB_STATUSES:
                return job
            if time.monotonic() >= deadline:
                raise JobTimeoutError(job, timeout)
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))


def _part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    if getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta:
        raise ValueError(
            f"Instance {ds.get('SOPInstanceUID', '?')} has no file meta with a TransferSyntaxUID."
        )
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _error_from(response: requests.Response) -> AditClientError:
    try:
        body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else None
        if detail is None:
            detail = str(body)
    except ValueError:
        detail = response.text[:1000] or response.reason
    error_class = ERRORS_BY_STATUS.get(response.status_code, AditClientError)
    return error_class(response.status_code, str(detail), response.url, response=response)
