"""ADIT's command line for developers and operators: `uv run cli <command>`.

`serve` runs the whole of ADIT on one machine (web, workers, receiver) and, when `DATABASE_URL`
is unset, its own embedded PostgreSQL. `test` runs the test suite the same way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import environ
import typer

PROJECT_DIR = Path(__file__).resolve().parent
app = typer.Typer(no_args_is_help=True, help=__doc__, add_completion=False)

if (PROJECT_DIR / ".env").exists():
    environ.Env.read_env(PROJECT_DIR / ".env", overwrite=False)


def _data_dir() -> Path:
    return Path(os.environ.get("ADIT_DATA_DIR") or PROJECT_DIR / ".adit-data").resolve()


_embedded_cluster = None  # the embedded cluster `database()` started, if any


@contextlib.contextmanager
def database() -> Iterator[str]:
    """Yield the database URL: `DATABASE_URL`, or the embedded cluster, started and stopped here."""
    global _embedded_cluster
    url = os.environ.get("DATABASE_URL", "")
    if url:
        yield url
        return
    from adit.embedded_postgres import EmbeddedPostgres

    cluster = EmbeddedPostgres(_data_dir())
    started = cluster.start()
    if started:
        print(
            f"Embedded PostgreSQL started on 127.0.0.1:{cluster.port()} ({cluster.describe()})",
            flush=True,
        )
        _embedded_cluster = cluster
    try:
        yield cluster.url()
    finally:
        if started:
            _embedded_cluster = None
            cluster.stop()
            print("Embedded PostgreSQL stopped", flush=True)


def _manage(*args: str, env: dict[str, str], capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT_DIR / "manage.py"), *args],
        env=env,
        cwd=PROJECT_DIR,
        check=True,
        text=True,
        capture_output=capture,
    )


def _exit_description(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class ChildProcesses:
    """Child processes with prefixed output, restarted when they exit, stopped together.

    Supervision (`supervise`, called twice a second by `serve`): a child that exits for any
    reason is started again after a backoff (1 s, doubling up to `MAX_RESTART_DELAY`; back to
    1 s once it has run `STABLE_SECONDS`), and a line names the child and its exit code. The
    embedded PostgreSQL cluster, which `pg_ctl` runs detached from us, is watched the same way
    and started again on its own port (the `port` file), so the children's `DATABASE_URL` stays
    right. Only `stop` (Ctrl-C, SIGTERM) ends the children for good.
    """

    FIRST_RESTART_DELAY = 1.0
    MAX_RESTART_DELAY = 30.0
    STABLE_SECONDS = 60.0
    CLUSTER_CHECK_SECONDS = 2.0

    def __init__(self, cluster=None) -> None:
        self.children: dict[str, subprocess.Popen] = {}
        self._specs: dict[str, tuple[list[str], dict[str, str]]] = {}
        self._started_at: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._restart_at: dict[str, float] = {}
        self._cluster = cluster
        self._cluster_checked_at = 0.0
        self.stopping = False

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self._specs[name] = (command, env)
        process = subprocess.Popen(
            command,
            env=env,
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # Own session: Ctrl-C reaches only us, and we stop the children in order.
            start_new_session=True,
        )
        self.children[name] = process
        self._started_at[name] = time.monotonic()
        width = 14
        prefix = f"[{name}]".ljust(width)

        def relay() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                sys.stdout.write(f"{prefix} {line}")
                sys.stdout.flush()

        threading.Thread(target=relay, daemon=True).start()

    def supervise(self) -> None:
        """Restart what exited (children and the embedded cluster), each after its backoff."""
        now = time.monotonic()
        self._supervise_cluster(now)
        for name, process in list(self.children.items()):
            if self.stopping:
                return
            code = process.poll()
            if code is None:
                if now - self._started_at[name] >= self.STABLE_SECONDS:
                    self._delay.pop(name, None)
                continue
            if name not in self._restart_at:
                delay = self._delay.get(name, self.FIRST_RESTART_DELAY)
                self._delay[name] = min(delay * 2, self.MAX_RESTART_DELAY)
                self._restart_at[name] = now + delay
                print(
                    f"[supervisor] {name} exited ({_exit_description(code)}); "
                    f"restarting it in {delay:.0f} s",
                    flush=True,
                )
            elif now >= self._restart_at[name]:
                del self._restart_at[name]
                command, env = self._specs[name]
                self.start(name, command, env)
                print(f"[supervisor] {name} restarted", flush=True)

    def _supervise_cluster(self, now: float) -> None:
        cluster = self._cluster
        if cluster is None or now - self._cluster_checked_at < self.CLUSTER_CHECK_SECONDS:
            return
        self._cluster_checked_at = now
        if "postgres" in self._restart_at:
            if now < self._restart_at["postgres"]:
                return
        elif cluster.is_running():
            if now - self._started_at.get("postgres", 0.0) >= self.STABLE_SECONDS:
                self._delay.pop("postgres", None)
            return
        else:
            delay = self._delay.get("postgres", self.FIRST_RESTART_DELAY)
            self._delay["postgres"] = min(delay * 2, self.MAX_RESTART_DELAY)
            self._restart_at["postgres"] = now + delay
            print(
                f"[supervisor] embedded PostgreSQL is not running; restarting it in {delay:.0f} s",
                flush=True,
            )
            return
        del self._restart_at["postgres"]
        try:
            cluster.start()
        except Exception as error:  # noqa: BLE001 - said, and tried again after the backoff
            print(f"[supervisor] embedded PostgreSQL did not start: {error}", flush=True)
            return
        self._started_at["postgres"] = now
        print(
            f"[supervisor] embedded PostgreSQL restarted on 127.0.0.1:{cluster.port()}",
            flush=True,
        )

    def stop(self, timeout: float = 70.0) -> None:
        self.stopping = True
        for process in self.children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process in self.children.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in time; killing it", flush=True)
                process.kill()
                process.wait()


def _is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health/", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _report_instance_secrets() -> None:
    """Create the secrets the environment does not set (as the settings would) and say where."""
    from adit.instance_secrets import NAMES, instance_secrets, secrets_file

    generated = [name for name in NAMES if not os.environ.get(name)]
    if generated:
        instance_secrets(_data_dir())
        print(
            f"Secrets not set in the environment ({', '.join(generated)}) are kept in "
            f"{secrets_file(_data_dir())} (mode 600, made at the first start)",
            flush=True,
        )


def _run_adit(host: str, port: int, extra_setup=None) -> None:
    stop_requested = threading.Event()

    def request_stop(signum, frame) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    with database() as database_url:
        env = {**os.environ, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
        env.setdefault("DJANGO_SETTINGS_MODULE", "adit.settings.development")
        if env["DJANGO_SETTINGS_MODULE"] == "adit.settings.development":
            _report_instance_secrets()
        print("Applying database migrations...", flush=True)
        _manage("migrate", "--no-input", "-v", "0", env=env)
        created = _manage("create_superuser", env=env, capture=True).stdout.strip()
        if extra_setup is not None:
            extra_setup(env)

        children = ChildProcesses(cluster=_embedded_cluster)
        python = sys.executable
        manage = str(PROJECT_DIR / "manage.py")
        children.start(
            "web",
            [python, "-m", "daphne", "-b", host, "-p", str(port), "adit.asgi:application"],
            env,
        )
        children.start("worker:default", [python, manage, "bg_worker", "-q", "default"], env)
        children.start("worker:dicom", [python, manage, "bg_worker", "-q", "dicom"], env)
        if (PROJECT_DIR / "adit/core/management/commands/receiver.py").exists():
            children.start("receiver", [python, manage, "receiver"], env)
        try:
            url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
            announced = False
            health_deadline = time.monotonic() + 60.0
            while not stop_requested.is_set():
                children.supervise()
                if not announced and _is_healthy(url):
                    announced = True
                    print(f"\nADIT is running at {url}/", flush=True)
                    if created:
                        print(created, flush=True)
                    print("Press Ctrl-C to stop.\n", flush=True)
                elif not announced and time.monotonic() > health_deadline:
                    announced = True
                    print(f"ADIT's web server did not answer at {url}/health/ in 60 s", flush=True)
                stop_requested.wait(0.5)
        finally:
            print("Stopping ADIT...", flush=True)
            children.stop()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address the web server listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the web server.")] = 8000,
) -> None:
    """Run ADIT: web server, workers and receiver (with embedded PostgreSQL if needed)."""
    _run_adit(host, port)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address the web server listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the web server.")] = 8000,
) -> None:
    """Like `serve`, plus two local demo PACS with synthetic patients, ready to query."""
    from adit.core.demo import DemoError, start_demo_pacs, stop_demo_pacs

    try:
        pacs = start_demo_pacs(_data_dir())
    except DemoError as error:
        print(f"The demo PACS could not start: {error}")
        raise typer.Exit(1) from error
    for server in pacs:
        where = f", web {server.rest_url}" if server.rest_url else ""
        print(f"{server.name}: AE {server.ae_title} on port {server.dicom_port}{where}", flush=True)

    def register_and_fill_demo_pacs(env: dict[str, str]) -> None:
        print("Registering the demo PACS and loading synthetic studies...", flush=True)
        _manage("populate_example_data", "--users", "0", "--groups", "0", env=env)
        _manage("populate_demo_pacs", env=env)

    # The demo is what newcomers see: the site's own error pages rather than Django's debug
    # page (tracebacks still go to the log). DJANGO_DEBUG=true in the environment restores it.
    os.environ.setdefault("DJANGO_DEBUG", "false")
    try:
        _run_adit(host, port, extra_setup=register_and_fill_demo_pacs)
    finally:
        stop_demo_pacs(pacs, _data_dir())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def test(ctx: typer.Context) -> None:
    """Run the test suite (pytest); extra arguments go to pytest."""
    with database() as database_url:
        env = {**os.environ, "DATABASE_URL": database_url}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", *ctx.args], env=env, cwd=PROJECT_DIR
        )
    raise typer.Exit(result.returncode)


def _run_steps(steps: list[list[str]]) -> None:
    failed = []
    for step in steps:
        print(f"$ {' '.join(step)}", flush=True)
        if subprocess.run(step, cwd=PROJECT_DIR).returncode != 0:
            failed.append(step[0] if step[0] != sys.executable else step[2])
    if failed:
        print(f"Failed: {', '.join(failed)}", flush=True)
        raise typer.Exit(1)


TEMPLATE_DIRS = ["adit"]


@app.command()
def lint() -> None:
    """Check code style and types: ruff, pyright, djlint."""
    _run_steps(
        [
            ["ruff", "check", "."],
            ["ruff", "format", "--check", "."],
            ["pyright"],
            ["djlint", "--lint", *TEMPLATE_DIRS, "--extension", "html"],
        ]
    )


@app.command("format-code")
def format_code() -> None:
    """Format code and templates, sort imports."""
    _run_steps(
        [
            ["ruff", "check", "--select", "I", "--fix", "."],
            ["ruff", "format", "."],
            ["djlint", "--reformat", *TEMPLATE_DIRS, "--extension", "html", "--quiet"],
        ]
    )


SECRET_VARIABLES = [
    "DJANGO_SECRET_KEY",
    "TOKEN_AUTHENTICATION_SALT",
    "PSEUDONYM_SALT",
    "FILE_TRANSMIT_SECRET",
    "SUPERUSER_PASSWORD",
    "POSTGRES_PASSWORD",
    "METRICS_TOKEN",
]


@app.command("init-workspace")
def init_workspace(
    force: Annotated[bool, typer.Option(help="Overwrite an existing .env.")] = False,
) -> None:
    """Create `.env` from `example.env` with fresh random secrets."""
    target = PROJECT_DIR / ".env"
    if target.exists() and not force:
        print(".env exists already (use --force to overwrite).")
        raise typer.Exit(1)
    lines = []
    for line in (PROJECT_DIR / "example.env").read_text().splitlines():
        name = line.split("=", 1)[0].strip()
        if name in SECRET_VARIABLES:
            line = f"{name}={secrets.token_urlsafe(36)}"
        lines.append(line)
    target.write_text("\n".join(lines) + "\n")
    target.chmod(0o600)
    print(f"Wrote {target} with random secrets.")


def _pg_tool(name: str) -> str:
    """pg_dump/pg_restore: for the embedded cluster its own (same version), else from PATH."""
    from adit.embedded_postgres import EmbeddedPostgres, find_bin_dir

    if not os.environ.get("DATABASE_URL"):
        return str(EmbeddedPostgres(_data_dir()).bin_dir / name)
    return shutil.which(name) or str(Path(find_bin_dir()) / name)


@app.command("db-backup")
def db_backup(
    file: Annotated[Path, typer.Argument(help="Backup file to write (pg_dump custom format).")],
) -> None:
    """Back up the database to a file."""
    with database() as url:
        subprocess.run([_pg_tool("pg_dump"), "-Fc", "-f", str(file), "-d", url], check=True)
    print(f"Database backed up to {file}")


@app.command("db-restore")
def db_restore(
    file: Annotated[Path, typer.Argument(help="Backup file written by db-backup.")],
) -> None:
    """Restore the database from a backup file (replaces what is there)."""
    with database() as url:
        subprocess.run(
            [_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "-d", url, str(file)],
            check=True,
        )
    print(f"Database restored from {file}")


COMPOSE_FILE = PROJECT_DIR / "docker" / "compose.yml"
# The project's one .env also feeds compose's ${...} interpolation (by default compose would
# read docker/.env, next to the compose file).
COMPOSE_COMMAND = ["docker", "compose", "--env-file", str(PROJECT_DIR / ".env"), "-f"]


@app.command("compose-up", context_settings={"allow_extra_args": True})
def compose_up(ctx: typer.Context) -> None:
    """Start ADIT with Docker Compose (needs a Docker engine)."""
    raise typer.Exit(
        subprocess.run([*COMPOSE_COMMAND, str(COMPOSE_FILE), "up", *ctx.args]).returncode
    )


@app.command("compose-down", context_settings={"allow_extra_args": True})
def compose_down(ctx: typer.Context) -> None:
    """Stop ADIT's Docker Compose stack."""
    raise typer.Exit(
        subprocess.run([*COMPOSE_COMMAND, str(COMPOSE_FILE), "down", *ctx.args]).returncode
    )


@app.command("vendor-assets")
def vendor_assets() -> None:
    """Refresh the vendored front-end files (Bootstrap, HTMX, Alpine.js, icons) from npm."""
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PROJECT_DIR, check=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adit.settings.development")
    from adit.core.vendoring import vendor_static_assets

    vendor_static_assets()


if __name__ == "__main__":
    app()
