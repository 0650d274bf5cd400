"""DICOMweb endpoints (QIDO-RS, WADO-RS, STOW-RS) over the DICOM servers ADIT knows.

Every request needs a token (`Authorization: Token <token>`), the permission for the
operation (`dicom_web.can_query`, `can_retrieve`, `can_store`) in the token owner's *active*
group, and access of that group to the server in the needed direction (source for QIDO/WADO,
destination for STOW). A server that is unknown, inactive or not accessible answers 404 (the
same answer, so a client cannot probe which AE titles exist).
"""

from __future__ import annotations

import logging

from adit_client.multipart import (
    closing_delimiter,
    encode_part,
    new_boundary,
    parse_content_type,
    part_header,
)
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from adit.audit.models import AuditEntry
from adit.audit.services import record, record_query
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.part10 import EncodedInstance
from adit.core.dicom.pseudonymizer import BURNED_IN_EXCLUSION_TEXT
from adit.dicom_explorer.rendering import PreviewError

from . import relay, resources, services
from .errors import BadRequest, UnsupportedMediaType, api_error_for
from .models import QUERY_PERMISSION, RETRIEVE_PERMISSION, STORE_PERMISSION
from .negotiation import (
    Choice,
    NotAcceptable,
    negotiate_instances,
    negotiate_octets,
    negotiate_rendered,
)
from .renderers import DicomJsonRenderer
from .usage import ApiUsageMixin

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"


@extend_schema(exclude=True)
class DicomWebView(ApiUsageMixin, APIView):
    """Authentication, permission, server lookup, usage statistics and JSON errors."""

    renderer_classes = [DicomJsonRenderer]
    parser_classes = []  # bodies are read as streams (STOW-RS)
    permission_classes = [IsAuthenticated]
    required_permission = ""
    direction = "source"
    operation = ""

    def perform_content_negotiation(self, request, force=False):
        # Successful retrievals bypass the renderers; everything rendered is DICOM JSON or an
        # error, so a client's Accept header (e.g. multipart/related) must not cause a 406.
        renderer = DicomJsonRenderer()
        return renderer, renderer.media_type

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if self.required_permission and not request.user.has_perm(self.required_permission):
            raise PermissionDenied(
                f"You lack the permission to {self.operation} through the DICOMweb API "
                f"({self.required_permission}); ask an administrator to grant it to your "
                "active group."
            )

    def get_server(self, ae_title: str):
        server = services.find_server(self.request.user, ae_title, self.direction)
        if server is None:
            raise NotFound(
                f"No DICOM server with the AE title {ae_title!r} is available to your active "
                f"group as a {self.direction}."
            )
        return server

    def handle_exception(self, exc):
        if isinstance(exc, DicomError):
            exc = api_error_for(exc)
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response) and response.status_code >= 400:
            # Errors are plain JSON with a `detail`, whatever the endpoint normally returns.
            _set_renderer(response, JSONRenderer(), "application/json")
        return response


def _set_renderer(response: Response, renderer, media_type: str) -> None:
    # DRF sets these attributes on its responses in finalize_response (not declared).
    response.accepted_renderer = renderer  # type: ignore[attr-defined]
    response.accepted_media_type = media_type  # type: ignore[attr-defined]


# --- QIDO-RS --------------------------------------------------------------------------------


class QidoView(DicomWebView):
    required_permission = QUERY_PERMISSION
    operation = "query"
    level = ""

    def get(self, request: Request, ae_title: str, study_uid=None, series_uid=None) -> Response:
        path_uids = {}
        if study_uid is not None:
            path_uids["StudyInstanceUID"] = services.validate_uid("StudyInstanceUID", study_uid)
        if series_uid is not None:
            path_uids["SeriesInstanceUID"] = services.validate_uid("SeriesInstanceUID", series_uid)
        search = services.build_search(request.query_params, path_uids)
        server = self.get_server(ae_title)
        record_query(search.query, level=self.level, request=request, source=server)
        wado_root = request.build_absolute_uri(f"/api/dicom-web/{ae_title}/wadors")

        def retrieve_url(study: str, series: str | None, instance: str | None) -> str:
            url = f"{wado_root}/studies/{study}"
            if series:
                url += f"/series/{series}"
            if instance:
                url += f"/instances/{instance}"
            return url

        results = services.search(
            services.make_operator(server), self.level, search, retrieve_url=retrieve_url
        )
        return Response(results, content_type=DICOM_JSON)


class QidoStudiesView(QidoView):
    level = "STUDY"


class QidoSeriesView(QidoView):
    level = "SERIES"


class QidoInstancesView(QidoView):
    level = "IMAGE"


@extend_schema(exclude=True)
class UnknownRouteView(DicomWebView):
    """Any path under the DICOMweb prefix that names no resource: a JSON 404, never HTML."""

    permission_classes = []
    authentication_classes = []

    def _not_found(self, request, *args, **kwargs):
        raise NotFound(
            f"{request.path} is not a DICOMweb resource of ADIT. Routes: "
            "/api/dicom-web/<AE title>/qidors/{studies,series,instances}, "
            "/api/dicom-web/<AE title>/wadors/studies/..., "
            "/api/dicom-web/<AE title>/stowrs/studies[/<study>]."
        )

    get = post = put = patch = delete = head = options = _not_found


# --- WADO-RS --------------------------------------------------------------------------------


class WadoView(DicomWebView):
    required_permission = RETRIEVE_PERMISSION
    operation = "retrieve"
    metadata = False

    def get(self, request: Request, ae_title: str, study_uid: str, series_uid=None, image_uid=None):
        services.validate_uid("StudyInstanceUID", study_uid)
        if series_uid is not None:
            services.validate_uid("SeriesInstanceUID", series_uid)
        if image_uid is not None:
            services.validate_uid("SOPInstanceUID", image_uid)
        transformer = services.build_transformer(request.query_params, request.user)
        choice = None
        if not self.metadata:
            choice = negotiate_instances(
                request.META.get("HTTP_ACCEPT"), single_part_allowed=image_uid is not None
            )
        server = self.get_server(ae_title)
        config = server.to_config()
        if not self.metadata and relay.can_relay(
            config, transformer, request.headers.get("Accept", "")
        ):
            return self._relayed(
                request, server, config, transformer, study_uid, series_uid, image_uid
            )
        operator = relay.retrieve_operator(server)
        fetch = services.fetcher(operator, study_uid, series_uid, image_uid)
        transform = services.transform_function(transformer)
        if self.metadata:
            wado_root = request.build_absolute_uri(f"/api/dicom-web/{ae_title}/wadors")
            # Pseudonymized UIDs are unknown to the source: no BulkDataURI could resolve.
            encode = resources.metadata_encoder(
                None if transformer.pseudonym else lambda ds: _instance_url(wado_root, ds)
            )
        elif transformer.is_noop and choice is not None and choice.syntaxes is None:
            # Wanted as stored and nothing to change: passed on as they arrived, never decoded
            # and never encoded again.
            fetch = services.encoded_fetcher(operator, study_uid, series_uid, image_uid)
            transform, encode = _unchanged, EncodedInstance.part10_pieces
        else:
            assert choice is not None
            encode = _instance_encoder(choice)
        stream = services.InstanceStream(operator, fetch, transform, encode)
        try:
            first = stream.first()
        except DicomError as error:
            stream.close()
            # Some PACS answer a retrieve of an unknown UID with a failure status: look first.
            if isinstance(error, RetriableDicomError) or services.exists(
                services.make_operator(server), study_uid, series_uid, image_uid
            ):
                raise
            first = None
        except BaseException:
            stream.close()
            raise
        _audit_retrieve(request, server, transformer, study_uid, series_uid, image_uid, first)
        if first is None:
            stream.close()
            what = (
                f"instance {image_uid}"
                if image_uid
                else f"series {series_uid}"
                if series_uid
                else f"study {study_uid}"
            )
            skipped = ""
            if transformer.burned_in_count:
                skipped = f" (its instances are {BURNED_IN_EXCLUSION_TEXT})"
            elif transformer.skipped_count:
                skipped = " (its instances are of modalities excluded from pseudonymization)"
            raise NotFound(f"The {what} was not found on {server.name}{skipped}.")
        if self.metadata:
            response = StreamingHttpResponse(_json_array(first, stream), content_type=DICOM_JSON)
        elif choice is not None and not choice.multipart:
            stream.close()
            response = HttpResponse(services.payload_bytes(first), content_type="application/dicom")
        else:
            boundary = new_boundary()
            response = StreamingHttpResponse(
                _multipart(first, stream, boundary),
                content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
            )
        response["Cache-Control"] = "no-store"
        return response

    def _relayed(self, request, server, config, transformer, study_uid, series_uid, image_uid):
        """The source's own WADO-RS answer, passed through unchanged (see `relay`)."""
        timeouts = services.local_config().timeouts
        source = relay.Relay(
            config, study_uid, series_uid, image_uid, (timeouts.connection, timeouts.http)
        )
        found = source.open()
        _audit_retrieve(
            request, server, transformer, study_uid, series_uid, image_uid, found or None
        )
        if not found:
            raise NotFound(
                f"The {_what(study_uid, series_uid, image_uid)} was not found on {server.name}."
            )
        response = StreamingHttpResponse(source.body(), content_type=source.content_type)
        response["Cache-Control"] = "no-store"
        return response


def _what(study_uid: str, series_uid: str | None, image_uid: str | None) -> str:
    if image_uid:
        return f"instance {image_uid}"
    if series_uid:
        return f"series {series_uid}"
    return f"study {study_uid}"


def _instance_url(wado_root: str, ds) -> str:
    return (
        f"{wado_root}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def _unchanged(instance):
    return instance


def _instance_encoder(choice: Choice):
    def encode(ds) -> bytes:
        stored = resources.stored_syntax(ds)
        syntax = choice.syntax_for(stored)
        if syntax == stored:
            # Unchanged and wanted as stored: the bytes it arrived as, not encoded again.
            received = relay.encode_received(ds)
            if received is not None:
                return received
        try:
            ds = resources.transcode(ds, syntax)
        except PreviewError as error:
            raise NotAcceptable(f"Instance {ds.SOPInstanceUID}: {error}") from None
        return services.encode_instance(ds)

    return encode


def _audit_retrieve(request, server, transformer, study_uid, series_uid, image_uid, first) -> None:
    details = {"via": "WADO-RS"}
    if image_uid:
        details["sop_instance_uid"] = image_uid
    record(
        AuditEntry.Action.RETRIEVE,
        request=request,
        outcome=AuditEntry.Outcome.SUCCESS if first is not None else AuditEntry.Outcome.FAILURE,
        pseudonym=transformer.pseudonym or "",
        study_uid=study_uid,
        series_uids=[series_uid] if series_uid else [],
        source=server,
        details=details,
    )


async def _multipart(first: services.Payload, stream: services.InstanceStream, boundary: str):
    header = part_header("application/dicom", boundary)
    try:
        yield b"".join((header, *services.payload_pieces(first), b"\r\n"))
        # The parts ready at a time go out as one chunk: one message through daphne for
        # several instances.
        async for payloads in stream.rest_in_batches():
            yield b"".join(
                piece
                for payload in payloads
                for piece in (header, *services.payload_pieces(payload), b"\r\n")
            )
    except Exception as error:
        # The status line is sent already; a text part tells the client what went wrong.
        logger.warning("WADO-RS stream broke off after %d instance(s): %s", stream.count, error)
        message = f"The retrieval failed after {stream.count} instance(s): {error}"
        yield encode_part(message.encode(), "text/plain", boundary)
    finally:
        stream.close()
    yield closing_delimiter(boundary)


async def _json_array(first: services.Payload, stream: services.InstanceStream):
    try:
        yield b"[" + services.payload_bytes(first)
        async for payload in stream.rest():
            yield b"," + services.payload_bytes(payload)
        yield b"]"
    finally:
        # On an error the JSON stays unterminated, so the client cannot mistake it for complete.
        stream.close()


class WadoMetadataView(WadoView):
    metadata = True


class WadoInstanceResourceView(DicomWebView):
    """Resources made from one instance: bulk data, frames, rendered images and thumbnails."""

    required_permission = RETRIEVE_PERMISSION
    operation = "retrieve"

    def fetch_one(self, request, ae_title, study_uid, series_uid, image_uid, what: str):
        """(server, dataset) of the instance; for a study or series (image_uid None) the one
        shown for it. NotFound when there is none."""
        services.validate_uid("StudyInstanceUID", study_uid)
        if series_uid is not None:
            services.validate_uid("SeriesInstanceUID", series_uid)
        if image_uid is not None:
            services.validate_uid("SOPInstanceUID", image_uid)
        server = self.get_server(ae_title)
        operator = services.make_operator(server)
        try:
            if image_uid is None:
                found = resources.representative_instance(operator, study_uid, series_uid)
                if found is not None:
                    series_uid, image_uid = found
            ds = None
            if image_uid is not None:
                assert series_uid is not None
                ds = resources.fetch_instance(operator, study_uid, series_uid, image_uid)
        finally:
            operator.abort()
        record(
            AuditEntry.Action.RETRIEVE,
            request=request,
            outcome=AuditEntry.Outcome.SUCCESS if ds is not None else AuditEntry.Outcome.FAILURE,
            study_uid=study_uid,
            series_uids=[series_uid] if series_uid else [],
            source=server,
            details={"via": f"WADO-RS {what}", "sop_instance_uid": image_uid or ""},
        )
        if ds is None:
            target = f"instance {image_uid}" if image_uid else f"study {study_uid}"
            if image_uid is None:
                target = f"{'series ' + series_uid if series_uid else target} (with images)"
            raise NotFound(f"The {target} was not found on {server.name}.")
        return ds


def _octet_multipart(parts) -> HttpResponse:
    boundary = new_boundary()
    body = b"".join(encode_part(payload, content_type, boundary) for payload, content_type in parts)
    response = HttpResponse(
        body + closing_delimiter(boundary),
        content_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
    )
    response["Cache-Control"] = "no-store"
    return response


class WadoBulkDataView(WadoInstanceResourceView):
    def get(self, request, ae_title, study_uid, series_uid, image_uid, tag):
        choice = negotiate_octets(request.META.get("HTTP_ACCEPT"))
        ds = self.fetch_one(request, ae_title, study_uid, series_uid, image_uid, "bulk data")
        try:
            parts = list(resources.bulk_data(ds, tag, choice))
        except resources.ResourceMissing as error:
            raise NotFound(str(error)) from None
        except PreviewError as error:
            raise NotAcceptable(str(error)) from None
        return _octet_multipart(parts)


class WadoFramesView(WadoInstanceResourceView):
    def get(self, request, ae_title, study_uid, series_uid, image_uid, frames):
        numbers = resources.parse_frame_list(frames)
        choice = negotiate_octets(request.META.get("HTTP_ACCEPT"))
        ds = self.fetch_one(request, ae_title, study_uid, series_uid, image_uid, "frames")
        try:
            parts = list(resources.frames(ds, numbers, choice))
        except resources.ResourceMissing as error:
            raise NotFound(str(error)) from None
        except PreviewError as error:
            raise NotAcceptable(str(error)) from None
        return _octet_multipart(parts)


class WadoRenderedView(WadoInstanceResourceView):
    thumbnail = False

    def get(
        self, request, ae_title, study_uid, series_uid=None, image_uid=None, frames=None
    ) -> HttpResponse:
        frame = 1
        if frames is not None:
            numbers = resources.parse_frame_list(frames)
            if len(numbers) != 1:
                raise BadRequest("Ask for one rendered frame at a time.")
            frame = numbers[0]
        media_type = negotiate_rendered(request.META.get("HTTP_ACCEPT"))
        options = resources.rendering_options(request.query_params)
        what = "thumbnail" if self.thumbnail else "rendered"
        ds = self.fetch_one(request, ae_title, study_uid, series_uid, image_uid, what)
        try:
            image = resources.render(ds, media_type, options, frame, thumbnail=self.thumbnail)
        except PreviewError as error:
            if "does not exist" in str(error):
                raise NotFound(str(error)) from None
            raise NotAcceptable(f"The image cannot be rendered: {error}") from None
        response = HttpResponse(image, content_type=media_type)
        response["Cache-Control"] = "no-store"
        return response


class WadoThumbnailView(WadoRenderedView):
    thumbnail = True


# --- STOW-RS --------------------------------------------------------------------------------


class StowView(DicomWebView):
    required_permission = STORE_PERMISSION
    operation = "store"
    direction = "destination"

    def post(self, request: Request, ae_title: str, study_uid=None) -> HttpResponse:
        if study_uid is not None:
            services.validate_uid("StudyInstanceUID", study_uid)
        media_type, params = parse_content_type(request.META.get("CONTENT_TYPE", ""))
        if media_type != "multipart/related":
            raise UnsupportedMediaType(
                f"STOW-RS needs a multipart/related body; got {media_type or 'no content type'}."
            )
        part_type = params.get("type", "application/dicom").lower()
        if part_type != "application/dicom":
            raise UnsupportedMediaType(
                f'Only type="application/dicom" is supported for STOW-RS; got {part_type!r}.'
            )
        boundary = params.get("boundary")
        if not boundary:
            raise BadRequest("The Content-Type has no boundary parameter.")
        server = self.get_server(ae_title)
        operator = services.make_operator(server)
        outcome = services.store_instances(operator, request._request.read, boundary, study_uid)
        request.bytes_received = outcome.bytes_received  # type: ignore[attr-defined]
        if not outcome.stored and not outcome.failed:
            raise BadRequest("The multipart body contains no parts.")

        def instance_url(study: str, series: str, instance: str) -> str:
            return request.build_absolute_uri(
                f"/api/dicom-web/{ae_title}/wadors/studies/{study}/series/{series}"
                f"/instances/{instance}"
            )

        # The study's RetrieveURL: of the study in the path, or of the one study that every
        # stored instance belongs to (as Orthanc answers too).
        studies = {study for _, _, study, _ in outcome.stored if study}
        study_of_all = study_uid or (studies.pop() if len(studies) == 1 else None)
        study_url = (
            request.build_absolute_uri(f"/api/dicom-web/{ae_title}/wadors/studies/{study_of_all}")
            if study_of_all
            else None
        )
        dataset = services.stow_response(outcome, instance_url, study_url)
        if not outcome.failed:
            status = 200
        elif outcome.stored:
            status = 202
        else:
            status = 409
        return Response(dataset.to_json_dict(), status=status, content_type=DICOM_JSON)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response) and response.status_code in (202, 409):
            # A STOW answer with failures is DICOM JSON too, not an error document.
            _set_renderer(response, DicomJsonRenderer(), DICOM_JSON)
        return response
