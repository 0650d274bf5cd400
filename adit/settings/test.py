"""Settings for the test suite (pytest).

Tests use fixed secrets that are public and only good for a throwaway test database. They are
put into the environment before the development settings read it, so nothing is generated into
the data folder, and the workers, receivers and servers the tests start (which inherit the
environment, sometimes with another ADIT_DATA_DIR) share them.
"""

import os

for _name, _value in {
    "DJANGO_SECRET_KEY": "test-only-secret-key",
    "TOKEN_AUTHENTICATION_SALT": "test-only-token-salt",
    "PSEUDONYM_SALT": "test-only-pseudonym-salt",
    "FILE_TRANSMIT_SECRET": "test-only-file-transmit-secret",
}.items():
    os.environ.setdefault(_name, _value)

from .development import *  # noqa: E402, F403

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "adit.core.tests.example_app"]  # noqa: F405
ROOT_URLCONF = "adit.core.tests.example_app.urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LOGGING["loggers"]["adit"]["level"] = "INFO"  # noqa: F405
# Lets tests hold a worker's task in a phase (see adit/core/testing/phase_hooks.py).
DICOM_TASK_PHASE_HOOK = "adit.core.testing.phase_hooks.hold_in_phase"
