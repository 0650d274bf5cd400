"""Remove audit entries older than AUDIT_RETENTION_DAYS (run it daily, e.g. from cron)."""

from django.core.management.base import BaseCommand, CommandError

from adit.audit.services import purge_expired


class Command(BaseCommand):
    help = (
        "Delete audit entries older than the retention period (AUDIT_RETENTION_DAYS, or "
        "--days). The only way entries are ever removed; the purge is itself audited."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--days", type=int, default=None, help="Retention in days (default: the setting)."
        )

    def handle(self, *args, days: int | None, **options) -> None:
        try:
            deleted = purge_expired(days)
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"{deleted} audit entr{'y' if deleted == 1 else 'ies'} purged.")
