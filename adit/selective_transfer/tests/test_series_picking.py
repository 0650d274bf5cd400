"""Picking series of a study and the query form's help: the views against a real Orthanc.

(The same flow in a real browser, with a worker transferring to a second Orthanc, is in
test_browser_series.py.)
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.urls import reverse

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core.dicom.testing.synthetic import make_study
from adit.core.factories import DicomServerFactory
from adit.selective_transfer.models import SelectiveTransferJob

from .conftest import give_access

pytestmark = pytest.mark.django_db

PAGE = "/selective-transfer/"


def series_url(source_pk: int, patient_id: str, study_uid: str) -> str:
    params = {"source": source_pk, "patient_id": patient_id, "study_uid": study_uid}
    return f"{reverse('selective_transfer:study_series')}?{urlencode(params)}"


@pytest.mark.peers
def test_series_of_a_study_are_listed_to_pick(client, researcher, orthanc_a, node_a):
    patient_id = "ST-SERIES-" + make_study("s")[0].StudyInstanceUID[-8:]
    study = make_study(patient_id, series=(("CT", 2), ("MR", 1), ("SR", 1)))
    orthanc_a.upload(study)
    study_uid = study[0].StudyInstanceUID
    series_uids = {ds.SeriesInstanceUID for ds in study}
    client.force_login(researcher)

    response = client.get(series_url(node_a.pk, patient_id, study_uid))

    assert response.status_code == 200
    page = response.content.decode()
    for series_uid in series_uids:
        assert f'value="{patient_id}\\{study_uid}\\{series_uid}"' in page
    assert page.count('name="selected_series"') == 3
    assert "2 instances" in page

    # The result rows of the fallback query carry the expand button's URL.
    response = client.post(PAGE, {"source": node_a.pk, "patient_id": patient_id})
    assert (
        response.context["outcome"]
        .rows[0]
        .series_url.startswith(reverse("selective_transfer:study_series"))
    )
    assert b"st-series-toggle" in response.content


def test_series_lookup_checks_permission_node_access_and_input(client, researcher, researchers):
    other = DicomServerFactory(name="Not ours")
    ours = DicomServerFactory(name="Ours")
    give_access(researchers, ours)
    client.force_login(researcher)

    refused = client.get(series_url(other.pk, "P1", "1.2.3"))
    assert refused.status_code == 400
    assert "your active group may not use it as source" in refused.content.decode()

    bad_uid = client.get(series_url(ours.pk, "P1", "1.2.*"))
    assert bad_uid.status_code == 400
    assert "Wildcards (* or ?) are not allowed here." in bad_uid.content.decode()

    outsider = UserFactory(username="olga", groups=[GroupFactory(name="Others")])
    client.force_login(outsider)
    assert client.get(series_url(ours.pk, "P1", "1.2.3")).status_code == 403


def test_picked_series_become_the_tasks_series(client, researcher, researchers):
    server = DicomServerFactory()
    give_access(researchers, server)
    client.force_login(researcher)
    common = {
        "source": server.pk,
        "destination": server.pk,
        "patient_id": "P1",
        "pseudonym": "X",
        "action": "transfer",
    }

    response = client.post(
        PAGE,
        {
            **common,
            # Study 1.2.3 whole; of study 1.2.4 (not ticked itself) two series only.
            "selected_studies": ["P1\\1.2.3"],
            "selected_series": ["P1\\1.2.4\\1.2.4.1", "P1\\1.2.4\\1.2.4.3"],
        },
    )

    assert response.status_code == 302
    tasks = {t.study_uid: t.series_uids for t in SelectiveTransferJob.objects.get().tasks.all()}
    assert tasks == {"1.2.3": [], "1.2.4": ["1.2.4.1", "1.2.4.3"]}

    for forged, reason in (
        ("P1\\1.2.4", "is malformed"),
        ("P1\\1.2.4\\1.2.*", "is invalid"),
        ("P\x07\\1.2.4\\1.2.4.1", "Control characters are not allowed"),
    ):
        response = client.post(PAGE, {**common, "selected_series": [forged]})
        assert response.status_code == 200
        assert reason in " ".join(response.context["form"].non_field_errors())
    assert SelectiveTransferJob.objects.count() == 1


def test_query_fields_explain_wildcards_and_refuse_too_long_values_visibly(
    client, researcher, researchers
):
    server = DicomServerFactory()
    give_access(researchers, server)
    client.force_login(researcher)

    page = client.get(PAGE).content.decode()
    assert "maxlength" not in page  # a browser would cut pasted text without a word
    assert "*Thorax*" in page  # how to find part of a description
    assert "? one character" in page
    assert 'placeholder="2024-01-01' not in page  # no placeholder that looks like a value

    long_id = "P" * 70
    response = client.post(PAGE, {"source": server.pk, "patient_id": long_id})
    errors = response.context["form"].errors["patient_id"]
    assert errors == [
        "Patient ID may have at most 64 characters; you entered 70. Nothing was cut: check "
        "the value and shorten it."
    ]
    assert f'value="{long_id}"' in response.content.decode()  # the input stays as typed


def test_explorer_search_explains_wildcards_without_maxlength(client, researcher):
    from adit.dicom_explorer.forms import StudySearchForm

    form = StudySearchForm({"patient_id": "Q" * 65})
    assert not form.is_valid()
    assert "at most 64 characters; you entered 65" in form.errors["patient_id"][0]
    assert "maxlength" not in str(form["patient_id"])
    assert "*Thorax*" in str(form.fields["study_description"].help_text)
