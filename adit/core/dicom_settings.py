"""Django settings turned into the plain values the DICOM layer (adit.core.dicom) takes."""

import hashlib
import hmac

from django.conf import settings

from .dicom.config import LocalConfig


def local_config() -> LocalConfig:
    """ADIT's own side of DICOM networking (AE titles, receiver address)."""
    return LocalConfig(
        calling_ae_title=settings.CALLING_AE_TITLE,
        receiver_ae_title=settings.RECEIVER_AE_TITLE,
        file_transmit_host=settings.FILE_TRANSMIT_HOST,
        file_transmit_port=settings.FILE_TRANSMIT_PORT,
    )


def file_transmit_secret() -> bytes:
    """The secret workers prove to the receiver before it streams images to them.

    Derived from FILE_TRANSMIT_SECRET, or from SECRET_KEY when that is not set (production
    requires a secret SECRET_KEY), so every process configured like this ADIT shares it and
    nobody else can subscribe to received images. Development settings generate
    FILE_TRANSMIT_SECRET per installation (adit.instance_secrets).
    """
    key = settings.FILE_TRANSMIT_SECRET or settings.SECRET_KEY
    return hmac.new(key.encode(), b"adit-file-transmit-subscription", hashlib.sha256).digest()
