"""ASGI entry point: HTTP through Django, WebSockets through Channels (served by daphne)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adit.settings.development")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from adit.core.backpressure import with_backpressure  # noqa: E402
from adit.core.http_channel import install as install_http_channel  # noqa: E402
from adit.routing import websocket_urlpatterns  # noqa: E402

install_http_channel()  # daphne answers requests beyond its hard limits (see the module)

application = ProtocolTypeRouter(
    {
        # Streamed responses (WADO-RS) go at the client's pace, not into daphne's buffers.
        "http": with_backpressure(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
