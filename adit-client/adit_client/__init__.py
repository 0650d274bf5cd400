"""Python client for ADIT (Automated DICOM Transfer)."""

from .client import DEFAULT_SKIP_ELEMENTS_ANONYMIZATION, AditClient, __version__
from .errors import (
    AditClientError,
    AuthenticationError,
    BadRequestError,
    JobTimeoutError,
    NotAcceptableError,
    NotFoundError,
    PermissionDeniedError,
    ServerUnavailableError,
)

__all__ = [
    "DEFAULT_SKIP_ELEMENTS_ANONYMIZATION",
    "__version__",
    "AditClient",
    "AditClientError",
    "AuthenticationError",
    "BadRequestError",
    "JobTimeoutError",
    "NotAcceptableError",
    "NotFoundError",
    "PermissionDeniedError",
    "ServerUnavailableError",
]
