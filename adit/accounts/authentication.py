"""DRF authentication with the header `Authorization: Token <token>`."""

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from .models import Token, User

KEYWORD = "Token"


class TokenAuthentication(BaseAuthentication):
    """Authenticates API requests by an ADIT API token.

    A request without an `Authorization` header is simply not authenticated (so the permission
    check answers 401); a header that is malformed or names an unknown or expired token is
    rejected with 401 and a `detail` saying what was wrong.
    """

    def authenticate(self, request: Request) -> tuple[User, Token] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != KEYWORD.lower().encode():
            raise exceptions.AuthenticationFailed(
                f'Unsupported authorization scheme; send the header "Authorization: {KEYWORD} '
                '<token>".'
            )
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                f'Malformed authorization header; expected "Authorization: {KEYWORD} <token>" '
                "with a token that contains no spaces."
            )
        try:
            clear_token = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(
                "The token contains characters that are not allowed."
            ) from None
        return self._audited(request, clear_token)

    def _audited(self, request: Request, clear_token: str) -> tuple[User, Token]:
        from adit.audit.models import AuditEntry
        from adit.audit.services import record

        # The Django request: asking the DRF request for its user would authenticate again.
        http_request = request._request
        asked = {"method": request.method, "path": request.path[:500]}
        try:
            user, token = self.authenticate_credentials(clear_token)
        except exceptions.AuthenticationFailed as error:
            record(
                AuditEntry.Action.TOKEN_USE,
                user=None,
                request=http_request,
                outcome=AuditEntry.Outcome.DENIED,
                details={**asked, "reason": str(error.detail)},
            )
            raise
        record(
            AuditEntry.Action.TOKEN_USE,
            user=user,
            request=http_request,
            details={**asked, "token": token.pk, "token_description": token.description},
        )
        return user, token

    def authenticate_credentials(self, clear_token: str) -> tuple[User, Token]:
        token = Token.objects.find_by_clear_token(clear_token)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.is_expired:
            raise exceptions.AuthenticationFailed("The token has expired.")
        user = token.owner
        if not user.is_active:
            raise exceptions.AuthenticationFailed("The token's user is inactive.")
        token.record_use()
        # The session middleware keeps the active group valid for browser users only.
        user.ensure_valid_active_group()
        return user, token

    def authenticate_header(self, request: Request) -> str:
        # Having a challenge makes DRF answer 401 (not 403) when authentication is missing.
        return KEYWORD
