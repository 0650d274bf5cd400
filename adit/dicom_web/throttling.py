"""Rate limiting per API token (DRF throttling).

The rate comes from `REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api_token"]` (env
`API_THROTTLE_RATE`, e.g. ``1000/hour``); without a rate nothing is limited. Counts live in
Django's cache, so with several web processes use a shared cache for an exact limit.
"""

from rest_framework.throttling import SimpleRateThrottle


class TokenRateThrottle(SimpleRateThrottle):
    scope = "api_token"

    def get_cache_key(self, request, view) -> str | None:
        token = getattr(request, "auth", None)
        token_pk = getattr(token, "pk", None)
        if token_pk is None:
            return None  # unauthenticated requests are refused anyway
        return self.cache_format % {"scope": self.scope, "ident": token_pk}
