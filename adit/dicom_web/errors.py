"""API errors of the DICOMweb endpoints; every one is answered as JSON with a `detail`."""

from rest_framework import status
from rest_framework.exceptions import APIException

from adit.core.dicom.errors import DicomError, RetriableDicomError


class BadRequest(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Bad request."
    default_code = "bad_request"


class UnsupportedMediaType(APIException):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_detail = "Unsupported media type."
    default_code = "unsupported_media_type"


class PacsError(APIException):
    """The PACS behind ADIT failed permanently (bad gateway)."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "The DICOM server failed."
    default_code = "pacs_error"


class PacsUnavailable(APIException):
    """The PACS behind ADIT failed for a transient reason; the client may try again."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The DICOM server is unavailable; please try again later."
    default_code = "pacs_unavailable"


def api_error_for(error: DicomError) -> APIException:
    if isinstance(error, RetriableDicomError):
        return PacsUnavailable(str(error))
    return PacsError(str(error))
