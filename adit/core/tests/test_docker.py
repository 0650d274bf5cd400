"""The Docker files, checked without a Docker engine (CI has none).

The compose files are read as YAML (with their anchors and merge keys resolved, as compose does)
and checked for what makes the stack safe by default: production settings in every ADIT
container, one .env for compose and containers (no secret interpolated from compose's own
.env), volumes where the settings put folder destinations, the receiver spool and backups,
dicom workers that scale, the demo PACS of the development file. The entry point script and the
health check are run for real.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from adit.core import healthcheck
from adit.dicom_web.testing import start_live_server, stop_live_server

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"
ADIT_SERVICES = ["init", "web", "default_worker", "dicom_worker", "receiver"]


def _compose(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def _merged(base: dict, override: dict) -> dict:
    """The services of two compose files as `docker compose -f base -f override` merges them
    (mappings merged key by key, the override's values win)."""
    services = {name: dict(service) for name, service in base["services"].items()}
    for name, service in override["services"].items():
        merged = services.setdefault(name, {})
        for key, value in service.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return services


def _volume_targets(service: dict) -> dict[str, str]:
    """Mount point → volume name."""
    targets = {}
    for volume in service.get("volumes", []):
        name, target = volume.split(":")[:2]
        targets[target] = name
    return targets


def test_every_adit_container_runs_the_production_settings():
    services = _compose("compose.yml")["services"]
    for name in ADIT_SERVICES:
        assert services[name]["environment"]["DJANGO_SETTINGS_MODULE"] == (
            "adit.settings.production"
        ), name
    dev = _merged(_compose("compose.yml"), _compose("compose.dev.yml"))
    for name in [*ADIT_SERVICES, "demo_data"]:
        assert dev[name]["environment"]["DJANGO_SETTINGS_MODULE"] == "adit.settings.production"
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "DJANGO_SETTINGS_MODULE=adit.settings.production" in dockerfile
    assert 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in dockerfile


def test_one_env_file_feeds_compose_and_every_container():
    for file in ["compose.yml", "compose.dev.yml"]:
        text = (DOCKER / file).read_text()
        # Compose would take interpolated values from docker/.env, not from the project's .env.
        interpolated = set(re.findall(r"\$\{(\w+)", text))
        assert interpolated <= {"ADIT_WEB_PORT", "ADIT_DICOM_PORT"}, (file, interpolated)
    services = _compose("compose.yml")["services"]
    for name in ["postgres", *ADIT_SERVICES]:
        assert (DOCKER / services[name]["env_file"]).resolve() == ROOT / ".env", name
    assert "POSTGRES_PASSWORD" not in services["postgres"].get("environment", {})
    example = (ROOT / "example.env").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=", example, re.MULTILINE)


def test_volumes_hold_folder_destinations_the_receiver_spool_and_backups():
    compose = _compose("compose.yml")
    services = compose["services"]
    for name in ["postgres-data", "folders", "receiver-spool", "backups"]:
        assert name in compose["volumes"]
    environment = services["web"]["environment"]
    data_dir = environment["ADIT_DATA_DIR"]
    assert _volume_targets(services["dicom_worker"])[environment["FOLDERS_MOUNT_DIR"]] == "folders"
    assert _volume_targets(services["web"])[environment["FOLDERS_MOUNT_DIR"]] == "folders"
    # The receiver spools under ADIT_DATA_DIR/receiver-spool (manage.py receiver).
    assert _volume_targets(services["receiver"])[f"{data_dir}/receiver-spool"] == "receiver-spool"
    assert _volume_targets(services["default_worker"])[environment["DB_BACKUP_DIR"]] == "backups"
    assert _volume_targets(services["postgres"])["/var/lib/postgresql/data"] == "postgres-data"


def test_workers_and_receiver_are_separate_services_and_dicom_workers_scale():
    services = _compose("compose.yml")["services"]
    commands = {name: services[name].get("command", "") for name in ADIT_SERVICES}
    assert commands["dicom_worker"] == "python manage.py bg_worker -q dicom"
    assert commands["default_worker"] == "python manage.py bg_worker -q default"
    assert commands["receiver"] == "python manage.py receiver"
    # `--scale dicom_worker=N` needs a service without a fixed name or published port.
    assert "container_name" not in services["dicom_worker"]
    assert "ports" not in services["dicom_worker"]
    assert services["dicom_worker"]["environment"]["FILE_TRANSMIT_HOST"] == "receiver"
    assert services["receiver"]["environment"]["FILE_TRANSMIT_HOST"] == "0.0.0.0"


def test_the_development_file_adds_two_orthanc_demo_pacs():
    dev = _merged(_compose("compose.yml"), _compose("compose.dev.yml"))
    orthancs = {name: s for name, s in dev.items() if "orthanc" in s.get("image", "")}
    assert sorted(orthancs) == ["orthanc1", "orthanc2"]
    assert {s["environment"]["ORTHANC__DICOM_AET"] for s in orthancs.values()} == {
        "ORTHANC1",
        "ORTHANC2",
    }
    for service in orthancs.values():
        assert '"receiver", 11112' in service["environment"]["ORTHANC__DICOM_MODALITIES"]
    assert dev["web"]["environment"]["DJANGO_SECURE_SSL_REDIRECT"] == "false"
    assert "orthanc1:8042" in dev["demo_data"]["command"]


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    entries = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in [".env", ".venv", ".adit-data", ".git", "node_modules", "**/__pycache__"]:
        assert entry in entries, entry
    # example.env must stay in the image: the settings read it (`_unset_empty_variables`).
    assert not any(entry in entries for entry in ["example.env", "*.env", "*env"])


def _entrypoint(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "env"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
    )


def test_the_entrypoint_forces_production_and_builds_the_database_url():
    result = _entrypoint(
        {"DJANGO_SETTINGS_MODULE": "adit.settings.development", "POSTGRES_PASSWORD": "p@ss/w:rd"}
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "DJANGO_SETTINGS_MODULE=adit.settings.production" in lines
    assert "DATABASE_URL=postgres://adit:p%40ss%2Fw%3Ard@postgres:5432/adit" in lines

    given = _entrypoint({"DATABASE_URL": "postgres://x:y@db/z"})
    assert "DATABASE_URL=postgres://x:y@db/z" in given.stdout.splitlines()

    missing = _entrypoint({"DATABASE_URL": ""})
    assert missing.returncode == 64
    assert "POSTGRES_PASSWORD" in missing.stderr


def test_allowed_host_of_the_health_check():
    assert healthcheck.allowed_host("adit.example.org,localhost") == "adit.example.org"
    assert healthcheck.allowed_host(" , .example.org") == "example.org"
    assert healthcheck.allowed_host("*") == "localhost"


@pytest.mark.django_db(transaction=True)
def test_health_check_passes_behind_the_https_redirect(tmp_path):
    """daphne with the production settings, as in the web container; the check as compose runs
    it (`python -m adit.core.healthcheck URL`)."""
    server = start_live_server(
        tmp_path,
        extra_env={
            "DJANGO_SETTINGS_MODULE": "adit.settings.production",
            "DJANGO_ALLOWED_HOSTS": "adit.example.org",
            "DJANGO_SECURE_SSL_REDIRECT": "true",
        },
    )
    try:
        url = f"{server.url}/health/"
        check = subprocess.run(
            [sys.executable, "-m", "adit.core.healthcheck", url],
            env={**os.environ, "DJANGO_ALLOWED_HOSTS": "adit.example.org"},
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
        assert "answered 400" in healthcheck.check(url, allowed_hosts="other.example.org")
        # Plain HTTP without the proxy's header: /health/ is exempt, other paths redirect.
        host = {"Host": "adit.example.org"}
        assert requests.get(url, headers=host, allow_redirects=False).status_code == 200
        home = requests.get(f"{server.url}/", headers=host, allow_redirects=False)
        assert home.status_code == 301
        assert home.headers["Location"] == "https://adit.example.org/"
    finally:
        stop_live_server(server)


def test_production_settings_exempt_health_from_the_redirect():
    text = (ROOT / "adit" / "settings" / "production.py").read_text()
    assert 'SECURE_REDIRECT_EXEMPT = [r"^health/$"]' in text


def test_init_workspace_writes_the_database_password_and_compose_reads_that_env(
    tmp_path, monkeypatch
):
    import cli

    (tmp_path / "example.env").write_text((ROOT / "example.env").read_text())
    monkeypatch.setattr(cli, "PROJECT_DIR", tmp_path)
    cli.init_workspace(force=False)
    written = dict(
        line.split("=", 1)
        for line in (tmp_path / ".env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert len(written["POSTGRES_PASSWORD"]) >= 32
    assert len(written["METRICS_TOKEN"]) >= 32
    # `cli compose-up` makes compose interpolate from the project's .env, not docker/.env.
    assert cli.COMPOSE_COMMAND == ["docker", "compose", "--env-file", str(ROOT / ".env"), "-f"]
