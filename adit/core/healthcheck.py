"""Health check of a web container: `python -m adit.core.healthcheck [URL]`, exit 0 when healthy.

The Docker health check runs inside the web container and talks plain HTTP to daphne on
127.0.0.1, while the production settings expect requests through a TLS proxy. So the check
(1) asks for /health/, which the production settings exempt from the HTTPS redirect, (2) still
says `X-Forwarded-Proto: https`, as the proxy would, so it also passes when a deployment
redirects everything, and (3) sends a Host of `DJANGO_ALLOWED_HOSTS` (a wildcard entry like
`.example.org` becomes `example.org`), since 127.0.0.1 need not be an allowed host. It needs
neither Django nor the database settings, only the standard library.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.parse

DEFAULT_URL = "http://127.0.0.1:8000/health/"


def allowed_host(allowed_hosts: str) -> str:
    """A Host header value the settings accept, from a `DJANGO_ALLOWED_HOSTS` string."""
    for entry in (part.strip() for part in allowed_hosts.split(",")):
        if not entry or entry == "*":
            continue
        return entry.lstrip(".")
    return "localhost"


def check(url: str = DEFAULT_URL, allowed_hosts: str | None = None, timeout: float = 5.0) -> str:
    """GET the health URL; return "" when it answered 200, else why not.

    Args:
        url: the web server's /health/ URL (plain HTTP).
        allowed_hosts: `DJANGO_ALLOWED_HOSTS` (default: from the environment).
        timeout: seconds to wait for the answer.
    """
    if allowed_hosts is None:
        allowed_hosts = os.environ.get("DJANGO_ALLOWED_HOSTS", "")
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout
    )
    try:
        connection.request(
            "GET",
            parts.path or "/",
            headers={"Host": allowed_host(allowed_hosts), "X-Forwarded-Proto": "https"},
        )
        response = connection.getresponse()
        body = response.read(1000)
    except OSError as error:
        return f"{url}: {error}"
    finally:
        connection.close()
    if response.status != 200:
        return f"{url} answered {response.status}: {body.decode(errors='replace')}"
    return ""


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    problem = check(url)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
