"""The server side of an upload: every file is checked again and refused with the reason.

Files are posted directly (bypassing the page), as a script or a tampered browser would.
"""

from __future__ import annotations

import pytest
from django.test import override_settings
from pydicom import dcmread

from adit.accounts.factories import UserFactory
from adit.core.dicom.testing.phi_corpus import PATIENT_NAME, make_phi_corpus
from adit.core.dicom.testing.synthetic import make_study
from adit.core.factories import DicomFolderFactory, DicomServerFactory
from adit.core.statuses import Status
from adit.upload.models import UploadInstance, UploadJob, UploadTask

from .conftest import (
    PSEUDONYM,
    browser_file,
    deidentify_like_the_browser,
    encode,
    give_access,
    new_job,
    post_file,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("staging")]


def staged_files(staging) -> list:
    return sorted(p.name for p in staging.rglob("*") if p.is_file())


# --- accepted, idempotent -----------------------------------------------------------------------


def test_a_deidentified_file_is_staged_once_and_listed(client, job_id, staging):
    data = browser_file()
    first = post_file(client, job_id, data)
    assert first.status_code == 201, first.content
    sop_uid = first.json()["sop_instance_uid"]
    again = post_file(client, job_id, data)
    assert again.status_code == 200
    assert again.json() == {"sop_instance_uid": sop_uid, "already_held": True}
    assert UploadInstance.objects.filter(job_id=job_id).count() == 1
    assert staged_files(staging) == [f"{sop_uid}.dcm"]
    held = client.get(f"/upload/jobs/{job_id}/instances/").json()["sop_instance_uids"]
    assert held == [sop_uid]


def test_commit_makes_one_task_per_study_and_queues_it(client, job_id):
    for _ in range(2):  # two studies
        assert post_file(client, job_id, browser_file()).status_code == 201
    response = client.post(f"/upload/jobs/{job_id}/commit/")
    assert response.status_code == 200
    assert response.json()["new_tasks"] == 2
    job = UploadJob.objects.get(pk=job_id)
    assert job.status == UploadJob.Status.PENDING
    assert not job.receiving
    tasks = list(UploadTask.objects.filter(job=job))
    assert len(tasks) == 2 and all(t.queued_job_id for t in tasks)
    assert {t.pseudonym for t in tasks} == {PSEUDONYM}
    # Nothing new: a second commit adds nothing.
    assert client.post(f"/upload/jobs/{job_id}/commit/").json()["new_tasks"] == 0


def test_the_job_page_says_where_an_uploads_files_come_from(client, job_id):
    assert post_file(client, job_id, browser_file()).status_code == 201
    client.post(f"/upload/jobs/{job_id}/commit/")
    page = client.get(f"/upload/jobs/{job_id}/").content.decode()
    source = page[page.index('id="job-source"') :][:200]
    assert "files sent from the browser" in source and "—" not in source


# --- refused with the reason, nothing kept ------------------------------------------------------


def test_original_patient_name_is_refused(client, job_id, staging):
    response = post_file(client, job_id, browser_file(PatientName=PATIENT_NAME))
    assert response.status_code == 400
    body = response.json()
    assert body["attribute"] == "PatientName"
    assert "PatientName (0010,0010) is not the job's pseudonym" in body["error"]
    assert PATIENT_NAME not in body["error"]  # the refusal does not echo the identity
    assert staged_files(staging) == []
    assert not UploadInstance.objects.exists()


def test_original_patient_id_is_refused(client, job_id):
    response = post_file(client, job_id, browser_file(PatientID="MRN-4711-QX"))
    assert response.status_code == 400
    assert response.json()["attribute"] == "PatientID"


def test_private_tags_are_refused(client, job_id, staging):
    ds = dcmread(__import__("io").BytesIO(browser_file()))
    block = ds.private_block(0x0011, "ACME PHI", create=True)
    block.add_new(0x01, "LO", "secret MRN")
    response = post_file(client, job_id, encode(ds))
    assert response.status_code == 400
    body = response.json()
    assert "(0011,0010)" in body["attribute"]
    assert "private attribute" in body["error"]
    assert staged_files(staging) == []


def test_private_tag_inside_a_sequence_is_refused(client, job_id):
    corpus = make_phi_corpus(seed=f"nested-{job_id}")
    ds = corpus.datasets[0]
    deidentify_like_the_browser(ds)
    item = ds.ContributingEquipmentSequence[0]
    item.private_block(0x0043, "ACME NESTED", create=True).add_new(0x01, "LO", "MRN")
    response = post_file(client, job_id, encode(ds))
    assert response.status_code == 400
    assert response.json()["attribute"].startswith(
        "ContributingEquipmentSequence (0018,A001)[0] > (0043,0010)"
    )


@pytest.mark.parametrize(
    ("keyword", "value", "fragment"),
    [
        ("PatientBirthDate", "19570823", "must be empty"),
        ("OtherPatientNames", "Pimm^Eulalia", "which the Basic Profile removes"),
        ("InstitutionName", "Zebulon Cottage Infirmary", "which the Basic Profile removes"),
        ("ImageComments", "Patient Quaxworth", "which the Basic Profile removes"),
        ("AccessionNumber", "ACC-5521-ZW", "must be empty"),
    ],
)
def test_attributes_the_profile_removes_or_empties_are_refused(
    client, job_id, keyword, value, fragment
):
    response = post_file(client, job_id, browser_file(**{keyword: value}))
    assert response.status_code == 400
    body = response.json()
    assert body["attribute"].startswith(keyword)
    assert fragment in body["error"]
    assert value not in body["error"]


def test_uid_not_replaced_is_refused(client, job_id):
    response = post_file(client, job_id, browser_file(StudyInstanceUID="1.2.3.4.5"))
    assert response.status_code == 400
    assert "StudyInstanceUID" in response.json()["attribute"]
    assert "not replaced" in response.json()["error"]


def test_not_dicom_is_refused(client, job_id, staging):
    response = post_file(client, job_id, b"%PDF-1.4 not an image" * 20)
    assert response.status_code == 400
    assert "not DICOM" in response.json()["error"]
    assert staged_files(staging) == []


def test_wrong_content_type_is_refused(client, job_id):
    response = post_file(client, job_id, browser_file(), content_type="application/octet-stream")
    assert response.status_code == 415


def test_oversize_file_is_refused(client, job_id, settings, staging):
    data = browser_file()
    settings.UPLOAD_MAX_FILE_SIZE = len(data) - 1
    response = post_file(client, job_id, data)
    assert response.status_code == 413
    assert "one file may be at most" in response.json()["error"]
    assert staged_files(staging) == []


def test_upload_beyond_the_job_limit_is_refused(client, job_id, settings):
    first = browser_file()
    settings.UPLOAD_MAX_JOB_SIZE = len(first) + 100
    assert post_file(client, job_id, first).status_code == 201
    response = post_file(client, job_id, browser_file())
    assert response.status_code == 413
    assert "one upload may hold at most" in response.json()["error"]
    assert UploadInstance.objects.count() == 1


def test_announced_oversize_upload_is_refused_before_anything_is_sent(
    client, uploader, folder, settings
):
    settings.UPLOAD_MAX_JOB_SIZE = 1000
    client.force_login(uploader)
    response = new_job(client, folder, total_size=5000)
    assert response.status_code == 400
    assert "one upload may hold at most" in response.json()["error"]
    assert not UploadJob.objects.exists()


# --- permissions and access ---------------------------------------------------------------------


def test_pseudonym_is_required_without_the_permission(client, uploader, folder):
    client.force_login(uploader)
    response = new_job(client, folder, pseudonym="")
    assert response.status_code == 400
    assert "pseudonym is required" in response.json()["error"]


def test_destination_without_group_access_is_refused(client, uploader):
    foreign = DicomServerFactory(name="Foreign PACS")
    client.force_login(uploader)
    response = new_job(client, foreign)
    assert response.status_code == 400
    assert "may not use it as destination" in response.json()["error"]


def test_access_withdrawn_after_creation_stops_the_upload(client, job_id, uploaders):
    uploaders.dicom_node_accesses.all().delete()
    response = post_file(client, job_id, browser_file())
    assert response.status_code == 403
    assert "may not use" in response.json()["error"]


def test_another_users_job_is_not_found(client, job_id, uploaders):
    other = UserFactory(username="otto", groups=[uploaders])
    client.force_login(other)
    assert post_file(client, job_id, browser_file()).status_code == 404
    assert client.get(f"/upload/jobs/{job_id}/instances/").status_code == 404


def test_without_permission_the_page_and_api_are_forbidden(client, folder):
    client.force_login(UserFactory(username="nobody"))
    assert client.get("/upload/").status_code == 403
    assert new_job(client, folder).status_code == 403


@override_settings(UPLOAD_MAX_FILE_SIZE=1)
def test_upload_start_is_audited(client, uploader, folder):
    from adit.audit.models import AuditEntry

    client.force_login(uploader)
    job = new_job(client, folder).json()["job"]
    entry = AuditEntry.objects.get(job_type="upload", job_id=job)
    assert entry.pseudonym == PSEUDONYM
    assert entry.destination == "Research folder"
    assert entry.details["upload"] == "started"


# --- several files in one request ---------------------------------------------------------------


def multipart(*payloads: bytes, boundary: str = "adit-test-boundary") -> bytes:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload + b"\r\n"
        for payload in payloads
    )
    return body + f"--{boundary}--\r\n".encode()


def test_a_batch_answers_per_file_and_a_refused_one_costs_no_other(client, job_id, staging):
    good, bad = browser_file(), browser_file(PatientName="Quaxworth^Eulalia")
    response = post_file(
        client,
        job_id,
        multipart(good, bad, good),
        content_type='multipart/related; type="application/dicom"; boundary=adit-test-boundary',
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 200]
    assert results[1]["attribute"] == "PatientName"
    assert results[2]["already_held"] is True
    assert len(staged_files(staging)) == 1


def test_a_malformed_batch_is_refused(client, job_id):
    response = post_file(
        client,
        job_id,
        b"--other\r\nContent-Type: application/dicom\r\n\r\nxx",
        content_type='multipart/related; type="application/dicom"; boundary=adit-test-boundary',
    )
    assert response.status_code == 400
    assert "malformed" in response.json()["error"]


def test_without_pseudonym_files_go_unchanged_only_with_the_permission(
    client, uploaders, folder, staging
):
    from .conftest import grant

    grant(uploaders, "can_transfer_unpseudonymized")
    user = UserFactory(username="dora", groups=[uploaders])
    client.force_login(user)
    response = new_job(client, folder, pseudonym="")
    assert response.status_code == 201
    job = response.json()["job"]
    original = make_study("PAT-RAW-1", series=(("CT", 1),))[0]
    assert post_file(client, job, encode(original)).status_code == 201
    assert UploadJob.objects.get(pk=job).deid_options == []


def test_a_locked_app_refuses_everyone_but_superusers(client, job_id):
    from adit.upload.models import UploadSettings

    settings_row = UploadSettings.get()
    settings_row.locked = True
    settings_row.save()
    assert client.get("/upload/").status_code == 403
    assert post_file(client, job_id, browser_file()).status_code == 403


def test_the_worker_writes_a_committed_upload_to_the_folder_and_unstages_it(
    client, job_id, folder, staging
):
    from adit.upload.processors import UploadTaskProcessor

    sent = [browser_file(), browser_file()]
    for data in sent:
        assert post_file(client, job_id, data).status_code == 201
    client.post(f"/upload/jobs/{job_id}/commit/")
    tasks = list(UploadTask.objects.filter(job_id=job_id))
    for task in tasks:
        result = UploadTaskProcessor(task).process()
        assert (result.status, result.message) == (Status.SUCCESS, "1 instance(s) stored.")
        assert (result.instances, result.bytes) == (1, task.instances.get().size)
    written = sorted(__import__("pathlib").Path(folder.path).rglob("*.dcm"))
    assert len(written) == 2
    assert {dcmread(p).PatientID for p in written} == {PSEUDONYM}
    assert staged_files(staging) == []  # the staged copies are gone once stored
    held = client.get(f"/upload/jobs/{job_id}/instances/").json()["sop_instance_uids"]
    assert len(held) == 2  # and the job still knows what it holds (nothing is sent twice)


def test_deleting_a_job_removes_its_staged_files(
    client, job_id, staging, django_capture_on_commit_callbacks
):
    assert post_file(client, job_id, browser_file()).status_code == 201
    assert staged_files(staging)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/upload/jobs/{job_id}/delete/")
    assert response.status_code == 302
    assert not UploadJob.objects.filter(pk=job_id).exists()
    assert staged_files(staging) == []


def test_received_instances_are_stored_while_the_browser_still_sends(
    client, job_id, folder, staging, settings
):
    from adit.upload.processors import UploadTaskProcessor

    settings.UPLOAD_DISPATCH_INSTANCES = 2

    def run(task) -> None:
        # What a worker does with a claimed task (the queue job's id as the worker has it).
        assert task.claim(task.queued_job_id)
        task.finish(UploadTaskProcessor(task).process())

    assert post_file(client, job_id, browser_file()).status_code == 201
    assert not UploadTask.objects.filter(job_id=job_id).exists()  # one is not enough yet
    assert post_file(client, job_id, browser_file()).status_code == 201
    first = list(UploadTask.objects.filter(job_id=job_id))
    assert len(first) == 2 and all(t.queued_job_id for t in first)  # two studies, queued
    job = UploadJob.objects.get(pk=job_id)
    assert job.receiving

    # The worker stores them before the browser is done: the job goes on receiving.
    for task in first:
        run(task)
    job.refresh_from_db()
    assert job.status == UploadJob.Status.IN_PROGRESS
    assert len(list(__import__("pathlib").Path(folder.path).rglob("*.dcm"))) == 2

    assert post_file(client, job_id, browser_file()).status_code == 201
    assert UploadTask.objects.filter(job_id=job_id).count() == 2
    response = client.post(f"/upload/jobs/{job_id}/commit/")
    assert response.json()["new_tasks"] == 1
    last = UploadTask.objects.filter(job_id=job_id).exclude(pk__in=[t.pk for t in first]).get()
    run(last)
    job.refresh_from_db()
    assert (job.status, job.receiving) == (UploadJob.Status.SUCCESS, False)
    assert len(list(__import__("pathlib").Path(folder.path).rglob("*.dcm"))) == 3
    assert staged_files(staging) == []
    # Nothing is stored twice: every instance belongs to exactly one task.
    assert UploadInstance.objects.filter(job_id=job_id, task=None).count() == 0
    assert UploadInstance.objects.filter(job_id=job_id).count() == 3


@pytest.mark.parametrize(
    ("role", "may_upload_unpseudonymized"), [("researcher", False), ("data_manager", True)]
)
def test_role_presets_grant_upload(client, tmp_path, role, may_upload_unpseudonymized):
    from adit.accounts.factories import GroupFactory
    from adit.accounts.roles import role_permissions

    group = GroupFactory(name=f"Preset {role}")
    group.permissions.set(role_permissions(role))
    (tmp_path / "out").mkdir()
    node = DicomFolderFactory(name="Preset folder", path=str(tmp_path / "out"))
    give_access(group, node)
    client.force_login(UserFactory(username=f"preset-{role}", groups=[group]))
    assert client.get("/upload/").status_code == 200
    without = new_job(client, node, pseudonym="")
    assert without.status_code == (201 if may_upload_unpseudonymized else 400)
    if not may_upload_unpseudonymized:
        assert "A pseudonym is required" in without.json()["error"]
    assert new_job(client, node, pseudonym="UPL-9").status_code == 201


def test_a_staged_file_is_stored_as_the_bytes_it_arrived_as(tmp_path):
    from adit.core.dicom.dimse import _decode_from, received_encoding
    from adit.upload.processors import read_staged

    raw = browser_file()
    path = tmp_path / "staged.dcm"
    path.write_bytes(raw)
    ds = read_staged(path)
    remembered = received_encoding(ds)
    assert remembered is not None
    transfer_syntax, encoded = remembered
    assert transfer_syntax == ds.file_meta.TransferSyntaxUID
    assert raw.endswith(encoded) and len(encoded) < len(raw)
    # The bytes are exactly the data set (no file meta): they decode to the same instance.
    again = _decode_from(encoded, transfer_syntax)
    assert again.SOPInstanceUID == ds.SOPInstanceUID and again.PixelData == ds.PixelData
    assert "TransferSyntaxUID" not in again


def test_a_study_stored_by_several_tasks_counts_once(client, job_id, settings):
    from adit.core.job_overview import summarize
    from adit.upload.processors import UploadTaskProcessor

    settings.UPLOAD_DISPATCH_INSTANCES = 1
    study = make_study("PAT-UP-2", series=(("CT", 2),), compressed_series=False)
    for ds in study:
        deidentify_like_the_browser(ds)
        assert post_file(client, job_id, encode(ds)).status_code == 201
    job = UploadJob.objects.get(pk=job_id)
    tasks = list(job.tasks.all())
    assert len(tasks) == 2 and len({t.study_uid for t in tasks}) == 1
    summary = summarize(job)
    assert (summary.task_count, summary.studies) == (1, 0)
    for task in tasks:
        assert task.claim(task.queued_job_id)
        task.finish(UploadTaskProcessor(task).process())
    summary = summarize(UploadJob.objects.get(pk=job_id))
    assert (summary.task_count, summary.studies, summary.instances) == (1, 1, 2)


def test_a_job_canceled_while_the_browser_sends_is_not_restarted(client, job_id, settings):
    settings.UPLOAD_DISPATCH_INSTANCES = 1
    assert post_file(client, job_id, browser_file()).status_code == 201
    job = UploadJob.objects.get(pk=job_id)
    assert job.tasks.count() == 1
    job.cancel()
    assert job.status == UploadJob.Status.CANCELED
    assert post_file(client, job_id, browser_file()).status_code == 201
    job.refresh_from_db()
    assert job.status == UploadJob.Status.CANCELED
    assert job.tasks.count() == 1  # nothing new was handed to a worker
