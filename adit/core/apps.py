from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "adit.core"
    label = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from django.conf import settings

        from .dicom.move import ReceiverMoveFetcher
        from .dicom.operator import set_default_move_fetcher
        from .dicom_settings import file_transmit_secret

        # C-MOVE fetches go through ADIT's receiver (manage.py receiver) at these addresses.
        set_default_move_fetcher(
            ReceiverMoveFetcher(
                host=settings.FILE_TRANSMIT_HOST,
                port=settings.FILE_TRANSMIT_PORT,
                secret=file_transmit_secret(),
            )
        )
