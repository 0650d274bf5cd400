"""Secrets of an installation: generated once into the data folder, never public defaults."""

import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

from adit.instance_secrets import NAMES, instance_secrets, secrets_file

PROJECT_DIR = Path(__file__).resolve().parents[3]
# What development settings used before secrets were generated; must never come back.
OLD_PUBLIC_DEFAULTS = {
    "development-only-insecure-key-change-me",
    "development-salt",
    "development-pseudonym-salt",
}
SETTINGS_PROBE = """
import json, django
from django.conf import settings
django.setup()
from adit.core.dicom_settings import file_transmit_secret
print(json.dumps({
    "DJANGO_SECRET_KEY": settings.SECRET_KEY,
    "TOKEN_AUTHENTICATION_SALT": settings.TOKEN_AUTHENTICATION_SALT,
    "PSEUDONYM_SALT": settings.PSEUDONYM_SALT,
    "FILE_TRANSMIT_SECRET": settings.FILE_TRANSMIT_SECRET,
    "file_transmit_key": file_transmit_secret().hex(),
}))
"""


def _settings_environment(data_dir: Path, settings_module: str, **extra: str) -> dict[str, str]:
    # Empty values count as unset (and keep a developer's .env from filling them in).
    return {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": settings_module,
        "ADIT_DATA_DIR": str(data_dir),
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/unused",  # settings only, no connection
        **{name: "" for name in NAMES},
        **extra,
    }


def _settings_in_new_process(data_dir: Path, settings_module: str, **extra: str):
    return subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE],
        env=_settings_environment(data_dir, settings_module, **extra),
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_secrets_are_generated_once_private_and_reused(tmp_path):
    data_dir = tmp_path / "adit-data"

    first = instance_secrets(data_dir, environ={})

    assert set(first) == set(NAMES)
    assert len(set(first.values())) == len(NAMES)
    assert all(len(value) >= 48 for value in first.values())
    path = secrets_file(data_dir)
    assert path.stat().st_mode & 0o777 == 0o600
    written = path.read_bytes()

    assert instance_secrets(data_dir, environ={}) == first
    assert path.read_bytes() == written  # reused, not regenerated
    assert instance_secrets(tmp_path / "other-installation", environ={}) != first


def test_the_environment_wins_and_nothing_is_written_when_it_sets_all(tmp_path):
    environ = {name: f"from-environment-{name}" for name in NAMES}
    assert instance_secrets(tmp_path, environ=environ) == environ
    assert not secrets_file(tmp_path).exists()

    partly = instance_secrets(tmp_path, environ={"PSEUDONYM_SALT": "kept salt"})
    assert partly["PSEUDONYM_SALT"] == "kept salt"
    assert "PSEUDONYM_SALT" not in secrets_file(tmp_path).read_text()


def test_a_loose_file_mode_is_tightened(tmp_path):
    instance_secrets(tmp_path, environ={})
    secrets_file(tmp_path).chmod(0o644)
    instance_secrets(tmp_path, environ={})
    assert secrets_file(tmp_path).stat().st_mode & 0o777 == 0o600


def test_processes_starting_together_agree_on_one_set(tmp_path):
    code = (
        "import json, sys; from adit.instance_secrets import instance_secrets; "
        "print(json.dumps(instance_secrets(sys.argv[1], environ={})))"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [json.loads(process.communicate(timeout=60)[0]) for process in processes]
    assert all(result == results[0] for result in results)


def test_development_settings_use_the_generated_secrets(tmp_path):
    first = _settings_in_new_process(tmp_path, "adit.settings.development")
    assert first.returncode == 0, first.stderr
    values = json.loads(first.stdout)

    stored = instance_secrets(tmp_path, environ={})
    for name in NAMES:
        assert values[name] == stored[name]
    assert not OLD_PUBLIC_DEFAULTS & set(values.values())
    public_key_derived = hmac.new(
        b"development-only-insecure-key-change-me",
        b"adit-file-transmit-subscription",
        hashlib.sha256,
    ).hexdigest()
    assert values["file_transmit_key"] != public_key_derived

    again = _settings_in_new_process(tmp_path, "adit.settings.development")
    assert json.loads(again.stdout) == values  # a restart keeps sessions, tokens, pseudonyms

    chosen = _settings_in_new_process(
        tmp_path, "adit.settings.development", DJANGO_SECRET_KEY="chosen by the operator"
    )
    assert json.loads(chosen.stdout)["DJANGO_SECRET_KEY"] == "chosen by the operator"


def test_production_settings_refuse_to_start_without_secrets(tmp_path):
    result = _settings_in_new_process(tmp_path, "adit.settings.production")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
    assert not secrets_file(tmp_path).exists()
