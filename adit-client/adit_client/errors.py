"""Exceptions of the ADIT client.

Every error ADIT answers is an :class:`AditClientError`, which is also a
``requests.HTTPError``: scripts written for adit-client 0.5.2 (whose errors were the
``requests.HTTPError`` that dicomweb-client raised) keep catching them and keep reading
``error.response.status_code``.
"""

from __future__ import annotations

import requests


class AditClientError(requests.HTTPError):
    """ADIT answered with an error; `detail` is the server's explanation.

    Attributes:
        status_code: the HTTP status (None when the error was found in a streamed body).
        detail: the `detail` ADIT sent (or the response text).
        url: the URL that was requested.
        response: the ``requests.Response`` (as on every ``requests.HTTPError``), if any.
    """

    def __init__(
        self,
        status_code: int | None,
        detail: str,
        url: str = "",
        response: requests.Response | None = None,
    ) -> None:
        self.status_code = status_code
        self.detail = detail
        self.url = url
        prefix = f"HTTP {status_code}: " if status_code else ""
        super().__init__(f"{prefix}{detail}", response=response)


class AuthenticationError(AditClientError):
    """401: the token is missing, unknown or expired."""


class PermissionDeniedError(AditClientError):
    """403: the token owner's active group lacks the permission."""


class NotFoundError(AditClientError):
    """404: unknown or inaccessible server (AE title), job or study."""


class BadRequestError(AditClientError):
    """400: invalid parameters (the detail names them)."""


class NotAcceptableError(AditClientError):
    """406: ADIT cannot produce the asked media type or transfer syntax (the detail says why)."""


class ServerUnavailableError(AditClientError):
    """503: the PACS behind ADIT (or ADIT itself) is temporarily unavailable; try later."""


class JobTimeoutError(TimeoutError):
    """`wait_for_job` gave up; `job` is the last state seen."""

    def __init__(self, job: dict, timeout: float) -> None:
        self.job = job
        super().__init__(
            f"Job {job.get('id')} is still {job.get('status_label', job.get('status'))} after "
            f"{timeout:g} s."
        )


ERRORS_BY_STATUS: dict[int, type[AditClientError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    406: NotAcceptableError,
    503: ServerUnavailableError,
}
