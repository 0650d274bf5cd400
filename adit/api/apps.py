from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "adit.api"
    label = "api"
    verbose_name = "REST API for jobs"
