"""adit-client as a drop-in for the public adit-client 0.5.2, against a live ADIT.

A script written for 0.5.2 calls the methods with 0.5.2's keyword names
(``study_instance_uid``, ``series_instance_uid``), builds the client with 0.5.2's constructor
arguments (``skip_elements_anonymization``) and catches ``requests.HTTPError``. These tests
make exactly those calls, so a rename or a changed exception breaks them. The new names and
methods (batch query results, rendered images) are tested here too.
"""

from __future__ import annotations

import inspect
import secrets

import pytest
import requests
from adit_client import (
    DEFAULT_SKIP_ELEMENTS_ANONYMIZATION,
    AditClient,
    AditClientError,
    NotFoundError,
    __version__,
)
from pydicom import Dataset

from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing.workers import start_worker
from adit.dicom_web.testing import grant_access, make_api_user, server_from_config

PERMISSIONS = (
    "dicom_web.can_query",
    "dicom_web.can_retrieve",
    "dicom_web.can_store",
    "batch_query.add_batchqueryjob",
)

# The public signatures of adit-client 0.5.2 (from its wheel on PyPI): method → parameters.
SIGNATURES_0_5_2 = {
    "__init__": [
        "server_url",
        "auth_token",
        "verify",
        "trial_protocol_id",
        "trial_protocol_name",
        "skip_elements_anonymization",
    ],
    "search_for_studies": ["ae_title", "query"],
    "search_for_series": ["ae_title", "study_instance_uid", "query"],
    "retrieve_study": ["ae_title", "study_instance_uid", "pseudonym"],
    "iter_study": ["ae_title", "study_instance_uid", "pseudonym"],
    "retrieve_series": ["ae_title", "study_instance_uid", "series_instance_uid", "pseudonym"],
    "iter_series": ["ae_title", "study_instance_uid", "series_instance_uid", "pseudonym"],
    "store_instances": ["ae_title", "instances"],
}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def _uids(datasets) -> set[str]:
    return {str(ds.SOPInstanceUID) for ds in datasets}


def _study(**kwargs) -> list[Dataset]:
    return make_study(
        f"CMP{secrets.token_hex(4).upper()}",
        patient_name="Compat^Carl",
        series=(("CT", 2), ("MR", 1)),
        compressed_series=False,
        **kwargs,
    )


# --- pure logic (no server) -------------------------------------------------------------------


def test_version_is_above_0_5_2():
    assert _version_tuple(__version__) > (0, 5, 2)


def test_0_5_2_positional_order_is_kept():
    """A 0.5.2 call by position lands on the same arguments (new parameters come after)."""
    for name, old_params in SIGNATURES_0_5_2.items():
        params = list(inspect.signature(getattr(AditClient, name)).parameters)[1:]
        new_names = {"study_instance_uid": "study_uid", "series_instance_uid": "series_uid"}
        expected = [new_names.get(param, param) for param in old_params]
        assert params[: len(expected)] == expected, name


def test_errors_are_requests_http_errors():
    assert issubclass(AditClientError, requests.HTTPError)
    assert issubclass(NotFoundError, requests.exceptions.HTTPError)


def test_both_spellings_of_one_argument_is_a_type_error():
    client = AditClient("http://127.0.0.1:9", "token")
    with pytest.raises(TypeError, match="both 'study_instance_uid' and 'study_uid'"):
        client.retrieve_study("AE", study_uid="1.2", study_instance_uid="1.2")


def test_skip_elements_anonymization_maps_to_dates_or_fails_closed():
    assert AditClient("http://x", "t").deid_options is None
    default = AditClient("http://x", "t", skip_elements_anonymization=None)
    assert default.deid_options is None
    dates = AditClient(
        "http://x", "t", skip_elements_anonymization=DEFAULT_SKIP_ELEMENTS_ANONYMIZATION
    )
    assert dates.deid_options == ["retain_full_dates"]
    assert dates._retrieve_params("P")["deid_options"] == "retain_full_dates"
    assert "deid_options" not in dates._retrieve_params(None)  # nothing to de-identify
    with pytest.raises(ValueError, match="cannot keep PatientName, InstitutionName"):
        AditClient(
            "http://x",
            "t",
            skip_elements_anonymization=["StudyDate", "PatientName", "InstitutionName"],
        )


# --- against a live ADIT -----------------------------------------------------------------------


def _dimse_source(orthanc):
    config = orthanc.server_config(
        dicomweb_root_url="",
        dicomweb_qido_support=False,
        dicomweb_wado_support=False,
        dicomweb_stow_support=False,
        patient_root_move_support=False,
        study_root_move_support=False,
    )
    return server_from_config(config, "Compat source", "COMPAT_SRC")


@pytest.fixture
def compat_setup(orthanc_a):
    api_user = make_api_user(permissions=PERMISSIONS)
    source = _dimse_source(orthanc_a)
    grant_access(api_user.group, source)
    return api_user, source


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_0_5_2_script_runs_unchanged(live_adit, compat_setup):
    api_user, source = compat_setup
    # Exactly the constructor call of a 0.5.2 script, every argument by keyword.
    client = AditClient(
        server_url=live_adit.url,
        auth_token=api_user.token,
        verify=True,
        trial_protocol_id="TRIAL-052",
        trial_protocol_name="Old script",
        skip_elements_anonymization=DEFAULT_SKIP_ELEMENTS_ANONYMIZATION,
    )
    datasets = _study(study_date="20230405")
    study_uid = str(datasets[0].StudyInstanceUID)
    ct_series_uid = str(datasets[0].SeriesInstanceUID)

    answer = client.store_instances(ae_title=source.ae_title, instances=datasets)
    assert {str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence} == _uids(
        datasets
    )

    studies = client.search_for_studies(
        ae_title=source.ae_title, query={"PatientID": str(datasets[0].PatientID)}
    )
    assert [str(ds.StudyInstanceUID) for ds in studies] == [study_uid]
    series = client.search_for_series(
        ae_title=source.ae_title, study_instance_uid=study_uid, query={"Modality": "CT"}
    )
    assert [str(ds.SeriesInstanceUID) for ds in series] == [ct_series_uid]

    plain = client.retrieve_study(ae_title=source.ae_title, study_instance_uid=study_uid)
    assert _uids(plain) == _uids(datasets)
    assert {ds.ClinicalTrialProtocolID for ds in plain} == {"TRIAL-052"}
    assert {ds.ClinicalTrialProtocolName for ds in plain} == {"Old script"}

    pseudonymized = list(
        client.iter_study(
            ae_title=source.ae_title, study_instance_uid=study_uid, pseudonym="SUBJ-052"
        )
    )
    assert {ds.PatientID for ds in pseudonymized} == {"SUBJ-052"}
    assert not _uids(pseudonymized) & _uids(datasets)
    # 0.5.2 kept dates by default (skip_elements_anonymization); so does ADIT when asked.
    assert {ds.StudyDate for ds in pseudonymized} == {"20230405"}

    one_series = client.retrieve_series(
        ae_title=source.ae_title,
        study_instance_uid=study_uid,
        series_instance_uid=ct_series_uid,
        pseudonym="SUBJ-052",
    )
    assert len(one_series) == 2
    assert {ds.PatientID for ds in one_series} == {"SUBJ-052"}
    iterated = list(
        client.iter_series(
            ae_title=source.ae_title,
            study_instance_uid=study_uid,
            series_instance_uid=ct_series_uid,
        )
    )
    assert _uids(iterated) == {str(ds.SOPInstanceUID) for ds in datasets[:2]}

    # Without skip_elements_anonymization ADIT's Basic Profile applies: the date goes.
    strict = AditClient(server_url=live_adit.url, auth_token=api_user.token)
    shifted = strict.retrieve_study(source.ae_title, study_uid, pseudonym="SUBJ-052")
    assert {ds.get("StudyDate", "") for ds in shifted} != {"20230405"}

    # 0.5.2 scripts catch requests.HTTPError and read error.response.status_code.
    with pytest.raises(requests.HTTPError) as error:
        client.search_for_studies(ae_title="NO_SUCH_AE", query={})
    assert error.value.response is not None
    assert error.value.response.status_code == 404
    with pytest.raises(requests.exceptions.HTTPError) as error:
        client.retrieve_study(ae_title=source.ae_title, study_instance_uid="1.2.3.999")
    assert error.value.response.status_code == 404
    bad_token = AditClient(server_url=live_adit.url, auth_token="0" * 40)
    with pytest.raises(requests.HTTPError) as error:
        bad_token.search_for_series(source.ae_title, study_instance_uid=study_uid)
    assert error.value.response.status_code == 401


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_batch_query_results(live_adit, orthanc_a, compat_setup):
    api_user, source = compat_setup
    datasets = _study(study_date="20220202")
    orthanc_a.upload(datasets)
    patient_id = str(datasets[0].PatientID)
    client = AditClient(live_adit.url, api_user.token)

    job = client.create_batch_query_job(
        source.ae_title,
        "Compat project",
        "Results through the client",
        [{"PatientID": patient_id, "Modality": "CT"}, {"PatientID": patient_id, "Modality": "MR"}],
    )
    assert client.get_batch_query_results(job["id"]) == []  # nothing queried yet

    worker = start_worker("dicom")
    try:
        finished = client.wait_for_job(
            job["id"], timeout=120, poll_interval=0.5, kind="batch_query"
        )
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except Exception:
            worker.kill()
            worker.wait(timeout=5)
    assert finished["status"] == "SU", finished

    results = client.get_batch_query_results(job["id"])
    assert len(results) == 2  # the study once per query
    assert {row["study_uid"] for row in results} == {str(datasets[0].StudyInstanceUID)}
    assert {row["patient_id"] for row in results} == {patient_id}
    assert {row["study_date"] for row in results} == {"2022-02-02"}
    assert all(row["modalities"] for row in results)
    assert list(client.iter_batch_query_results(job["id"])) == results
    with pytest.raises(NotFoundError):
        client.get_batch_query_results(job["id"] + 10_000)


def _has_rendered_routes() -> bool:
    from adit.dicom_web.urls import urlpatterns

    return any(str(pattern.pattern).endswith("/rendered") for pattern in urlpatterns)


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    not _has_rendered_routes(),
    reason="ADIT serves no /rendered routes yet (issue 15 part 1 adds them to adit/dicom_web)",
)
def test_rendered_and_thumbnail_images(live_adit, orthanc_a, compat_setup):
    api_user, source = compat_setup
    datasets = _study(rows=64, columns=64)
    orthanc_a.upload(datasets)
    study_uid = str(datasets[0].StudyInstanceUID)
    series_uid = str(datasets[0].SeriesInstanceUID)
    sop_uid = str(datasets[0].SOPInstanceUID)
    client = AditClient(live_adit.url, api_user.token)

    jpeg = client.retrieve_instance_rendered(
        source.ae_title,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        window=(40, 400),
        viewport=(32, 32),
        quality=80,
    )
    assert jpeg[:3] == b"\xff\xd8\xff"
    png = client.retrieve_instance_rendered(
        source.ae_title, study_uid, series_uid, sop_uid, media_type="png"
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.retrieve_series_rendered(source.ae_title, study_uid, series_uid)[:2] == (
        b"\xff\xd8"
    )
    assert client.retrieve_study_rendered(source.ae_title, study_uid)[:2] == b"\xff\xd8"
    for thumbnail in (
        client.retrieve_instance_thumbnail(source.ae_title, study_uid, series_uid, sop_uid),
        client.retrieve_series_thumbnail(source.ae_title, study_uid, series_uid),
        client.retrieve_study_thumbnail(source.ae_title, study_uid, viewport=(16, 16)),
    ):
        assert thumbnail[:2] == b"\xff\xd8"
    with pytest.raises(NotFoundError):
        client.retrieve_instance_rendered(source.ae_title, study_uid, series_uid, "1.2.3.999")
