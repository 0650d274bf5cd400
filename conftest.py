"""Fixtures shared by every test module (each area registers its fixture plugin here)."""

pytest_plugins = [
    "adit.core.dicom.testing.fixtures",
    "adit.core.testing.browser",
    "adit.dicom_web.testing",
]
