"""Logins, logouts and failed logins go into the audit trail (Django's auth signals)."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

from .models import AuditEntry


def _logged_in(sender, request, user, **kwargs) -> None:
    from .services import record

    record(AuditEntry.Action.LOGIN, user=user, request=request)


def _logged_out(sender, request, user, **kwargs) -> None:
    from .services import record

    if user is not None:
        record(AuditEntry.Action.LOGOUT, user=user, request=request)


def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    from .services import record

    # Django has already replaced the password in `credentials` by asterisks; only the
    # user name that was tried is kept.
    username = str(credentials.get("username", ""))[:150]
    record(
        AuditEntry.Action.LOGIN_FAILED,
        outcome=AuditEntry.Outcome.FAILURE,
        username=username,
        request=request if request is not None else None,
        user=None,
    )


def connect() -> None:
    user_logged_in.connect(_logged_in, dispatch_uid="audit_logged_in")
    user_logged_out.connect(_logged_out, dispatch_uid="audit_logged_out")
    user_login_failed.connect(_login_failed, dispatch_uid="audit_login_failed")
