"""Settings for running ADIT on a developer's or evaluator's machine."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# A fixed development key keeps sessions valid across restarts; production requires its own.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="development-only-insecure-key-change-me")
TOKEN_AUTHENTICATION_SALT = env.str("TOKEN_AUTHENTICATION_SALT", default="development-salt")
PSEUDONYM_SALT = env.str("PSEUDONYM_SALT", default="development-pseudonym-salt")
SUPERUSER_PASSWORD = env.str("SUPERUSER_PASSWORD", default="")
LOGGING["loggers"]["adit"]["level"] = "DEBUG"  # noqa: F405
# Serve static files straight from the apps' folders (no collectstatic needed under daphne).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
