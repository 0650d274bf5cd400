"""Recording of per-user API usage (requests, errors, bytes, last access) for DRF views."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from rest_framework.response import Response

from .models import APIUsage

logger = logging.getLogger(__name__)


class ApiUsageMixin:
    """Counts every request of an authenticated user once its response is complete.

    Streamed responses are counted when the stream ends (or the client goes away), with the
    bytes actually sent. A view may set `request.bytes_received` (e.g. a streamed upload).
    """

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        user = getattr(request, "_user", None)
        if user is not None and getattr(user, "is_authenticated", False):
            record_usage(user.pk, request, response)
        return response


def record_usage(user_id: int, request, response) -> None:
    received = getattr(request, "bytes_received", 0)
    error = response.status_code >= 400
    if isinstance(response, StreamingHttpResponse):
        response.streaming_content = _counted(
            response.streaming_content,  # type: ignore[arg-type]
            user_id,
            received,
        )
    elif isinstance(response, Response):
        response.add_post_render_callback(
            lambda rendered: APIUsage.record(
                user_id, bytes_sent=len(rendered.content), bytes_received=received, error=error
            )
        )
    else:
        APIUsage.record(
            user_id, bytes_sent=len(response.content), bytes_received=received, error=error
        )


async def _counted(content: AsyncIterator[bytes], user_id: int, received: int):
    sent = 0
    try:
        async for chunk in content:
            sent += len(chunk)
            yield chunk
    finally:
        try:
            await sync_to_async(APIUsage.record)(user_id, bytes_sent=sent, bytes_received=received)
        except Exception:  # statistics must never break a response
            logger.exception("Could not record API usage")
