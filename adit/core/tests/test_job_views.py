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


# --- actions: help, confirmation, offered only when allowed, times that stay true -------------


def action_forms(content: str) -> dict[str, str]:
    """The action forms of a page by their action (the form's HTML)."""
    import re

    forms = re.findall(r"<form method=\"post\"[^>]*>.*?</form>", content, flags=re.S)
    found = {}
    for form in forms:
        action = re.search(r'data-action="(\w+)"', form)
        if action:
            found[action[1]] = form
    return found


def test_every_action_has_a_tooltip_and_the_risky_ones_ask_first(client, owned_job):
    staff = UserFactory(is_staff=True)
    client.force_login(staff)
    forms = action_forms(client.get(url("job_detail", owned_job.pk)).content.decode())
    assert set(forms) == {"cancel", "delete"}
    for form in forms.values():
        assert 'title="' in form and 'data-bs-toggle="tooltip"' in form
        assert "data-confirm=" in form
    set_task_statuses(owned_job, DicomTask.Status.SUCCESS, DicomTask.Status.FAILURE)
    owned_job.tasks.update(queued_job_id=None, attempts=1)
    owned_job.update_status()
    forms = action_forms(client.get(url("job_detail", owned_job.pk)).content.decode())
    assert set(forms) == {"retry", "restart"}
    assert "Retry the 1 failed task?" in forms["retry"]
    assert "All 2 tasks run again" in forms["restart"]
    assert 'id="confirm-modal"' in client.get(url("job_detail", owned_job.pk)).content.decode()
    task = owned_job.tasks.get(status=DicomTask.Status.FAILURE)
    forms = action_forms(client.get(url("task_detail", task.pk)).content.decode())
    assert set(forms) == {"reset"} and "data-confirm=" in forms["reset"]


def test_delete_is_not_offered_once_a_worker_took_a_task(client, owned_job):
    client.force_login(owned_job.owner)
    assert "delete" in action_forms(client.get(url("job_detail", owned_job.pk)).content.decode())
    task = owned_job.tasks.first()
    assert task.claim(task.queued_job_id)
    owned_job.refresh_from_db()
    assert owned_job.status == DicomJob.Status.IN_PROGRESS
    content = client.get(url("job_detail", owned_job.pk)).content.decode()
    assert set(action_forms(content)) == {"cancel"}


def test_progress_reloads_the_page_when_the_status_changed_since_it_was_shown(client, owned_job):
    client.force_login(owned_job.owner)
    response = client.get(url("job_progress", owned_job.pk), {"shown": "PE"})
    assert "HX-Refresh" not in response.headers
    task = owned_job.tasks.first()
    task.claim(task.queued_job_id)
    response = client.get(url("job_progress", owned_job.pk), {"shown": "PE"})
    assert response.headers["HX-Refresh"] == "true"
    assert "shown=IP" in response.content.decode()


def test_resetting_a_task_of_a_finished_job_clears_its_end_time(client, owned_job):
    set_task_statuses(owned_job, DicomTask.Status.SUCCESS, DicomTask.Status.SUCCESS)
    owned_job.tasks.update(queued_job_id=None)
    owned_job.update_status()
    assert owned_job.end is not None
    client.force_login(owned_job.owner)
    task = owned_job.tasks.first()
    assert client.post(url("task_action", task.pk, "reset")).status_code == 302
    owned_job.refresh_from_db()
    assert owned_job.status in (DicomJob.Status.PENDING, DicomJob.Status.IN_PROGRESS)
    assert owned_job.end is None
