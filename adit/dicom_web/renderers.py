"""Renderers of the DICOMweb API."""

from rest_framework.renderers import JSONRenderer


class DicomJsonRenderer(JSONRenderer):
    """DICOM JSON model (PS3.18 F.2) responses."""

    media_type = "application/dicom+json"
    format = "dicomjson"
