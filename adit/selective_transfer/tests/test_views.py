"""The page, its no-WebSocket fallback (plain POST), access control and the direct download."""

from __future__ import annotations

import copy
import io
import zipfile
from urllib.parse import parse_qs

import pydicom
import pytest
from django.test import override_settings
from django.urls import reverse

from adit.accounts.factories import UserFactory
from adit.core.deidentification import pseudonymization_seed
from adit.core.dicom.pseudonymizer import Pseudonymizer
from adit.core.dicom.testing.phi_corpus import find_identifiers, make_phi_corpus
from adit.core.dicom.testing.synthetic import make_study
from adit.core.factories import DicomFolderFactory, DicomServerFactory
from adit.core.models import GroupDeidentificationDefaults
from adit.selective_transfer.models import SelectiveTransferJob, SelectiveTransferTask

from .conftest import give_access, grant

pytestmark = pytest.mark.django_db

PAGE = "/selective-transfer/"


def post(client, **fields):
    return client.post(PAGE, fields)


def form_errors(response) -> dict:
    form = response.context["form"]
    return {name: " ".join(errors) for name, errors in form.errors.items()}


# --- page and access control --------------------------------------------------------------------


def test_page_lists_only_nodes_the_active_group_may_use(client, researcher, researchers):
    usable_source = DicomServerFactory(name="Usable PACS")
    give_access(researchers, usable_source, source=True, destination=False)
    usable_folder = DicomFolderFactory(name="Usable folder")
    give_access(researchers, usable_folder, source=False, destination=True)
    DicomServerFactory(name="Foreign PACS")  # no access row at all
    destination_only = DicomServerFactory(name="Destination-only PACS")
    give_access(researchers, destination_only, source=False, destination=True)

    client.force_login(researcher)
    response = client.get(PAGE)

    assert response.status_code == 200
    form = response.context["form"]
    assert [n.name for n in form.fields["source"].queryset] == ["Usable PACS"]
    assert {n.name for n in form.fields["destination"].queryset} == {
        "Usable folder",
        "Destination-only PACS",
    }
    assert b"Foreign PACS" not in response.content
    # Users without an urgency permission do not see the option.
    assert "urgent" not in form.fields


def test_page_needs_login_and_permission(client, researchers):
    assert client.get(PAGE).status_code == 302
    client.force_login(UserFactory(username="nobody"))
    assert client.get(PAGE).status_code == 403


def test_posted_node_the_group_may_not_use_is_a_form_error(client, researcher, researchers):
    foreign = DicomServerFactory(name="Foreign PACS")
    client.force_login(researcher)

    response = post(client, source=foreign.pk, patient_id="P1", action="query")

    assert response.status_code == 200
    assert (
        "unknown or your active group may not use it as source" in form_errors(response)["source"]
    )


def test_unknown_node_id_is_a_form_error_not_a_500(client, researcher):
    client.force_login(researcher)
    for bad in ("999999", "abc", "-1", "1 OR 1=1"):
        response = post(client, source=bad, destination=bad, patient_id="P1", action="transfer")
        assert response.status_code == 200
        errors = form_errors(response)
        assert "source" in errors and "destination" in errors


def test_another_users_job_is_404(client, researcher, researchers):
    other = UserFactory(username="otto", groups=[researchers])
    server = DicomServerFactory()
    job = SelectiveTransferJob.objects.create(owner=other)
    task = SelectiveTransferTask.objects.create(
        job=job, source=server, destination=server, patient_id="P1", study_uid="1.2.3"
    )
    client.force_login(researcher)
    assert client.get(reverse("selective_transfer:job_detail", args=[job.pk])).status_code == 404
    assert client.get(reverse("selective_transfer:task_detail", args=[task.pk])).status_code == 404
    client.force_login(other)
    assert client.get(job.get_absolute_url()).status_code == 200


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("study_date", "2024-02-30", "does not exist"),
        ("study_date", "yesterday", "is not a date or date range"),
        ("study_date", "2024-05-01 - 2024-01-01", "is after the end"),
        ("patient_birth_date", "31.31.1970", "is not a valid date"),
        ("study_uid", "1.2.*", "Wildcards"),
        ("study_uid", "1.2.abc", "not a valid DICOM UID"),
        ("modalities", "CT, M-R", "is not a modality code"),
        ("patient_id", "A\\B", "Backslashes"),
        ("accession_number", "X" * 17, "at most 16 characters"),
    ],
)
def test_bad_query_input_is_a_form_error_naming_the_field(
    client, researcher, researchers, field, value, message
):
    source = DicomServerFactory()
    give_access(researchers, source)
    client.force_login(researcher)

    response = post(client, source=source.pk, action="query", **{field: value})

    assert response.status_code == 200
    assert message in form_errors(response)[field]
    assert b"is-invalid" in response.content


def test_a_query_needs_a_search_criterion(client, researcher, researchers):
    source = DicomServerFactory()
    give_access(researchers, source)
    client.force_login(researcher)
    response = post(client, source=source.pk, action="query")
    assert "at least one search criterion" in form_errors(response)["__all__"]


def test_transfer_rules(client, researcher, researchers):
    server = DicomServerFactory()
    folder = DicomFolderFactory()
    give_access(researchers, server)
    give_access(researchers, folder, source=False, destination=True)
    client.force_login(researcher)
    study = "P1\\1.2.3"

    # Without a pseudonym (and without the permission to skip it).
    response = post(
        client,
        source=server.pk,
        destination=server.pk,
        patient_id="P1",
        action="transfer",
        selected_studies=study,
    )
    assert "A pseudonym is required" in form_errors(response)["pseudonym"]

    # Nothing selected; too many selected; a forged selection with a control character or a
    # bad UID. (A PatientID with "*" or "?" is fine: PACS hold such IDs, the UID is the key.)
    common = dict(source=server.pk, destination=server.pk, patient_id="P1", pseudonym="X")
    response = post(client, action="transfer", **common)
    assert "Select at least one study" in form_errors(response)["__all__"]
    many = [f"P1\\1.2.{n}" for n in range(11)]
    response = client.post(PAGE, {**common, "action": "transfer", "selected_studies": many})
    assert "at most 10 may be transferred" in form_errors(response)["__all__"]
    response = post(client, action="transfer", selected_studies="P\x07\\1.2.3", **common)
    assert "Control characters are not allowed" in form_errors(response)["__all__"]
    response = post(client, action="transfer", selected_studies="P1\\1.2.*", **common)
    assert "is invalid" in form_errors(response)["__all__"]
    assert not SelectiveTransferJob.objects.exists()

    # The archive password is dropped for a server destination, kept for a folder.
    response = post(
        client, action="transfer", selected_studies=study, archive_password="pw", **common
    )
    assert response.status_code == 302
    job = SelectiveTransferJob.objects.get()
    assert response["Location"] == job.get_absolute_url()
    assert job.archive_password == ""
    assert job.status == SelectiveTransferJob.Status.PENDING
    assert job.priority == 4
    task = job.tasks.get()
    assert (task.patient_id, task.study_uid, task.pseudonym) == ("P1", "1.2.3", "X")
    assert task.queued_job_id is not None

    common["destination"] = folder.pk
    post(client, action="transfer", selected_studies=study, archive_password="pw", **common)
    assert SelectiveTransferJob.objects.latest("created").archive_password == "pw"


def test_deid_options_are_preselected_from_the_group_and_stored_with_the_job(
    client, researcher, researchers
):
    server = DicomServerFactory()
    give_access(researchers, server)
    GroupDeidentificationDefaults.objects.create(
        group=researchers, options=["retain_patient_characteristics"]
    )
    client.force_login(researcher)

    page = client.get(PAGE)
    assert page.context["form"]["deid_options"].value() == ["retain_patient_characteristics"]
    assert b"Retain Longitudinal Temporal Information with Modified Dates" in page.content

    common = dict(source=server.pk, destination=server.pk, patient_id="P1", pseudonym="X")
    both = ["retain_full_dates", "retain_modified_dates"]
    response = client.post(
        PAGE,
        {**common, "action": "transfer", "selected_studies": "P1\\1.2.3", "deid_options": both},
    )
    assert "not both" in form_errors(response)["deid_options"]
    response = client.post(
        PAGE,
        {
            **common,
            "action": "transfer",
            "selected_studies": "P1\\1.2.3",
            "deid_options": ["retain_safe_private", "retain_full_dates"],
        },
    )
    assert response.status_code == 302
    job = SelectiveTransferJob.objects.get()
    assert job.deid_options == ["retain_full_dates", "retain_safe_private"]
    detail = client.get(job.get_absolute_url()).content.decode()
    assert "Retain Longitudinal Temporal Information with Full Dates" in detail
    assert "Retain Safe Private" in detail


def test_urgent_and_unpseudonymized_need_their_permissions(client, researcher, researchers):
    server = DicomServerFactory()
    give_access(researchers, server)
    grant(researchers, "can_process_urgently", "can_transfer_unpseudonymized")
    client.force_login(researcher)

    response = post(
        client,
        source=server.pk,
        destination=server.pk,
        patient_id="P1",
        action="transfer",
        selected_studies="P1\\1.2.3",
        urgent="on",
    )

    assert response.status_code == 302
    job = SelectiveTransferJob.objects.get()
    assert job.urgent and job.priority == 8
    assert job.tasks.get().pseudonym == ""


def test_choices_are_remembered_per_user(client, researcher, researchers):
    source, destination = DicomServerFactory(), DicomServerFactory()
    give_access(researchers, source)
    give_access(researchers, destination)
    client.force_login(researcher)
    post(client, source=source.pk, destination=destination.pk, study_uid="1.2.3", action="query")

    researcher.refresh_from_db()
    assert researcher.preferences["selective_transfer_source"] == source.pk
    assert researcher.preferences["selective_transfer_destination"] == destination.pk
    form = client.get(PAGE).context["form"]
    assert form.initial["source"] == source.pk
    assert form.initial["destination"] == destination.pk


# --- fallback query against a real PACS ----------------------------------------------------------


@pytest.mark.peers
def test_fallback_query_renders_results_newest_first(client, researcher, orthanc_a, node_a):
    patient_id = "ST-FALLBACK-" + make_study("x")[0].StudyInstanceUID[-8:]
    for date in ("20230105", "20240310", "20220720"):
        orthanc_a.upload(make_study(patient_id, study_date=date, series=(("CT", 1),)))
    client.force_login(researcher)

    response = post(client, source=node_a.pk, patient_id=patient_id, action="query")

    assert response.status_code == 200
    rows = response.context["outcome"].rows
    assert [row.study_date.isoformat() for row in rows] == [
        "2024-03-10",
        "2023-01-05",
        "2022-07-20",
    ]
    assert response.content.count(b'name="selected_studies"') == 3
    assert b"3 studies found" in response.content


@pytest.mark.peers
@override_settings(SELECTIVE_TRANSFER_RESULT_LIMIT=2)
def test_fallback_query_stops_at_the_result_limit(client, researcher, orthanc_a, node_a):
    patient_id = "ST-LIMIT-" + make_study("x")[0].StudyInstanceUID[-8:]
    for day in range(1, 5):
        orthanc_a.upload(make_study(patient_id, study_date=f"202401{day:02d}", series=(("CT", 1),)))
    client.force_login(researcher)

    response = post(client, source=node_a.pk, patient_id=patient_id, action="query")

    assert len(response.context["outcome"].rows) == 2
    assert response.context["outcome"].more_than_limit
    assert b"More than 2 studies match" in response.content


@pytest.mark.peers
def test_fallback_query_shows_any_patient_id_with_a_download_link(
    client, researcher, orthanc_a, node_a
):
    tag = "ST-ANY-" + make_study("x")[0].StudyInstanceUID[-8:]
    patient_ids = [f"{tag}a/b", f"{tag}a%b", f"{tag}a#b", f"{tag}a?b"]
    for patient_id in patient_ids:
        orthanc_a.upload(make_study(patient_id, series=(("CT", 1),)))
    client.force_login(researcher)

    response = post(client, source=node_a.pk, patient_id=f"{tag}*", action="query")

    assert response.status_code == 200
    rows = response.context["outcome"].rows
    assert sorted(row.patient_id for row in rows) == sorted(patient_ids)
    for row in rows:
        path, _, query = row.download_url.partition("?")
        assert path == f"/selective-transfer/download/servers/{node_a.pk}/study/"
        params = parse_qs(query)
        assert params["patient_id"] == [row.patient_id]
        assert params["study_uid"] == [row.study_uid]


@pytest.mark.peers
def test_unreachable_server_is_a_readable_error(client, researcher, researchers):
    from adit.core.dicom.testing.peers import free_port

    dead = DicomServerFactory(name="Dead PACS", port=free_port())
    give_access(researchers, dead)
    client.force_login(researcher)

    response = post(client, source=dead.pk, patient_id="P1", action="query")

    assert response.status_code == 200
    error = response.context["outcome"].error
    assert error.startswith("The server did not answer the query")
    assert error.encode() in response.content


# --- direct download -----------------------------------------------------------------------------


def _download_url(server, patient_id, study_uid, **params):
    from urllib.parse import urlencode

    url = reverse("selective_transfer:download_study", kwargs={"server_id": server.pk})
    return f"{url}?{urlencode({'patient_id': patient_id, 'study_uid': study_uid, **params})}"


@pytest.mark.peers
# The sync test client consumes the async stream in one go and says so.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
def test_download_streams_a_pseudonymized_zip(client, researcher, orthanc_a, node_a):
    study = make_study("ST-DL-" + make_study("x")[0].StudyInstanceUID[-8:], patient_name="Doe^Jane")
    orthanc_a.upload(study)
    patient_id, study_uid = study[0].PatientID, study[0].StudyInstanceUID
    client.force_login(researcher)

    response = client.get(
        _download_url(node_a, patient_id, study_uid, pseudonym="PSEUDO1", trial_protocol_id="T1")
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    # The name holds only pseudonymized values: the pseudonym and the new StudyInstanceUID,
    # the one every transfer job with this pseudonym gives the study (installation-wide seed).
    expected = copy.deepcopy(study[0])
    Pseudonymizer(seed=pseudonymization_seed("PSEUDO1")).pseudonymize(expected, "PSEUDO1")
    disposition = response["Content-Disposition"]
    assert f'filename="study_download_PSEUDO1_{expected.StudyInstanceUID}.zip"' in disposition
    assert study_uid not in disposition and patient_id not in disposition
    content = b"".join(response)  # consumes the async stream
    originals = [patient_id, "Doe", "Jane", study_uid, *(str(ds.SOPInstanceUID) for ds in study)]
    assert not [value for value in originals if value.encode() in content]
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = archive.namelist()
        assert len(names) == len(study)
        assert all(name.startswith("PSEUDO1/") for name in names)
        for name in names:
            ds = pydicom.dcmread(io.BytesIO(archive.read(name)))
            assert ds.PatientID == "PSEUDO1"
            assert ds.ClinicalTrialProtocolID == "T1"
            assert "Doe" not in str(ds.PatientName)
            assert ds.StudyInstanceUID == expected.StudyInstanceUID != study_uid


@pytest.mark.peers
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
def test_zip_download_of_the_phi_rich_study_holds_no_identifier(
    client, researcher, orthanc_a, node_a
):
    patient_id = "ST-PHI-" + make_study("x")[0].StudyInstanceUID[-8:]
    corpus = make_phi_corpus(seed=patient_id, patient_id=patient_id)
    orthanc_a.upload(corpus.datasets)
    client.force_login(researcher)

    study_uid = corpus.datasets[0].StudyInstanceUID
    response = client.get(_download_url(node_a, patient_id, study_uid, pseudonym="PSEUDO9"))

    assert response.status_code == 200
    content = b"".join(response)  # consumes the async stream
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = archive.namelist()
        files = [archive.read(name) for name in names]
    # The two CT instances; SR (modality), SC and US (burned-in text) stay behind.
    assert len(files) == 2
    outputs = [content, *files, *(name.encode() for name in names)]
    outputs.append(response["Content-Disposition"].encode())
    assert find_identifiers(outputs, corpus.all_identifiers()) == set()
    assert find_identifiers(outputs, corpus.original_uids) == set()


@pytest.mark.peers
def test_download_access_rules(client, researcher, researchers, orthanc_a, node_a):
    client.force_login(researcher)
    # Pseudonym required without can_transfer_unpseudonymized.
    response = client.get(_download_url(node_a, "P1", "1.2.3"))
    assert response.status_code == 400
    assert b"pseudonym is required" in response.content
    # Bad or missing identifiers, named in the answer.
    response = client.get(_download_url(node_a, "P\\1", "1.2.3", pseudonym="X"))
    assert (response.status_code, response.content) == (
        400,
        b"Patient ID: Backslashes are not allowed.",
    )
    response = client.get(_download_url(node_a, "P1", "1.2.x", pseudonym="X"))
    assert response.status_code == 400 and response.content.startswith(b"Study Instance UID:")
    url = reverse("selective_transfer:download_study", kwargs={"server_id": node_a.pk})
    response = client.get(url, {"study_uid": "1.2.3", "pseudonym": "X"})
    assert (response.status_code, response.content) == (
        400,
        b"Patient ID: the parameter patient_id is missing.",
    )
    response = client.get(url, {"patient_id": "P1", "pseudonym": "X"})
    assert response.status_code == 400 and b"study_uid is missing" in response.content
    # A server the group may not query.
    foreign = DicomServerFactory()
    assert client.get(_download_url(foreign, "P1", "1.2.3", pseudonym="X")).status_code == 404
    # A study the server does not have.
    response = client.get(_download_url(node_a, "NOPE", "1.2.3.4.5.6", pseudonym="X"))
    assert response.status_code in (404, 502)
    # Without the download permission.
    researchers.permissions.remove(*researchers.permissions.filter(codename="can_download_study"))
    researcher = type(researcher).objects.get(pk=researcher.pk)
    client.force_login(researcher)
    assert client.get(_download_url(node_a, "P1", "1.2.3", pseudonym="X")).status_code == 403
