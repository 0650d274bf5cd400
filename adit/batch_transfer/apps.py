from django.apps import AppConfig


class BatchTransferConfig(AppConfig):
    name = "adit.batch_transfer"
    label = "batch_transfer"
    verbose_name = "Batch transfer"

    def ready(self) -> None:
        from adit.core.processors import TransferTaskProcessor, register_processor
        from adit.core.site import register_main_menu_item

        from .models import BatchTransferTask

        register_processor(BatchTransferTask, TransferTaskProcessor)
        register_main_menu_item(
            "batch_transfer:job_create",
            "Batch transfer",
            icon="send",
            permission="batch_transfer.add_batchtransferjob",
        )
