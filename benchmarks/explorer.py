"""Benchmark of the DICOM explorer against the PACS it looks at, in one run.

Starts one Orthanc (own temporary folder), stores a patient with five studies, one of them
with ten CT series, and measures through ADIT's real views (Django's test client, in a
throwaway test database on the server of DATABASE_URL, or the embedded PostgreSQL):

* study list: the patient page (``/explorer/servers/<id>/patient/?patient_id=...``: form
  validation, access check, C-FIND, audit entry, template) with an empty cache, against the
  same STUDY-level C-FIND sent straight to Orthanc with pynetdicom (a new association each
  time, as the page opens one). p50 over ``--runs`` runs; goal: ratio ≤ 1.5.
* thumbnail page: the study page and its ten series thumbnails, fetched six at a time as a
  browser does, with an empty cache, once with Orthanc rendering (WADO-RS ``/rendered``) and
  once over DIMSE only (ADIT fetches each instance by C-GET and renders it). Goal: < 2 s.

Run it with::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adit \\
        uv run python benchmarks/explorer.py [--runs 20] [--rows 256]

The numbers are reported, not asserted: compare lines of one run (the machine's other load
changes everything).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

PATIENT_ID = "EXPLORER-BENCH-1"
RATIO_GOAL = 1.5
THUMBNAIL_GOAL_SECONDS = 2.0
BROWSER_CONNECTIONS = 6


def main() -> int:
    parser = argparse.ArgumentParser(description="Time the DICOM explorer against Orthanc.")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=256, help="image size of the CT series")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adit.settings.test")
    import django

    django.setup()
    from django.test.utils import (  # pyright: ignore[reportAttributeAccessIssue]
        setup_databases,
        setup_test_environment,
        teardown_databases,
    )

    from adit.core.dicom.testing.peers import OrthancInstance

    setup_test_environment()
    print("Creating a throwaway test database and starting Orthanc (not timed) ...", flush=True)
    old_config = setup_databases(verbosity=0, interactive=False)
    with tempfile.TemporaryDirectory(prefix="adit-explorer-bench-") as folder:
        orthanc = OrthancInstance("EXPL_BENCH", base_dir=Path(folder) / "orthanc")
        orthanc.start()
        try:
            return run(orthanc, args.runs, args.rows)
        finally:
            orthanc.stop()
            teardown_databases(old_config, verbosity=0)


def _direct_c_find(orthanc, calling_ae: str) -> int:
    """The study list straight from Orthanc: one association, one STUDY-level C-FIND."""
    from pydicom import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # pyright: ignore[reportAttributeAccessIssue]
        StudyRootQueryRetrieveInformationModelFind,
    )

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = PATIENT_ID
    for keyword in (
        "PatientName",
        "PatientBirthDate",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyDescription",
        "AccessionNumber",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ):
        setattr(query, keyword, "")
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.ae_title)
    if not assoc.is_established:
        raise RuntimeError("Orthanc refused the association")
    found = 0
    try:
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found += 1
    finally:
        assoc.release()
    return found


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def run(orthanc, runs: int, rows: int) -> int:
    from django.conf import settings
    from django.contrib.auth.models import Permission
    from django.core.cache import cache
    from django.db import connections
    from django.test import Client
    from django.urls import reverse

    from adit.accounts.factories import GroupFactory, UserFactory
    from adit.core.dicom.testing.synthetic import make_study
    from adit.core.models import DicomNodeGroupAccess, DicomServer

    big = make_study(
        PATIENT_ID,
        study_date="20240105",
        series=tuple(("CT", 3) for _ in range(10)),
        rows=rows,
        columns=rows,
    )
    orthanc.upload(big)
    for day in range(1, 5):
        orthanc.upload(make_study(PATIENT_ID, study_date=f"2023010{day}", series=(("MR", 1),)))

    group = GroupFactory(name="Bench")
    group.permissions.add(Permission.objects.get(codename="use_explorer"))
    user = UserFactory(username="bench", groups=[group])
    full = dataclasses.asdict(orthanc.server_config(name="Orthanc"))
    # Another AE title (it is unique per server row); Orthanc does not check the called one.
    dimse = {**full, "name": "Orthanc (DIMSE only)", "ae_title": "EXPL_BENCH2"}
    dimse["dicomweb_root_url"] = ""
    dimse.update(dicomweb_qido_support=False, dicomweb_wado_support=False)
    servers = [DicomServer.objects.create(**full), DicomServer.objects.create(**dimse)]
    for server in servers:
        DicomNodeGroupAccess.objects.create(node=server, group=group, source=True)

    def client() -> Client:
        c = Client()
        c.force_login(user)
        return c

    # --- study list: ADIT's page vs. the C-FIND straight to Orthanc ----------------------------
    browser = client()
    patient_url = reverse("dicom_explorer:patient", args=[servers[0].pk])

    def page() -> None:
        cache.clear()
        response = browser.get(patient_url, {"patient_id": PATIENT_ID})
        assert response.status_code == 200 and response.content.count(b"/studies/") == 5

    def direct() -> None:
        assert _direct_c_find(orthanc, settings.CALLING_AE_TITLE) == 5

    page(), direct()  # warm-up (imports, first association)
    adit_times, direct_times = [], []
    for _ in range(runs):
        adit_times.append(_timed(page))
        direct_times.append(_timed(direct))
    adit_p50, direct_p50 = statistics.median(adit_times), statistics.median(direct_times)
    ratio = adit_p50 / direct_p50
    print(f"\nStudy list of a patient (5 studies), p50 of {runs} runs, empty cache:")
    print(f"  ADIT patient page            {adit_p50 * 1000:8.1f} ms")
    print(f"  C-FIND straight to Orthanc   {direct_p50 * 1000:8.1f} ms")
    print(
        f"  ratio                        {ratio:8.2f}   (goal ≤ {RATIO_GOAL}: "
        f"{'met' if ratio <= RATIO_GOAL else 'NOT met'})"
    )

    # --- the thumbnail page of a 10-series study -----------------------------------------------
    study_uid = big[0].StudyInstanceUID
    print(f"\nStudy page with 10 series thumbnails ({rows}×{rows} CT), empty cache:")
    worst = 0.0
    for server in servers:
        study_url = reverse("dicom_explorer:study", args=[server.pk, study_uid])
        clients = [client() for _ in range(BROWSER_CONNECTIONS)]

        def thumbnail_page(study_url: str = study_url, clients: list = clients) -> None:
            cache.clear()
            html = clients[0].get(study_url).content.decode()
            urls = [
                part.split('"', 1)[0].replace("&amp;", "&")
                for part in html.split('src="')[1:]
                if "thumbnail.png" in part.split('"', 1)[0]
            ]
            assert len(urls) == 10, len(urls)

            def get(index: int) -> int:
                try:
                    return clients[index % BROWSER_CONNECTIONS].get(urls[index]).status_code
                finally:
                    connections.close_all()  # this thread's; else the test database stays busy

            with ThreadPoolExecutor(BROWSER_CONNECTIONS) as pool:
                statuses = list(pool.map(get, range(len(urls))))
            assert statuses == [200] * 10, statuses

        thumbnail_page()  # warm-up
        seconds = statistics.median(_timed(thumbnail_page) for _ in range(max(3, runs // 4)))
        worst = max(worst, seconds)
        print(f"  {server.name:<28} {seconds:8.2f} s")
    verdict = "met" if worst < THUMBNAIL_GOAL_SECONDS else "NOT met"
    print(f"  goal < {THUMBNAIL_GOAL_SECONDS} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
