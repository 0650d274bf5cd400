#!/bin/sh
# Entry point of every ADIT container (web, workers, receiver, init).
#
# Containers always run the production settings, whatever the shared .env says: that file also
# serves `uv run cli serve` outside Docker, where DJANGO_SETTINGS_MODULE may name the
# development settings. Production settings refuse to start without their secrets.
#
# The database password lives once, as POSTGRES_PASSWORD in the project's .env, which compose
# hands to the postgres container and to this one (env_file). When DATABASE_URL is left empty,
# it is built from that password for the compose stack's own database service.
set -eu
export DJANGO_SETTINGS_MODULE=adit.settings.production
if [ -z "${DATABASE_URL:-}" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "ADIT: set POSTGRES_PASSWORD (or DATABASE_URL) in .env (uv run cli init-workspace)" >&2
        exit 64
    fi
    # URL-encode the password: it may hold characters that end the URL's user info.
    DATABASE_URL="postgres://${POSTGRES_USER:-adit}:$(python -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["POSTGRES_PASSWORD"], safe=""))')@${POSTGRES_HOST:-postgres}:5432/${POSTGRES_DB:-adit}"
    export DATABASE_URL
fi
exec "$@"
