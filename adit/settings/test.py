"""Settings for the test suite (pytest)."""

from .development import *  # noqa: F403

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "adit.example_app"]  # noqa: F405
ROOT_URLCONF = "adit.example_app.urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LOGGING["loggers"]["adit"]["level"] = "INFO"  # noqa: F405
# Lets tests hold a worker's task in a phase (see adit/core/testing/phase_hooks.py).
DICOM_TASK_PHASE_HOOK = "adit.core.testing.phase_hooks.hold_in_phase"
