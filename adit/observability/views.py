"""/metrics for Prometheus, open only to a bearer token or to listed client addresses.

Metrics reveal little (counts, server names, AE titles), but enough to map a hospital's PACS
landscape, so /metrics is closed unless configured: `METRICS_TOKEN` (Prometheus'
`authorization: {credentials: ...}`, sent as `Authorization: Bearer <token>`) and/or
`METRICS_ALLOWED_IPS` (addresses or networks; the address Django sees, i.e. behind a proxy the
proxy's). Without either, every request gets 403; a request with a wrong or missing token gets
401 (with `WWW-Authenticate: Bearer`) when a token is configured, else 403.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from .metrics import render


def _client_allowed(request: HttpRequest) -> bool:
    networks = settings.METRICS_ALLOWED_NETWORKS
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in networks)


def _token_given(request: HttpRequest) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _refusal(request: HttpRequest) -> HttpResponse | None:
    token = settings.METRICS_TOKEN
    given = _token_given(request)
    if token and given is not None and hmac.compare_digest(given.encode(), token.encode()):
        return None
    if _client_allowed(request):
        return None
    if token:
        response = HttpResponse(
            "401 Unauthorized: send the metrics token as 'Authorization: Bearer <token>'.\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="adit-metrics"'
        return response
    reason = (
        "this address is not in METRICS_ALLOWED_IPS"
        if settings.METRICS_ALLOWED_NETWORKS
        else "metrics are off (set METRICS_TOKEN or METRICS_ALLOWED_IPS)"
    )
    return HttpResponse(f"403 Forbidden: {reason}.\n", status=403, content_type="text/plain")


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
