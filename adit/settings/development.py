"""Settings for running ADIT on a developer's or evaluator's machine."""

from adit.instance_secrets import instance_secrets

from .base import *  # noqa: F403
from .base import ADIT_DATA_DIR, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# No public defaults: secrets the environment does not set are generated at the first start into
# ADIT_DATA_DIR/secrets.env (mode 600) and reused later (see adit/instance_secrets.py).
_secrets = instance_secrets(ADIT_DATA_DIR)
SECRET_KEY = _secrets["DJANGO_SECRET_KEY"]
TOKEN_AUTHENTICATION_SALT = _secrets["TOKEN_AUTHENTICATION_SALT"]
PSEUDONYM_SALT = _secrets["PSEUDONYM_SALT"]
FILE_TRANSMIT_SECRET = _secrets["FILE_TRANSMIT_SECRET"]
del _secrets
SUPERUSER_PASSWORD = env.str("SUPERUSER_PASSWORD", default="")
LOGGING["loggers"]["adit"]["level"] = "DEBUG"  # noqa: F405
# Serve static files straight from the apps' folders (no collectstatic needed under daphne).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
