"""Per-user API usage statistics and the permissions of the DICOMweb API."""

from django.conf import settings
from django.db import models
from django.db.models import F
from django.utils import timezone

QUERY_PERMISSION = "dicom_web.can_query"
RETRIEVE_PERMISSION = "dicom_web.can_retrieve"
STORE_PERMISSION = "dicom_web.can_store"


class APIUsage(models.Model):
    """How much one user used the API: requests, bytes sent and received, last access.

    The model also carries the DICOMweb permissions (a group needs them to query, retrieve or
    store through the API; superusers have them all).
    """

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_usage"
    )
    request_count = models.PositiveBigIntegerField(default=0)
    error_count = models.PositiveBigIntegerField(
        default=0, help_text="Requests answered with an error status (4xx/5xx)."
    )
    bytes_sent = models.PositiveBigIntegerField(default=0, help_text="Response bytes.")
    bytes_received = models.PositiveBigIntegerField(default=0, help_text="Request body bytes.")
    last_access = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API usage"
        verbose_name_plural = "API usage"
        ordering = ["-last_access"]
        permissions = [
            ("can_query", "Can query servers through the DICOMweb API (QIDO-RS)"),
            ("can_retrieve", "Can retrieve from servers through the DICOMweb API (WADO-RS)"),
            ("can_store", "Can store to servers through the DICOMweb API (STOW-RS)"),
        ]

    def __str__(self) -> str:
        return f"API usage of {self.owner}"

    @classmethod
    def record(
        cls, user_id: int, *, bytes_sent: int = 0, bytes_received: int = 0, error: bool = False
    ) -> None:
        """Count one request of the user (atomic increments; safe with concurrent requests)."""
        usage, _ = cls.objects.get_or_create(owner_id=user_id)
        cls.objects.filter(pk=usage.pk).update(
            request_count=F("request_count") + 1,
            error_count=F("error_count") + (1 if error else 0),
            bytes_sent=F("bytes_sent") + max(bytes_sent, 0),
            bytes_received=F("bytes_received") + max(bytes_received, 0),
            last_access=timezone.now(),
        )
