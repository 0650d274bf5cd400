"""The job pages every app shares: list, detail with live progress, task detail, actions."""

import pytest
from django.urls import reverse

from adit.accounts.factories import UserFactory
from adit.core.models import DicomJob, DicomTask
from adit.core.statuses import Status
from adit.core.tests.test_job_lifecycle import make_job, set_task_statuses

pytestmark = pytest.mark.django_db


@pytest.fixture
def owned_job():
    job = make_job(task_count=2)
    job.submit(by_staff=True)
    return job


def url(name, *args):
    return reverse(f"example_app:{name}", args=args)


def test_owner_sees_the_job_with_progress_and_tasks(client, owned_job):
    client.force_login(owned_job.owner)
    response = client.get(url("job_detail", owned_job.pk))
    assert response.status_code == 200
    content = response.content.decode()
    assert "0 of 2 tasks finished" in content
    assert 'hx-trigger="every 2s"' in content  # live progress while the job runs
    assert content.count('data-action="cancel"') == 1
    assert 'data-action="restart"' not in content  # staff only


def test_another_users_job_and_task_are_not_found(client, owned_job):
    client.force_login(UserFactory())
    assert client.get(url("job_detail", owned_job.pk)).status_code == 404
    task = owned_job.tasks.first()
    assert client.get(url("task_detail", task.pk)).status_code == 404
    assert client.post(url("job_action", owned_job.pk, "cancel")).status_code == 404
    owned_job.refresh_from_db()
    assert owned_job.status == DicomJob.Status.PENDING


def test_job_list_shows_own_jobs_only_and_filters_by_status(client, owned_job):
    other_job = make_job()
    client.force_login(owned_job.owner)
    response = client.get(url("job_list"))
    jobs = list(response.context["page"].object_list)
    assert jobs == [owned_job]
    assert other_job not in jobs
    response = client.get(url("job_list"), {"status": Status.SUCCESS})
    assert list(response.context["page"].object_list) == []
    response = client.get(url("job_list"), {"status": "<script>", "q": "<b>x</b>"})
    assert response.status_code == 200
    assert "<b>x</b>" not in response.content.decode()


def test_staff_sees_every_job(client, owned_job):
    client.force_login(UserFactory(is_staff=True))
    assert client.get(url("job_detail", owned_job.pk)).status_code == 200


def test_cancel_action_through_the_page(client, owned_job):
    client.force_login(owned_job.owner)
    response = client.post(url("job_action", owned_job.pk, "cancel"))
    assert response.status_code == 302
    owned_job.refresh_from_db()
    assert owned_job.status == DicomJob.Status.CANCELED


def test_action_not_allowed_now_gives_a_message_not_an_error(client, owned_job):
    client.force_login(owned_job.owner)
    response = client.post(url("job_action", owned_job.pk, "retry"), follow=True)
    assert response.status_code == 200
    assert "cannot be retried while it is Pending" in response.content.decode()


def test_staff_only_actions_are_refused_to_owners(client, owned_job):
    set_task_statuses(owned_job, DicomTask.Status.SUCCESS, DicomTask.Status.SUCCESS)
    owned_job.update_status()
    client.force_login(owned_job.owner)
    assert client.post(url("job_action", owned_job.pk, "restart")).status_code == 403
    task = owned_job.tasks.first()
    assert client.post(url("task_action", task.pk, "kill")).status_code == 403


def test_progress_fragment_refreshes_the_page_when_the_job_ended(client, owned_job):
    client.force_login(owned_job.owner)
    assert "HX-Refresh" not in client.get(url("job_progress", owned_job.pk)).headers
    set_task_statuses(owned_job, DicomTask.Status.SUCCESS, DicomTask.Status.WARNING)
    owned_job.update_status()
    response = client.get(url("job_progress", owned_job.pk))
    assert response.headers["HX-Refresh"] == "true"
    assert "2 of 2 tasks finished" in response.content.decode()


def test_task_page_shows_message_and_log_escaped(client, owned_job):
    task = owned_job.tasks.first()
    type(task).objects.filter(pk=task.pk).update(
        status=DicomTask.Status.FAILURE, message="<img src=x>", log="line <b>1</b>"
    )
    client.force_login(owned_job.owner)
    content = client.get(url("task_detail", task.pk)).content.decode()
    assert "&lt;img src=x&gt;" in content and "<img src=x>" not in content
    assert 'data-action="reset"' in content
