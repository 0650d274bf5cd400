"""The explorer's pages against a real Orthanc: access, hostile parameters, a PACS that is down,
drill-down and rendering (Orthanc's /rendered and ADIT's own, uncompressed and RLE)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from django.core.cache import cache
from django.urls import reverse
from PIL import Image

from adit.accounts.factories import UserFactory
from adit.audit.models import AuditEntry
from adit.core.dicom.testing.peers import free_port
from adit.core.factories import DicomServerFactory
from adit.dicom_explorer.services import make_operator

from .conftest import give_access

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


def _urls(server, study):
    first = study[0]
    sop = first.SOPInstanceUID
    kwargs = {
        "server_id": server.pk,
        "study_uid": first.StudyInstanceUID,
        "series_uid": first.SeriesInstanceUID,
    }
    return {
        "study": reverse(
            "dicom_explorer:study",
            kwargs={"server_id": server.pk, "study_uid": first.StudyInstanceUID},
        ),
        "series": reverse("dicom_explorer:series", kwargs=kwargs),
        "instance": reverse("dicom_explorer:instance", kwargs={**kwargs, "sop_uid": sop}),
        "image": reverse("dicom_explorer:instance_image", kwargs={**kwargs, "sop_uid": sop}),
        "thumbnail": reverse("dicom_explorer:series_thumbnail", kwargs=kwargs),
    }


def _pixels(response) -> np.ndarray:
    assert response["Content-Type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


# --- access -----------------------------------------------------------------------------------


def test_without_permission_the_explorer_answers_a_styled_403(client, db):
    client.force_login(UserFactory(username="nopermission"))
    response = client.get(reverse("dicom_explorer:server_list"))
    assert response.status_code == 403
    page = response.content.decode()
    assert "Can browse servers in the DICOM explorer" in page  # names what is missing
    assert "dicom_explorer.use_explorer" in page
    assert 'id="main-menu"' in page  # the site's page, with navigation


def test_anonymous_users_are_sent_to_the_login(client, db):
    response = client.get(reverse("dicom_explorer:server_list"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_a_server_the_group_may_not_use_is_404(client, explorer_user, explorers):
    foreign = DicomServerFactory(name="Foreign PACS")
    destination_only = DicomServerFactory(name="Destination only")
    give_access(explorers, destination_only, source=False, destination=True)
    client.force_login(explorer_user)
    for server in (foreign, destination_only):
        response = client.get(reverse("dicom_explorer:search", args=[server.pk]))
        assert response.status_code == 404
        study = reverse("dicom_explorer:study", args=[server.pk, "1.2.3"])
        assert client.get(study).status_code == 404
    listing = client.get(reverse("dicom_explorer:server_list")).content.decode()
    assert "Foreign PACS" not in listing and "Destination only" not in listing


def test_the_explorer_is_in_the_navigation_only_with_the_permission(client, explorer_user):
    client.force_login(explorer_user)
    assert "DICOM explorer" in client.get("/").content.decode()
    client.force_login(UserFactory(username="other"))
    assert "DICOM explorer" not in client.get("/").content.decode()


# --- hostile parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"patient_id": "A\\B"}, "Patient ID"),
        ({"patient_name": "Doe\\Smith"}, "Patient name"),
        ({"study_date": "2024-02-30"}, "Study date"),
        ({"birth_date": "yesterday"}, "Birth date"),
        ({"modality": "C*"}, "Modality"),
        ({"accession_number": "x" * 7_000}, "Accession number"),
        ({"study_description": "x" * 7_000}, "Study description"),
    ],
)
def test_hostile_search_parameters_are_400_naming_the_field(
    client, explorer_user, explorers, params, field
):
    server = DicomServerFactory(name="Never asked")  # a query would fail: port of nobody
    give_access(explorers, server)
    client.force_login(explorer_user)
    response = client.get(reverse("dicom_explorer:search", args=[server.pk]), params)
    assert response.status_code == 400
    assert f"<strong>{field}</strong>" in response.content.decode()
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.QUERY).exists()


@pytest.mark.parametrize(
    ("study_uid", "query", "field"),
    [
        ("1.2.*", {}, "Study Instance UID"),
        ("1.2.?", {}, "Study Instance UID"),
        ("1.02.3", {}, "Study Instance UID"),
        ("1." + "2" * 1_500, {}, "Study Instance UID"),
        ("1.2.3", {"patient_id": "*"}, "Patient ID"),
        ("1.2.3", {"patient_id": "A\\B"}, "Patient ID"),
        ("1.2.3", {"patient_id": "x" * 5_000}, "Patient ID"),
    ],
)
def test_hostile_drill_down_parameters_are_400_naming_the_field(
    client, explorer_user, explorers, study_uid, query, field
):
    server = DicomServerFactory(name="Never asked")
    give_access(explorers, server)
    client.force_login(explorer_user)
    response = client.get(reverse("dicom_explorer:study", args=[server.pk, study_uid]), query)
    assert response.status_code == 400
    assert f"<strong>{field}</strong>" in response.content.decode()
    image = reverse("dicom_explorer:instance_image", args=[server.pk, "1.2.3", "1.2.4", study_uid])
    response = client.get(image, {"frame": "0"})
    assert response.status_code == 400
    assert "Frame" in response.content.decode()


def test_values_beyond_the_http_limits_are_refused_before_the_view(
    client, explorer_user, explorers
):
    """10 kB in the query string or the path never reach the forms: the request limits
    (adit.core.middleware) answer 414 and name the limit."""
    server = DicomServerFactory(name="Never asked")
    give_access(explorers, server)
    client.force_login(explorer_user)
    search = reverse("dicom_explorer:search", args=[server.pk])
    response = client.get(search, {"study_description": "x" * 10_000})
    assert response.status_code == 414 and "8192" in response.content.decode()
    study = reverse("dicom_explorer:study", args=[server.pk, "1." + "2" * 10_000])
    assert client.get(study).status_code == 414


# --- a PACS that is down ----------------------------------------------------------------------


def test_a_pacs_that_is_down_gives_a_message_within_the_timeout(client, explorer_user, explorers):
    down = DicomServerFactory(name="Down PACS", host="127.0.0.1", port=free_port())
    give_access(explorers, down)
    client.force_login(explorer_user)
    started = time.monotonic()
    response = client.get(reverse("dicom_explorer:search", args=[down.pk]), {"patient_id": "P1"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert "Down PACS did not answer" in response.content.decode()
    assert elapsed < 5  # DICOM_EXPLORER_CONNECT_TIMEOUT
    entry = AuditEntry.objects.get(action=AuditEntry.Action.QUERY)
    assert entry.patient_id == "P1" and entry.source == "Down PACS"


def test_a_pacs_that_does_not_answer_gives_a_message_within_the_timeout(
    client, explorer_user, explorers, settings
):
    from adit.selective_transfer.tests.test_consumer import SlowFindScp

    settings.DICOM_EXPLORER_QUERY_TIMEOUT = 1.0
    scp = SlowFindScp(total=1, delay=10)  # accepts the association, then stays silent
    try:
        slow = DicomServerFactory(name="Silent PACS", ae_title="SLOWSCP", port=scp.port)
        give_access(explorers, slow)
        client.force_login(explorer_user)
        started = time.monotonic()
        response = client.get(reverse("dicom_explorer:search", args=[slow.pk]), {"patient_id": "S"})
        elapsed = time.monotonic() - started
    finally:
        scp.stop()
    assert response.status_code == 200
    assert "Silent PACS did not answer" in response.content.decode()
    assert elapsed < 5


# --- browsing and rendering -------------------------------------------------------------------


@pytest.mark.peers
def test_drill_down_from_search_to_instance(client, explorer_user, orthanc_node, uploaded_study):
    first = uploaded_study[0]
    client.force_login(explorer_user)
    search = reverse("dicom_explorer:search", args=[orthanc_node.pk])
    page = client.get(search, {"patient_name": "Explorer, Eva", "study_date": "2024-03-02"})
    assert page.status_code == 200
    html = page.content.decode()
    assert first.PatientID in html and "Explorer, Eva" in html
    urls = _urls(orthanc_node, uploaded_study)
    patient = client.get(
        reverse("dicom_explorer:patient", args=[orthanc_node.pk]), {"patient_id": first.PatientID}
    )
    assert urls["study"] in patient.content.decode() and "Chest CT" in patient.content.decode()
    study = client.get(urls["study"], {"patient_id": first.PatientID}).content.decode()
    assert study.count("ex-series-card") == 2 and "ex-transfer" not in study
    series = client.get(urls["series"], {"patient_id": first.PatientID}).content.decode()
    assert series.count("CT Image Storage") == 3
    assert "#1 CT series 1" in " ".join(series.split())
    instance = client.get(urls["instance"], {"patient_id": first.PatientID})
    assert instance.status_code == 200
    html = instance.content.decode()
    assert "PatientName" in html and "Explorer^Eva" in html and 'id="ex-image"' in html
    # Queries and the preview are in the audit trail.
    levels = set(
        AuditEntry.objects.filter(action=AuditEntry.Action.QUERY).values_list(
            "details__level", flat=True
        )
    )
    assert levels == {"STUDY", "SERIES", "IMAGE"}
    assert AuditEntry.objects.filter(
        action=AuditEntry.Action.RETRIEVE, details__explorer="header"
    ).exists()


@pytest.mark.peers
def test_repeated_queries_come_from_the_cache_and_are_audited(
    client, explorer_user, orthanc_node, uploaded_study, orthanc_a
):
    client.force_login(explorer_user)
    search = reverse("dicom_explorer:search", args=[orthanc_node.pk])
    params = {"patient_id": uploaded_study[0].PatientID}
    assert "from the cache" not in client.get(search, params).content.decode()
    assert "from the cache" in client.get(search, params).content.decode()
    assert AuditEntry.objects.filter(action=AuditEntry.Action.QUERY).count() == 2


@pytest.mark.peers
@pytest.mark.parametrize("series_index", [0, 3], ids=["uncompressed", "rle"])
def test_adit_renders_uncompressed_and_rle_ct_fetched_by_c_get(
    client, explorer_user, dimse_node, uploaded_study, series_index
):
    ds = uploaded_study[series_index]
    expected = "1.2.840.10008.1.2.5" if series_index else "1.2.840.10008.1.2.1"
    assert ds.file_meta.TransferSyntaxUID == expected
    client.force_login(explorer_user)
    url = reverse(
        "dicom_explorer:instance_image",
        args=[dimse_node.pk, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID],
    )
    response = client.get(url, {"patient_id": ds.PatientID})
    assert response.status_code == 200, response.get("X-Preview-Error")
    pixels = _pixels(response)
    assert pixels.shape == (64, 64) and len(np.unique(pixels)) > 10
    entry = AuditEntry.objects.get(action=AuditEntry.Action.RETRIEVE)
    assert entry.details["explorer"] == "image" and entry.outcome == "success"


@pytest.mark.peers
def test_orthanc_renders_the_image_and_thumbnails_are_small(
    client, explorer_user, orthanc_node, uploaded_study
):
    client.force_login(explorer_user)
    urls = _urls(orthanc_node, uploaded_study)
    pixels = _pixels(client.get(urls["image"]))
    assert pixels.shape[:2] == (64, 64) and len(np.unique(pixels)) > 10
    # The image came from Orthanc's /rendered (not from ADIT's own rendering after a fallback).
    first = uploaded_study[0]
    rendered = make_operator(orthanc_node).dicomweb.retrieve_rendered(  # type: ignore[union-attr]
        first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID
    )
    assert (
        _pixels(client.get(urls["image"])).tobytes()
        == np.asarray(Image.open(io.BytesIO(rendered))).tobytes()
    )
    thumbnail = client.get(urls["thumbnail"])
    assert thumbnail.status_code == 200
    assert len(np.unique(_pixels(thumbnail))) > 10


@pytest.mark.peers
def test_a_preview_that_cannot_be_made_says_why(client, explorer_user, dimse_node, orthanc_a):
    from adit.core.dicom.testing.synthetic import make_study

    report = make_study("EX-SR-1", series=(("SR", 1),))[0]
    orthanc_a.upload([report])
    client.force_login(explorer_user)
    args = [dimse_node.pk, report.StudyInstanceUID, report.SeriesInstanceUID]
    response = client.get(
        reverse("dicom_explorer:instance_image", args=[*args, report.SOPInstanceUID])
    )
    assert response.status_code == 422
    assert "no pixel data" in response["X-Preview-Error"]
    assert response["Content-Type"] == "image/png"
    page = client.get(reverse("dicom_explorer:instance", args=[*args, report.SOPInstanceUID]))
    assert page.status_code == 200 and "has no pixel data" in page.content.decode()


@pytest.mark.peers
def test_transfer_link_prefills_selective_transfer(
    client, explorer_user, explorers, orthanc_node, uploaded_study
):
    from .conftest import grant

    grant(explorers, "selective_transfer", "add_selectivetransferjob")
    client.force_login(explorer_user)
    first = uploaded_study[0]
    study = client.get(_urls(orthanc_node, uploaded_study)["study"]).content.decode()
    assert "Pseudonymization required" in study
    start = study.index('id="ex-transfer"')
    href = study[
        study.rindex("href=", 0, start) + 6 : study.index('"', study.rindex("href=", 0, start) + 6)
    ]
    page = client.get(href.replace("&amp;", "&")).content.decode()
    assert f'value="{first.StudyInstanceUID}"' in page
    assert f'value="{orthanc_node.pk}" selected' in page


@pytest.mark.peers
@pytest.mark.parametrize("node_fixture", ["orthanc_node", "dimse_node"])
def test_frames_of_a_multi_frame_instance(client, explorer_user, orthanc_a, request, node_fixture):
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    node = request.getfixturevalue(node_fixture)
    ds = dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm"))  # type: ignore[arg-type]
    ds.PatientID = "EX-MULTIFRAME"
    orthanc_a.upload([ds])
    client.force_login(explorer_user)
    args = [node.pk, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID]
    page = client.get(reverse("dicom_explorer:instance", args=args)).content.decode()
    assert 'id="ex-frame"' in page and 'max="2"' in page
    image = reverse("dicom_explorer:instance_image", args=args)
    first, second = (_pixels(client.get(image, {"frame": n})) for n in (1, 2))
    assert first.shape[:2] == (100, 100) and not np.array_equal(first, second)
    response = client.get(image, {"frame": 3})
    assert response.status_code == 422 and "Frame 3 does not exist" in response["X-Preview-Error"]


@pytest.mark.peers
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
def test_download_link_for_users_who_may_download_unpseudonymized(
    client, explorer_user, explorers, orthanc_node, uploaded_study
):
    import zipfile

    from .conftest import grant

    client.force_login(explorer_user)
    study_url = _urls(orthanc_node, uploaded_study)["study"]
    assert 'id="ex-download"' not in client.get(study_url).content.decode()
    grant(explorers, "selective_transfer", "can_download_study", "can_transfer_unpseudonymized")
    html = client.get(study_url).content.decode()
    start = html.index('id="ex-download"')
    href_at = html.rindex('href="', 0, start) + len('href="')
    href = html[href_at : html.index('"', href_at)].replace("&amp;", "&")
    response = client.get(href)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(response))) as archive:  # type: ignore[arg-type]
        assert len(archive.namelist()) == len(uploaded_study)
