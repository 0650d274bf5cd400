from django.apps import AppConfig


class BatchQueryConfig(AppConfig):
    name = "adit.batch_query"
    label = "batch_query"
    verbose_name = "Batch query"

    def ready(self) -> None:
        from adit.core.processors import register_processor
        from adit.core.site import register_main_menu_item

        from .models import BatchQueryTask
        from .processors import BatchQueryTaskProcessor

        register_processor(BatchQueryTask, BatchQueryTaskProcessor)
        register_main_menu_item(
            "batch_query:job_create",
            "Batch query",
            icon="list-check",
            permission="batch_query.add_batchqueryjob",
        )
