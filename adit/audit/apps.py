from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "adit.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from adit.core.site import register_main_menu_item

        from . import signals

        signals.connect()
        register_main_menu_item(
            "audit:entry_list", "Audit log", icon="journal-text", staff_only=True
        )
