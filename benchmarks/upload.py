"""Benchmark of the upload page against STOW-RS straight to Orthanc with curl, in one run.

Writes `--instances` synthetic CT instances (`make_large_study`, 512×512 px, 16 bit, one
patient) to a folder, starts one Orthanc (DICOMweb plugin), daphne (ADIT's ASGI server) and a
real `manage.py bg_worker -q dicom` on a throwaway database (on the server of DATABASE_URL), and
then stores the folder in Orthanc twice, emptying Orthanc in between:

* reference: curl sends every file in one STOW-RS request (multipart/related, the body built
  beforehand, untimed) straight to Orthanc;
* ADIT: headless Chromium opens the upload page, picks the folder, pseudonymizes each file
  in the browser (dcmjs, the header only), sends them (4 parallel requests), ADIT checks and
  stages each one and hands every 48 to the worker, which stores them on Orthanc (C-STORE)
  while the page sends the rest; the page commits the job at the end. The time runs from the
  click on Upload until Orthanc holds every instance under the pseudonym (the time until the
  page had sent everything, and the page's requests as the browser timed them, are printed
  too).

It prints both times, instances/s, the ratio of the rates (goal >= 0.5) and the browser's
memory: the peak of the summed RSS of all Chromium processes (sampled every 50 ms) and the
peak of the page's JS heap (Chrome DevTools Protocol, sampled every 250 ms). Run it with::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adit uv run python benchmarks/upload.py \\
        [--instances 300] [--rows 512] [--driver pipe|playwright] [--profile-page FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from adit.core.dicom.testing.peers import OrthancInstance, free_port, require_orthanc  # noqa: E402

PATIENT_ID = "BENCH-UPL-0001"
PSEUDONYM = "BENCH-UPL-PSN"
USERNAME = "bench"


class ChromiumMemory:
    """Samples the summed RSS of this process's Chromium descendants in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self.me = psutil.Process(os.getpid())
        self.interval = interval
        self.peak = 0
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (process type, CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChromiumMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for child in self.me.children(recursive=True):
                try:
                    if "chrom" in child.name().lower():
                        total += child.memory_info().rss
                        times = child.cpu_times()
                        kind = next(
                            (a[7:] for a in child.cmdline() if a.startswith("--type=")), "browser"
                        )
                        self.cpu[child.pid] = (kind, times.user + times.system)
                except Exception:  # noqa: BLE001 - a process that just ended
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)


def mib(value: float) -> str:
    return f"{value / 1024**2:.0f} MiB"


def stow_body(paths: list[Path], boundary: str, target: Path) -> None:
    with target.open("wb") as out:
        for path in paths:
            out.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            out.write(path.read_bytes())
            out.write(b"\r\n")
        out.write(f"--{boundary}--\r\n".encode())


def instances_held(orthanc: OrthancInstance, patient_id: str) -> int:
    found = orthanc.rest(
        "POST", "/tools/find", json={"Level": "Instance", "Query": {"PatientID": patient_id}}
    ).json()
    return len(found)


def clear(orthanc: OrthancInstance) -> None:
    for patient in orthanc.rest("GET", "/patients").json():
        orthanc.rest("DELETE", f"/patients/{patient}")


def curl_stow(orthanc: OrthancInstance, paths: list[Path], work_dir: Path) -> float:
    boundary = uuid.uuid4().hex
    body = work_dir / "stow-body.bin"
    stow_body(paths, boundary, body)
    started = time.perf_counter()
    subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--tcp-nodelay",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-H",
            f'Content-Type: multipart/related; type="application/dicom"; boundary={boundary}',
            "-H",
            "Accept: application/dicom+json",
            "--data-binary",
            f"@{body}",
            f"{orthanc.dicomweb_url}/studies",
        ],
        check=True,
    )
    seconds = time.perf_counter() - started
    body.unlink()
    held = instances_held(orthanc, PATIENT_ID)
    if held != len(paths):
        raise SystemExit(f"curl STOW-RS: Orthanc holds {held} of {len(paths)} instances")
    return seconds


def start_daphne(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "adit.asgi:application",
        ],
        env=env,
        cwd=PROJECT_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("daphne exited while starting")
        try:
            if requests.get(f"{url}/accounts/login/", timeout=2).ok:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit("daphne did not answer within 60 s")


def browser_upload(
    url: str,
    folder: Path,
    orthanc: OrthancInstance,
    n: int,
    timeout: float,
    profile: Path | None = None,
):
    from playwright.sync_api import expect, sync_playwright

    from adit.accounts.factories import DEFAULT_PASSWORD
    from adit.core.testing.browser import CHROMIUM_ARGS, CHROMIUM_PATH

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM_PATH), args=CHROMIUM_ARGS)
        page = browser.new_page()

        def show_warning(message) -> None:
            if message.type in ("warning", "error"):
                print(f"  page console: {message.text}", flush=True)

        page.on("console", show_warning)
        page.set_default_timeout(timeout * 1000)
        page.goto(f"{url}/accounts/login/")
        page.get_by_label("Username").fill(USERNAME)
        page.get_by_label("Password").fill(DEFAULT_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{url}/")
        page.goto(f"{url}/upload/")
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        heap_peak = 0
        with ChromiumMemory() as memory:
            picked = time.perf_counter()
            page.locator("#upload-folder-input").set_input_files(folder)
            expect(page.locator("#upload-summary-instances")).to_have_text(str(n))
            read_seconds = time.perf_counter() - picked
            page.get_by_label("Destination").select_option(label="Orthanc")
            page.get_by_label("Pseudonym").fill(PSEUDONYM)
            if profile:
                cdp.send("Profiler.enable")
                cdp.send("Profiler.start")
            started = time.perf_counter()
            page.locator("#upload-start").click()
            done = page.locator("#upload-done")
            sent_seconds = None
            while True:
                metrics = {
                    m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]
                }
                heap_peak = max(heap_peak, metrics.get("JSHeapUsedSize", 0))
                if sent_seconds is None and done.is_visible():
                    sent_seconds = time.perf_counter() - started
                    if profile:
                        import json

                        profile.write_text(json.dumps(cdp.send("Profiler.stop")["profile"]))
                if sent_seconds is not None and instances_held(orthanc, PSEUDONYM) >= n:
                    break
                if time.perf_counter() - started > timeout:
                    held = instances_held(orthanc, PSEUDONYM)
                    says = page.locator("#upload-error").inner_text()
                    raise SystemExit(
                        f"ADIT upload: Orthanc holds {held} of {n} after {timeout} s: {says}"
                    )
                time.sleep(0.25)
            seconds = time.perf_counter() - started
        browser.close()
    by_kind: dict[str, float] = {}
    for kind, cpu_seconds in memory.cpu.values():
        by_kind[kind] = by_kind.get(kind, 0.0) + cpu_seconds
    return seconds, sent_seconds, read_seconds, memory.peak, heap_peak, by_kind


class PipeCDP:
    """Chromium driven over ``--remote-debugging-pipe`` with only the Page, Runtime and DOM
    domains: no network instrumentation copies the request bodies (Playwright's does, which
    costs the page about 0.5 s per 8 MB POST on this machine)."""

    def __init__(self, user_data_dir: Path) -> None:
        from adit.core.testing.browser import CHROMIUM_ARGS, CHROMIUM_PATH

        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        self.process = subprocess.Popen(
            [
                str(CHROMIUM_PATH),
                *CHROMIUM_ARGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={user_data_dir}",
                "about:blank",
            ],
            # Chromium reads commands on fd 3 and answers on fd 4; close_fds would close them
            # (it runs after preexec_fn).
            close_fds=False,
            preexec_fn=lambda: (os.dup2(to_chrome_r, 3), os.dup2(from_chrome_w, 4)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.session = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pages = [
                t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"
            ]
            if pages:
                break
            time.sleep(0.2)
        target = pages[0]["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, **params):
        import json

        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise SystemExit("Chromium closed its debugging pipe (it exited)")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def js(self, expression: str):
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.js(expression):
                    return
            except RuntimeError:
                pass  # the page is navigating
            time.sleep(0.1)
        raise SystemExit(f"Timed out waiting for {expression}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


# The page's requests as the browser timed them (Resource Timing): when each POST of files
# started, when its answer began and ended, relative to the first one.
REQUEST_TIMINGS = """(() => {
  const entries = performance.getEntriesByType("resource").filter(
    (e) => /\\/instances\\/$/.test(e.name) && e.initiatorType === "xmlhttprequest");
  return entries.map((e) => [e.startTime, e.requestStart, e.responseStart, e.responseEnd]);
})()"""


def print_requests(timings: list[list[float]]) -> None:
    if not timings:
        return
    first = min(t[0] for t in timings)
    last = max(t[3] for t in timings)
    durations = sorted(t[3] - t[0] for t in timings)
    waits = sorted(t[3] - t[2] for t in timings)
    print(
        f"  page: {len(timings)} requests of files from {0:.0f} to {last - first:.0f} ms; "
        f"each {durations[len(durations) // 2]:.0f} ms (median; max {durations[-1]:.0f}), "
        f"answer after the body {waits[len(waits) // 2]:.0f} ms (median)",
        flush=True,
    )
    for start, request, response, end in sorted(timings):
        print(
            f"    {start - first:7.0f} {request - first:7.0f} {response - first:7.0f} "
            f"{end - first:7.0f}",
            flush=True,
        )


def browser_upload_pipe(
    url: str, folder: Path, orthanc: OrthancInstance, n: int, timeout: float, work_dir: Path
):
    """The same upload as `browser_upload`, in a Chromium without network instrumentation."""
    import json

    from adit.accounts.factories import DEFAULT_PASSWORD

    chrome = PipeCDP(work_dir / "chrome-profile")
    try:
        chrome.call("Page.navigate", url=f"{url}/accounts/login/")
        chrome.wait_for("!!document.getElementById('id_username')")
        chrome.js(
            f"document.getElementById('id_username').value = {json.dumps(USERNAME)};"
            f"document.getElementById('id_password').value = {json.dumps(DEFAULT_PASSWORD)};"
            "document.getElementById('id_username').form.submit(); true"
        )
        chrome.wait_for("location.pathname === '/' && document.readyState === 'complete'")
        chrome.call("Page.navigate", url=f"{url}/upload/")
        chrome.wait_for("!!(window.Alpine && document.getElementById('upload-folder-input'))")
        time.sleep(0.5)
        with ChromiumMemory() as memory:
            picked = time.perf_counter()
            root = chrome.call("DOM.getDocument")["root"]["nodeId"]
            node = chrome.call("DOM.querySelector", nodeId=root, selector="#upload-folder-input")[
                "nodeId"
            ]
            # A webkitdirectory input takes the folder (Chromium lists it), as Playwright does.
            chrome.call("DOM.setFileInputFiles", files=[str(folder)], nodeId=node)
            chrome.wait_for(
                f"document.getElementById('upload-summary-instances').textContent.trim() === '{n}'"
            )
            read_seconds = time.perf_counter() - picked
            chrome.js(
                "const s = document.getElementById('upload-destination');"
                "s.value = [...s.options].find((o) => o.text.trim() === 'Orthanc').value;"
                "s.dispatchEvent(new Event('change', {bubbles: true}));"
                "const p = document.getElementById('upload-pseudonym');"
                f"p.value = {json.dumps(PSEUDONYM)};"
                "p.dispatchEvent(new Event('input', {bubbles: true})); true"
            )
            started = time.perf_counter()
            chrome.js("document.getElementById('upload-start').click(); true")
            sent_seconds = None
            while True:
                if sent_seconds is None and chrome.js(
                    "document.getElementById('upload-done').offsetParent !== null"
                ):
                    sent_seconds = time.perf_counter() - started
                    print_requests(chrome.js(REQUEST_TIMINGS))
                if sent_seconds is not None and instances_held(orthanc, PSEUDONYM) >= n:
                    break
                if time.perf_counter() - started > timeout:
                    says = chrome.js("document.getElementById('upload-error').innerText")
                    raise SystemExit(f"ADIT upload (pipe): not done after {timeout} s: {says}")
                time.sleep(0.25)
            seconds = time.perf_counter() - started
    finally:
        chrome.close()
    by_kind: dict[str, float] = {}
    for kind, cpu_seconds in memory.cpu.values():
        by_kind[kind] = by_kind.get(kind, 0.0) + cpu_seconds
    return seconds, sent_seconds, read_seconds, memory.peak, 0, by_kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--rows", type=int, default=512, help="image size (rows = columns)")
    parser.add_argument("--timeout", type=float, default=900, help="per run, seconds")
    parser.add_argument(
        "--driver",
        choices=["playwright", "pipe"],
        default="pipe",
        help="pipe (default): Chromium over --remote-debugging-pipe, as a user's browser runs "
        "(no network instrumentation); playwright: through Playwright (needed for --profile-page)",
    )
    parser.add_argument(
        "--profile-page",
        type=Path,
        help="write a CPU profile of the page's main thread while it sends (.cpuprofile)",
    )
    args = parser.parse_args(argv)
    if args.profile_page and args.driver != "playwright":
        parser.error("--profile-page needs --driver playwright")
    try:
        require_orthanc()
    except BaseException as error:  # pytest's skip outside of pytest
        raise SystemExit(f"Orthanc is needed: {error}") from None

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adit.settings.test")
    import django

    django.setup()
    from django.test.utils import (  # pyright: ignore[reportAttributeAccessIssue]
        setup_databases,
        setup_test_environment,
        teardown_databases,  # pyright: ignore[reportAttributeAccessIssue]
    )

    setup_test_environment()
    work_dir = Path(tempfile.mkdtemp(prefix="adit-upload-bench-"))
    orthanc = OrthancInstance("ORTHANC", base_dir=work_dir / "orthanc")
    print(f"Writing {args.instances} instances of {args.rows}x{args.rows} px ...", flush=True)
    from adit.core.dicom.testing.synthetic import make_large_study, write_study

    folder = work_dir / "cd"
    paths = write_study(
        make_large_study(args.instances, PATIENT_ID, rows=args.rows, columns=args.rows),
        folder,
    )
    total = sum(path.stat().st_size for path in paths)
    old_config = setup_databases(verbosity=0, interactive=False)
    daphne = worker = None
    try:
        orthanc.start()
        from adit.core.testing.workers import start_worker, stop_worker, worker_environment

        env = {
            **worker_environment({"UPLOAD_STAGING_DIR": str(work_dir / "staging")}),
            "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
        }
        create_user_and_destination(orthanc)
        daphne, url = start_daphne(env)
        worker = start_worker("dicom", env={"UPLOAD_STAGING_DIR": str(work_dir / "staging")})
        wait_for_worker(worker)
        load = os.getloadavg()
        print(f"Load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)

        curl_seconds = curl_stow(orthanc, paths, work_dir)
        clear(orthanc)
        import psutil

        daphne_cpu = psutil.Process(daphne.pid).cpu_times()
        if args.driver == "pipe":
            adit_seconds, sent_seconds, read_seconds, rss_peak, heap_peak, chromium_cpu = (
                browser_upload_pipe(url, folder, orthanc, len(paths), args.timeout, work_dir)
            )
        else:
            adit_seconds, sent_seconds, read_seconds, rss_peak, heap_peak, chromium_cpu = (
                browser_upload(url, folder, orthanc, len(paths), args.timeout, args.profile_page)
            )
        daphne_after = psutil.Process(daphne.pid).cpu_times()
        daphne_cpu_seconds = (daphne_after.user + daphne_after.system) - (
            daphne_cpu.user + daphne_cpu.system
        )
        load = os.getloadavg()
        n = len(paths)
        ratio = curl_seconds / adit_seconds
        print()
        print(f"{n} instances, {total / 1024**2:.0f} MiB")
        curl_rate, adit_rate = n / curl_seconds, n / adit_seconds
        print(
            f"curl STOW-RS to Orthanc (reference):  {curl_seconds:7.2f} s  {curl_rate:7.1f} inst/s"
        )
        print(
            f"ADIT upload page → Orthanc:           {adit_seconds:7.2f} s  {adit_rate:7.1f} inst/s"
            f"  ratio {ratio:.2f} × (goal ≥ 0.5)"
        )
        print(
            f"  of which the page sending all:      {sent_seconds:7.2f} s"
            f"  (reading the folder before: {read_seconds:.2f} s)"
        )
        print(f"Browser memory peak: Chromium RSS {mib(rss_peak)}, page JS heap {mib(heap_peak)}")
        print(
            "CPU time: Chromium (from its start) "
            + ", ".join(f"{kind} {value:.1f} s" for kind, value in sorted(chromium_cpu.items()))
            + f"; daphne while uploading {daphne_cpu_seconds:.1f} s"
        )
        print(f"Load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if worker is not None:
            stop_worker(worker)
            worker = None
    finally:
        if worker is not None:
            from adit.core.testing.workers import stop_worker

            stop_worker(worker)
        if daphne is not None:
            daphne.terminate()
            daphne.wait(timeout=15)
        orthanc.stop()
        from django.db import connections

        connections.close_all()
        teardown_databases(old_config, verbosity=0)
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


def wait_for_worker(worker: subprocess.Popen, timeout: float = 120) -> None:
    """Until the worker has registered with the queue (Django's start-up is slow under load)."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit("The worker exited at start")
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM procrastinate_workers")
            row = cursor.fetchone()
        if row and row[0]:
            time.sleep(0.5)
            return
        time.sleep(0.2)
    raise SystemExit(f"The worker did not start within {timeout} s")


def create_user_and_destination(orthanc: OrthancInstance) -> None:
    import dataclasses

    from django.contrib.auth.models import Permission

    from adit.accounts.factories import GroupFactory, UserFactory
    from adit.core.models import DicomNodeGroupAccess, DicomServer

    group = GroupFactory(name="Bench uploaders")
    group.permissions.add(
        Permission.objects.get(content_type__app_label="upload", codename="add_uploadjob")
    )
    UserFactory(username=USERNAME, groups=[group])
    server = DicomServer.objects.create(**dataclasses.asdict(orthanc.server_config(name="Orthanc")))
    DicomNodeGroupAccess.objects.create(node=server, group=group, destination=True)


if __name__ == "__main__":
    raise SystemExit(main())
