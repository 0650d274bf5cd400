"""The ADIT API client: DICOMweb over ADIT's servers and ADIT's jobs."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from io import BytesIO
from typing import Any

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


class AditClient:
    """A client for one ADIT server.

    Args:
        server_url: Base URL of ADIT, e.g. ``https://adit.example.org``.
        auth_token: An API token (ADIT's token page); sent as ``Authorization: Token ...``.
        verify: Verify the server's TLS certificate (or the path of a CA bundle).
        trial_protocol_id: ClinicalTrialProtocolID set on every retrieved instance.
        trial_protocol_name: ClinicalTrialProtocolName set on every retrieved instance.
        timeout: Seconds to wait for ADIT to start answering (a retrieval may then stream for
            as long as it takes).

    Every DICOMweb method takes the AE title of an ADIT server (``ae_title``) that the token
    owner's active group may use. Errors raise :class:`AditClientError` subclasses carrying
    ADIT's ``detail``.
    """

    def __init__(
        self,
        server_url: str,
        auth_token: str,
        verify: bool | str = True,
        trial_protocol_id: str | None = None,
        trial_protocol_name: str | None = None,
        timeout: float = 120,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.auth_token = auth_token
        self.verify = verify
        self.trial_protocol_id = trial_protocol_id
        self.trial_protocol_name = trial_protocol_name
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

    def search_for_series(
        self, ae_title: str, study_uid: str, query: Mapping[str, Any] | None = None
    ) -> list[Dataset]:
        url = self._dicomweb_url(ae_title, "qidors", "studies", study_uid, "series")
        return self._search(url, query)

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
                )

            def read(size: int) -> bytes:
                return response.raw.read(size, decode_content=True)

            for headers, body in iter_parts(read, params["boundary"]):
                content_type = headers.get("content-type", "application/dicom")
                if not content_type.startswith("application/dicom"):
                    # ADIT reports a failure after the retrieval started as a text part.
                    raise AditClientError(None, body.decode("utf-8", "replace"), url)
                yield dcmread(BytesIO(body))

    def iter_study(
        self, ae_title: str, study_uid: str, pseudonym: str | None = None
    ) -> Iterator[Dataset]:
        """The instances of a study, one at a time as they arrive."""
        url = self._dicomweb_url(ae_title, "wadors", "studies", study_uid)
        return self._iter_instances(url, pseudonym)

    def retrieve_study(
        self, ae_title: str, study_uid: str, pseudonym: str | None = None
    ) -> list[Dataset]:
        return list(self.iter_study(ae_title, study_uid, pseudonym))

    def iter_series(
        self, ae_title: str, study_uid: str, series_uid: str, pseudonym: str | None = None
    ) -> Iterator[Dataset]:
        url = self._dicomweb_url(ae_title, "wadors", "studies", study_uid, "series", series_uid)
        return self._iter_instances(url, pseudonym)

    def retrieve_series(
        self, ae_title: str, study_uid: str, series_uid: str, pseudonym: str | None = None
    ) -> list[Dataset]:
        return list(self.iter_series(ae_title, study_uid, series_uid, pseudonym))

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

    def retrieve_study_metadata(
        self, ae_title: str, study_uid: str, pseudonym: str | None = None
    ) -> list[dict]:
        """DICOM JSON of every instance of the study (without pixel data)."""
        url = self._dicomweb_url(ae_title, "wadors", "studies", study_uid, "metadata")
        return self._metadata(url, pseudonym)

    def retrieve_series_metadata(
        self, ae_title: str, study_uid: str, series_uid: str, pseudonym: str | None = None
    ) -> list[dict]:
        url = self._dicomweb_url(
            ae_title, "wadors", "studies", study_uid, "series", series_uid, "metadata"
        )
        return self._metadata(url, pseudonym)

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

    # --- STOW-RS ----------------------------------------------------------------------------

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
    return error_class(response.status_code, str(detail), response.url)
