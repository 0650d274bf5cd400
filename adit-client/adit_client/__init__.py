"""Python client for ADIT (Automated DICOM Transfer)."""

from .client import AditClient
from .errors import (
    AditClientError,
    AuthenticationError,
    BadRequestError,
    JobTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    ServerUnavailableError,
)

__all__ = [
    "AditClient",
    "AditClientError",
    "AuthenticationError",
    "BadRequestError",
    "JobTimeoutError",
    "NotFoundError",
    "PermissionDeniedError",
    "ServerUnavailableError",
]
