"""LOG_FORMAT=json: every log line a JSON object, as log collectors read them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from adit.core.testing.workers import PROJECT_DIR

SCRIPT = """
import logging, django
django.setup()
logging.getLogger("adit.example").warning("disk %s is full", "/data")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("adit.example").exception("it broke")
"""


def run(log_format: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "adit.settings.test", "LOG_FORMAT": log_format}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=PROJECT_DIR, capture_output=True, text=True
    )


def test_json_logs_are_one_object_per_line():
    result = run("json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines[0]["message"] == "disk /data is full"
    assert lines[0]["level"] == "WARNING"
    assert lines[0]["logger"] == "adit.example"
    assert "time" in lines[0]
    assert lines[1]["message"] == "it broke"
    assert "ZeroDivisionError" in lines[1]["exc_info"]


def test_plain_logs_by_default_and_a_wrong_format_is_named():
    plain = run("plain")
    assert " WARNING adit.example: disk /data is full" in plain.stderr
    wrong = run("xml")
    assert wrong.returncode != 0
    assert "LOG_FORMAT must be 'plain' or 'json', not 'xml'" in wrong.stderr
