from django.apps import AppConfig


class ExampleAppConfig(AppConfig):
    name = "adit.core.tests.example_app"
    label = "example_app"

    def ready(self) -> None:
        from adit.core.processors import TransferTaskProcessor, register_processor

        from .models import ExampleTransferTask

        register_processor(ExampleTransferTask, TransferTaskProcessor)
