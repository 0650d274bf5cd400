"""ASGI entry point: HTTP through Django, WebSockets through Channels (served by daphne)."""

import os
import sys

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adit.settings.development")


class _ASGIHandler(ASGIHandler):
    # Django cuts every response body into ASGI messages of 64 KiB; a streamed WADO-RS
    # retrieve (158 MB for a 300-instance CT study) would be 2,400 messages, each a round
    # through the event loop, the backpressure gate and daphne. Its parts (about one instance,
    # or a relayed MiB) go whole; Twisted writes them to the socket in its own pieces anyway.
    chunk_size = 4 * 1024 * 1024


# The web process streams retrieves through threads (a C-GET's fetch thread acknowledges each
# instance; relay reads) beside the event loop, all under one interpreter lock. A thread back
# from a socket call waits for the lock until the holder lets go, by default up to 5 ms: per
# instance of a C-GET, that wait was most of its time. Handing the lock over sooner costs
# little here (the threads mostly wait on sockets).
sys.setswitchinterval(0.0005)

# What django.core.asgi.get_asgi_application() does, with the handler above.
django.setup(set_prefix=False)
django_asgi_app = _ASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from twisted.internet import abstract as _abstract  # noqa: E402

from adit.core.backpressure import with_backpressure  # noqa: E402
from adit.core.http_channel import install as install_http_channel  # noqa: E402
from adit.routing import websocket_urlpatterns  # noqa: E402

# Twisted sends at most 128 KiB per write event (FileDescriptor.SEND_LIMIT): a 158 MB retrieve
# took 1,200 rounds through the event loop, each holding the interpreter lock that the C-GET's
# fetch thread needs to answer its next instance. The kernel takes what fits into the socket
# buffer either way; a larger limit only spares the rounds (about a tenth of a C-GET-source
# retrieve's time, benchmarks/dicomweb.py).
_abstract.FileDescriptor.SEND_LIMIT = 4 * 1024 * 1024

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
