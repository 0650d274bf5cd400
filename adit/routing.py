"""WebSocket routes of all apps (each app adds its consumers here)."""

from adit.selective_transfer.routing import (
    websocket_urlpatterns as selective_transfer_websockets,
)

websocket_urlpatterns: list = [*selective_transfer_websockets]
