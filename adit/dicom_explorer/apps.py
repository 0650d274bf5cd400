from django.apps import AppConfig


class DicomExplorerConfig(AppConfig):
    name = "adit.dicom_explorer"
    label = "dicom_explorer"
    verbose_name = "DICOM explorer"

    def ready(self) -> None:
        from adit.core.site import register_main_menu_item

        register_main_menu_item(
            "dicom_explorer:server_list",
            "DICOM explorer",
            icon="binoculars",
            permission="dicom_explorer.use_explorer",
        )
