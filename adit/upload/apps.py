from django.apps import AppConfig


class UploadConfig(AppConfig):
    name = "adit.upload"
    label = "upload"
    verbose_name = "Upload"

    def ready(self) -> None:
        from adit.core.processors import register_processor
        from adit.core.site import register_main_menu_item

        from .models import UploadTask
        from .processors import UploadTaskProcessor

        register_processor(UploadTask, UploadTaskProcessor)
        register_main_menu_item(
            "upload:job_create",
            "Upload",
            icon="cloud-upload",
            permission="upload.add_uploadjob",
        )
