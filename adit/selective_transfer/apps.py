from django.apps import AppConfig


class SelectiveTransferConfig(AppConfig):
    name = "adit.selective_transfer"
    label = "selective_transfer"
    verbose_name = "Selective transfer"

    def ready(self) -> None:
        from adit.core.processors import TransferTaskProcessor, register_processor
        from adit.core.site import register_main_menu_item

        from .models import SelectiveTransferTask

        register_processor(SelectiveTransferTask, TransferTaskProcessor)
        register_main_menu_item(
            "selective_transfer:job_create",
            "Selective transfer",
            icon="search",
            permission="selective_transfer.add_selectivetransferjob",
        )
