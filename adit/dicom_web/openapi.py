"""The DICOMweb API in ADIT's OpenAPI schema (/api/schema/, browsable at /api/docs/).

The DICOMweb views are excluded from drf-spectacular's introspection: their docstrings speak
to developers, and their parameters (any DICOM keyword as a QIDO-RS match key) do not fit a
serializer. This postprocessing hook (`SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]`) adds one
operation per route of `adit.dicom_web.urls` instead, with descriptions written for the people
calling the API: what the route returns, which parameters it takes and what each error means.

Operations are derived from the route's shape (service, level, resource), so a new route
gets a description without another table; `describe` raises for a shape it does not know,
and the schema test then names the route.
"""

from __future__ import annotations

import re
from typing import Any

DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
TAG = "DICOMweb"
SECURITY = [{"TokenAuthentication": []}]

PATH_PARAMETERS = {
    "ae_title": "AE title of a DICOM server configured in ADIT that your active group may use "
    "(as a source for searches and retrievals, as a destination for storing).",
    "study_uid": "Study Instance UID (0020,000D).",
    "series_uid": "Series Instance UID (0020,000E).",
    "image_uid": "SOP Instance UID (0008,0018) of the instance.",
    "instance_uid": "SOP Instance UID (0008,0018) of the instance.",
    "sop_uid": "SOP Instance UID (0008,0018) of the instance.",
    "frames": "Frame numbers, comma-separated, starting at 1 (e.g. `1,3,5`).",
    "frame_list": "Frame numbers, comma-separated, starting at 1 (e.g. `1,3,5`).",
}

LEVEL_WORDS = {"studies": "studies", "series": "series", "instances": "instances"}

QIDO_PARAMETERS = [
    (
        "{attribute}",
        "Any DICOM keyword or tag (e.g. `PatientID=1001`, `StudyDate=20240101-20241231`, "
        "`ModalitiesInStudy=CT`, `00100020=1001`) matches that attribute. Wildcards `*` and "
        "`?`, date/time ranges and comma-separated lists of values (`Modality=CT,MR`) work as in "
        "DICOM. An unknown keyword answers 400 naming it.",
    ),
    (
        "includefield",
        "Further attributes to return (keyword or tag; repeat the parameter or separate with "
        "commas), or `all` for everything the server knows.",
    ),
    ("limit", "Return at most this many results."),
    ("offset", "Skip this many results first (for paging, with `limit`)."),
    ("fuzzymatching", "`true` to match person names fuzzily where the server supports it."),
]

WADO_PARAMETERS = [
    (
        "pseudonym",
        "Pseudonymize every instance before it leaves ADIT: patient name and ID become the "
        "pseudonym, UIDs and identifying attributes are replaced (DICOM PS3.15 Basic Profile "
        "with your group's options). The same pseudonym always gives the same UIDs. Required if "
        "your group may only receive pseudonymized data.",
    ),
    ("trial_protocol_id", "Written into Clinical Trial Protocol ID (0012,0020)."),
    ("trial_protocol_name", "Written into Clinical Trial Protocol Name (0012,0021)."),
    (
        "deid_options",
        "De-identification options for a pseudonymized retrieval, comma-separated (e.g. "
        "`retain_full_dates,retain_device_identity`); default: your group's options.",
    ),
]

RENDERED_PARAMETERS = [
    ("window", "VOI window as `center,width[,function]` (e.g. `40,400` for a CT soft tissue)."),
    ("viewport", "Scale the image to fit `columns,rows` pixels."),
    ("quality", "JPEG quality 1–100."),
]

ERRORS = {
    "400": "A parameter or the path is invalid; `detail` names it.",
    "401": "No token, or an unknown or expired one.",
    "403": "Your active group lacks the permission for this operation (can query / can "
    "retrieve / can store through the DICOMweb API).",
    "404": "No server with this AE title is available to your active group, or the server "
    "does not hold the study, series or instance.",
    "406": "ADIT cannot produce what the Accept header asks for; `detail` says why.",
    "503": "The DICOM server is temporarily unavailable; try again later.",
}


def _schema_path(route: str) -> tuple[str, list[str]]:
    """`<str:ae_title>/qidors/studies` → (`/api/dicom-web/{ae_title}/qidors/studies`, names)."""
    names = re.findall(r"<(?:\w+:)?(\w+)>", route)
    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
    return f"/api/dicom-web/{path}", names


def _scope(segments: list[str]) -> str:
    """'of the study', 'of the series' … from the UIDs the path names."""
    uids = [segment for segment in segments if segment.startswith("{")]
    words = ["study", "series", "instance"]
    return words[min(len(uids), 3) - 1] if uids else ""


def describe(route: str) -> tuple[str, str, str]:
    """(method, summary, description) of a DICOMweb route.

    Raises:
        ValueError: the route's shape is unknown (add it here).
    """
    path, _ = _schema_path(route)
    segments = path.split("/")[4:]  # after /api/dicom-web/{ae_title}
    service, rest = segments[0], segments[1:]
    last = rest[-1] if rest else ""
    scope = _scope(rest[:-1] if last in LEVEL_WORDS else rest)
    if service == "qidors" and last in LEVEL_WORDS:
        within = f" of the {scope}" if scope else ""
        summary = f"Search for {LEVEL_WORDS[last]}{within} (QIDO-RS)"
        description = (
            f"Searches the DICOM server for {LEVEL_WORDS[last]}{within} and returns the matches "
            "as a DICOM JSON array (PS3.18 §10.6), each with the attributes DICOM requires for "
            "its level plus those asked for with `includefield`."
        )
        return "get", summary, description
    if service == "stowrs":
        into = " into the given study" if scope else ""
        return (
            "post",
            f"Store instances{into} (STOW-RS)",
            'Stores the DICOM instances of a `multipart/related; type="application/dicom"` '
            "body on the DICOM server. The answer lists stored instances (Referenced SOP "
            "Sequence, each with its RetrieveURL) and refused ones (Failed SOP Sequence with the "
            "reason): 200 all stored, 202 some refused, 409 none stored.",
        )
    if service != "wadors" or not scope:
        raise ValueError(f"Undescribed DICOMweb route {route!r}")
    what = {"study": "all instances of the study", "series": "all instances of the series"}.get(
        scope, "the instance"
    )
    if "frames" in rest and last not in ("rendered", "thumbnail"):
        return (
            "get",
            "Retrieve frames of the instance (WADO-RS)",
            "Returns the pixel data of the given frames as "
            '`multipart/related; type="application/octet-stream"` (one part per frame).',
        )
    if "bulkdata" in rest:
        return (
            "get",
            "Retrieve bulk data (WADO-RS)",
            "Returns a value that the metadata left out, at the `BulkDataURI` the metadata "
            'named, as `multipart/related; type="application/octet-stream"`.',
        )
    if last.startswith("{") or last == "":
        return (
            "get",
            f"Retrieve the {scope} (WADO-RS)",
            f"Returns {what} as `{MULTIPART_DICOM}`, streamed as they arrive from the DICOM "
            "server, in the transfer syntax the server holds them in (Accept "
            "`transfer-syntax=*`) or the one named in the Accept header where ADIT can "
            "produce it. With `pseudonym`, every instance is pseudonymized first.",
        )
    if last == "metadata":
        return (
            "get",
            f"Retrieve the metadata of the {scope} (WADO-RS)",
            f"Returns the attributes of {what} as a DICOM JSON array, without pixel data and "
            "other bulk data (each left-out value is a `BulkDataURI`).",
        )
    if last in ("rendered", "thumbnail"):
        kind = "rendered for display" if last == "rendered" else "as a small preview image"
        frame = " (the given frames)" if "frames" in rest else ""
        return (
            "get",
            f"{'Render' if last == 'rendered' else 'Thumbnail of'} the {scope}{frame} (WADO-RS)",
            f"Returns {what}{frame} {kind} as `image/jpeg` or `image/png` (Accept header), "
            "windowed and scaled as asked. For viewing, not for analysis.",
        )
    raise ValueError(f"Undescribed DICOMweb route {route!r}")


def _responses(method: str, route: str) -> dict[str, Any]:
    if method == "post":
        ok: dict[str, Any] = {
            "200": {"description": "All instances were stored.", "content": {DICOM_JSON: {}}},
            "202": {"description": "Some instances were refused (see FailedSOPSequence)."},
            "409": {"description": "No instance could be stored."},
            "415": {"description": "The body is not multipart/related with DICOM parts."},
        }
    elif "qidors" in route or route.endswith("metadata"):
        ok = {"200": {"description": "DICOM JSON array.", "content": {DICOM_JSON: {}}}}
    elif route.endswith("rendered") or route.endswith("thumbnail"):
        ok = {
            "200": {
                "description": "The image.",
                "content": {"image/jpeg": {}, "image/png": {}},
            }
        }
    else:
        ok = {"200": {"description": "multipart/related body.", "content": {MULTIPART_DICOM: {}}}}
    error_schema = {
        "type": "object",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    }
    for code, text in ERRORS.items():
        ok[code] = {
            "description": text,
            "content": {"application/json": {"schema": error_schema}},
        }
    return ok


def _parameters(route: str, names: list[str], method: str) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": PATH_PARAMETERS.get(name, name.replace("_", " ")),
            "schema": {"type": "string"},
        }
        for name in names
    ]
    extra: list[tuple[str, str]] = []
    if "/qidors/" in f"/{route}":
        extra = QIDO_PARAMETERS
    elif "/wadors/" in f"/{route}":
        if route.endswith("rendered") or route.endswith("thumbnail"):
            extra = RENDERED_PARAMETERS
        elif "bulkdata" not in route:
            extra = WADO_PARAMETERS
    for name, description in extra:
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": description,
                "schema": {"type": "string"},
            }
        )
    return parameters


def dicomweb_paths() -> dict[str, dict[str, Any]]:
    """OpenAPI path items of every DICOMweb route."""
    from . import urls

    paths: dict[str, dict[str, Any]] = {}
    for pattern in urls.urlpatterns:
        if getattr(pattern, "name", "") == "unknown_route":
            continue  # the catch-all that answers unknown routes with a JSON 404
        route = str(pattern.pattern)  # type: ignore[union-attr]
        path, names = _schema_path(route)
        method, summary, description = describe(route)
        operation = {
            "operationId": f"dicomweb_{getattr(pattern, 'name', '') or path}",
            "summary": summary,
            "description": description,
            "tags": [TAG],
            "parameters": _parameters(route, names, method),
            "responses": _responses(method, route),
            "security": SECURITY,
        }
        if method == "post":
            operation["requestBody"] = {
                "required": True,
                "content": {MULTIPART_DICOM: {"schema": {"type": "string", "format": "binary"}}},
            }
        paths.setdefault(path, {})[method] = operation
    return paths


def add_dicomweb_paths(result, generator, request, public):
    """drf-spectacular postprocessing hook: adds the DICOMweb operations to the schema."""
    result.setdefault("paths", {}).update(dicomweb_paths())
    tags = result.setdefault("tags", [])
    if not any(tag.get("name") == TAG for tag in tags):
        tags.append(
            {
                "name": TAG,
                "description": "The DICOM standard's web services (PS3.18) over the DICOM "
                "servers ADIT knows: search (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS). "
                "Any DICOMweb client works, e.g. the `dicomweb-client` package with the URL "
                "`https://<adit>/api/dicom-web/<AE title>` and the prefixes `qidors`, `wadors`, "
                "`stowrs`; or ADIT's own Python client (`adit-client`).",
            }
        )
    return result
