from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "adit.accounts"
    label = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from . import schema  # noqa: F401 - registers the token scheme with drf-spectacular
