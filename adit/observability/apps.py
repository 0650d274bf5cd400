from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "adit.observability"
    label = "observability"
    verbose_name = "Observability"
