"""Authentication, authorization and error answers of the DICOMweb API (live server)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from adit.accounts.factories import GroupFactory
from adit.accounts.models import Token
from adit.core.dicom.testing.peers import LOOPBACK, free_port
from adit.core.factories import DicomServerFactory, DicomWebServerFactory
from adit.dicom_web.testing import (
    grant_access,
    make_api_user,
    start_live_server,
    stop_live_server,
)

pytestmark = pytest.mark.django_db(transaction=True)

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2"
MULTIPART = "multipart/related; type=application/dicom; boundary=b0undary"
INSTANCE = "{root}/wadors/studies/" + STUDY_UID + "/series/" + SERIES_UID + "/instances/1.2.3"
OPERATIONS = [
    "qido",
    "wado",
    "stow",
    "qido_series",
    "qido_instances",
    "bulkdata",
    "frames",
    "rendered",
    "thumbnail",
]


def _urls(base: str, ae_title: str) -> dict[str, tuple[str, str]]:
    root = f"{base}/api/dicom-web/{ae_title}"
    return {
        "qido": ("GET", f"{root}/qidors/studies"),
        "wado": ("GET", f"{root}/wadors/studies/{STUDY_UID}"),
        "stow": ("POST", f"{root}/stowrs/studies"),
        "qido_series": ("GET", f"{root}/qidors/series"),
        "qido_instances": ("GET", f"{root}/qidors/studies/{STUDY_UID}/instances"),
        "bulkdata": ("GET", f"{INSTANCE.format(root=root)}/bulkdata/7FE00010"),
        "frames": ("GET", f"{INSTANCE.format(root=root)}/frames/1,2"),
        "rendered": ("GET", f"{root}/wadors/studies/{STUDY_UID}/series/{SERIES_UID}/rendered"),
        "thumbnail": ("GET", f"{root}/wadors/studies/{STUDY_UID}/thumbnail"),
    }


def _call(method: str, url: str, headers: dict, **kwargs) -> requests.Response:
    if method == "POST":
        headers = {"Content-Type": MULTIPART, **headers}
        kwargs.setdefault("data", b"--b0undary--\r\n")
    return requests.request(method, url, headers=headers, timeout=30, **kwargs)


def _unreachable_server(**kwargs):
    # Nothing listens on a fresh free port: connection refused at once.
    return DicomServerFactory(host=LOOPBACK, port=free_port(), **kwargs)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_missing_or_bad_token_is_401(live_adit, operation):
    server = DicomServerFactory()
    method, url = _urls(live_adit.url, server.ae_title)[operation]
    for headers, expected in [
        ({}, "Authentication credentials were not provided."),
        ({"Authorization": "Token " + "0" * 40}, "Invalid token."),
        ({"Authorization": "Bearer abc"}, "Unsupported authorization scheme"),
    ]:
        response = _call(method, url, headers)
        assert response.status_code == 401, response.text
        assert expected in response.json()["detail"]
        assert response.headers["WWW-Authenticate"] == "Token"


def test_expired_token_is_401(live_adit):
    api_user = make_api_user()
    server = DicomServerFactory()
    grant_access(api_user.group, server)
    Token.objects.filter(owner=api_user.user).update(expires=timezone.now() - timedelta(minutes=1))
    method, url = _urls(live_adit.url, server.ae_title)["qido"]
    response = _call(method, url, api_user.headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "The token has expired."}


@pytest.mark.parametrize(
    "operation, permission",
    [
        ("qido", "can_query"),
        ("wado", "can_retrieve"),
        ("stow", "can_store"),
        ("qido_series", "can_query"),
        ("qido_instances", "can_query"),
        ("bulkdata", "can_retrieve"),
        ("frames", "can_retrieve"),
        ("rendered", "can_retrieve"),
        ("thumbnail", "can_retrieve"),
    ],
)
def test_missing_permission_is_403(live_adit, operation, permission):
    others = tuple(p for p in ("can_query", "can_retrieve", "can_store") if p != permission)
    api_user = make_api_user(permissions=others)
    server = DicomServerFactory()
    grant_access(api_user.group, server)
    method, url = _urls(live_adit.url, server.ae_title)[operation]
    response = _call(method, url, api_user.headers)
    assert response.status_code == 403, response.text
    assert f"dicom_web.{permission}" in response.json()["detail"]


def test_permission_of_an_inactive_group_does_not_count(live_adit):
    api_user = make_api_user(permissions=())
    other_group = GroupFactory()
    api_user.user.join_group(other_group)  # a member, but not the active group
    from django.contrib.auth.models import Permission

    other_group.permissions.add(Permission.objects.get(codename="can_query"))
    server = DicomServerFactory()
    grant_access(other_group, server)
    method, url = _urls(live_adit.url, server.ae_title)["qido"]
    assert _call(method, url, api_user.headers).status_code == 403


@pytest.mark.parametrize("operation", OPERATIONS)
def test_unknown_inactive_or_inaccessible_server_is_404(live_adit, operation):
    api_user = make_api_user()
    inactive = DicomServerFactory(active=False)
    grant_access(api_user.group, inactive)
    foreign = DicomServerFactory()
    grant_access(GroupFactory(), foreign)  # another group's server
    wrong_direction = DicomServerFactory()
    needed = "destination" if operation == "stow" else "source"
    grant_access(
        api_user.group, wrong_direction, source=needed != "source", destination=needed == "source"
    )
    answers = set()
    for ae_title in ("NO_SUCH_AE", inactive.ae_title, foreign.ae_title, wrong_direction.ae_title):
        method, url = _urls(live_adit.url, ae_title)[operation]
        response = _call(method, url, api_user.headers)
        assert response.status_code == 404, (ae_title, response.text)
        answers.add(response.json()["detail"].replace(ae_title, "<AE>"))
    assert len(answers) == 1, "the answers must not tell which servers exist"


@pytest.mark.parametrize(
    "path, params, message",
    [
        ("qidors/studies", {"PatientNam": "X"}, "Unknown query parameter 'PatientNam'"),
        ("qidors/studies", {"StudyDate": "2024-13-45"}, "StudyDate"),
        ("qidors/studies", {"StudyInstanceUID": "1.2.abc"}, "not a valid UID"),
        ("qidors/studies", {"limit": "many"}, "limit must be a whole number"),
        ("qidors/series", {"offset": "-1"}, "offset must be between 0 and"),
        ("qidors/instances", {"fuzzymatching": "maybe"}, "fuzzymatching must be true or false"),
        ("qidors/studies", {"includefield": "all,Nonsense"}, "Unknown query parameter 'Nonsense'"),
        ("qidors/studies", {"Modality": "C\\T"}, "Backslashes are not allowed"),
        ("qidors/studies", {"99999999": "1"}, "Unknown DICOM tag '99999999'"),
        ("qidors/studies/1.2.x/series", {}, "not a valid UID"),
        (f"wadors/studies/{STUDY_UID}", {"pseudonym": "A\\B"}, "Pseudonym"),
        (f"wadors/studies/{STUDY_UID}", {"pseudonym": "AB*"}, "wildcards"),
        (f"wadors/studies/{STUDY_UID}", {"trial_protocol_id": "x" * 65}, "Trial protocol ID"),
        (f"wadors/studies/{STUDY_UID}/series/1.2..3", {}, "SeriesInstanceUID"),
    ],
)
def test_bad_parameters_are_400_with_a_message(live_adit, path, params, message):
    api_user = make_api_user()
    server = DicomServerFactory()
    grant_access(api_user.group, server)
    response = requests.get(
        f"{live_adit.url}/api/dicom-web/{server.ae_title}/{path}",
        params=params,
        headers=api_user.headers,
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/dicom-web/"),
        ("GET", "/api/dicom-web/SOME_AE/qidors/patients"),
        ("GET", "/api/dicom-web/SOME_AE/wadors/studies"),
        ("GET", "/api/dicom-web/SOME_AE/qidors/studies/"),
        ("DELETE", "/api/dicom-web/SOME_AE/wadors/studies/1.2/series/3.4/instances/5.6/x"),
        ("POST", "/api/dicom-web/SOME_AE/stowrs/nonsense"),
    ],
)
def test_unknown_routes_answer_json_not_html(live_adit, method, path):
    response = requests.request(method, f"{live_adit.url}{path}", timeout=30)
    assert response.status_code == 404, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert "is not a DICOMweb resource of ADIT" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type, status, message",
    [
        ("application/dicom", 415, "multipart/related"),
        ("multipart/related; type=application/json; boundary=x", 415, "application/dicom"),
        ("multipart/related; type=application/dicom", 400, "boundary"),
    ],
)
def test_stow_needs_a_dicom_multipart_body(live_adit, content_type, status, message):
    api_user = make_api_user()
    server = DicomServerFactory()
    grant_access(api_user.group, server)
    response = requests.post(
        f"{live_adit.url}/api/dicom-web/{server.ae_title}/stowrs/studies",
        data=b"x",
        headers={**api_user.headers, "Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_stow_with_a_malformed_body_is_400(live_adit):
    api_user = make_api_user()
    server = DicomServerFactory()
    grant_access(api_user.group, server)
    response = requests.post(
        f"{live_adit.url}/api/dicom-web/{server.ae_title}/stowrs/studies",
        data=b"no delimiter here",
        headers={**api_user.headers, "Content-Type": MULTIPART},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert "no part delimited by the boundary" in response.json()["detail"]


@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
@pytest.mark.parametrize("operation", ["qido", "wado"])
def test_unreachable_pacs_is_503(live_adit, kind, operation):
    api_user = make_api_user()
    if kind == "dimse":
        server = _unreachable_server()
    else:
        server = DicomWebServerFactory(dicomweb_root_url=f"http://{LOOPBACK}:{free_port()}/dw")
    grant_access(api_user.group, server)
    method, url = _urls(live_adit.url, server.ae_title)[operation]
    response = _call(method, url, api_user.headers)
    assert response.status_code == 503, response.text
    assert server.name in response.json()["detail"]


def test_server_without_retrieve_support_is_502(live_adit):
    api_user = make_api_user()
    server = _unreachable_server(
        study_root_get_support=False,
        study_root_move_support=False,
        patient_root_get_support=False,
        patient_root_move_support=False,
    )
    grant_access(api_user.group, server)
    method, url = _urls(live_adit.url, server.ae_title)["wado"]
    response = _call(method, url, api_user.headers)
    assert response.status_code == 502, response.text
    assert "no retrieve method" in response.json()["detail"]


def test_rate_limit_per_token(tmp_path):
    """With API_THROTTLE_RATE set, each token gets that many requests per period."""
    server = start_live_server(tmp_path, extra_env={"API_THROTTLE_RATE": "3/minute"})
    try:
        limited, other = make_api_user(), make_api_user()
        url = f"{server.url}/api/me/"
        statuses = [
            requests.get(url, headers=limited.headers, timeout=30).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        response = requests.get(url, headers=limited.headers, timeout=30)
        assert "throttled" in response.json()["detail"].lower()
        assert int(response.headers["Retry-After"]) > 0
        # Another token has its own budget.
        assert requests.get(url, headers=other.headers, timeout=30).status_code == 200
    finally:
        stop_live_server(server)
