"""Errors raised by the DICOM layer.

`RetriableDicomError` marks transient failures (a refused or aborted association, a busy
server, a timeout, HTTP 408/409/429/5xx): the task that hit it is retried later. Any other
`DicomError` is permanent (wrong configuration, unsupported operation, bad data).
"""

from __future__ import annotations


class DicomError(Exception):
    """A DICOM operation failed; the message names the server and the operation."""


class RetriableDicomError(DicomError):
    """A DICOM operation failed for a transient reason; trying again later may succeed."""
