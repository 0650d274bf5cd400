"""WADO-RS resources made from single instances: metadata with BulkDataURIs, bulk data,
frames, transcoding, and rendered images (PS3.18 8.3 / 10.4).

Every function here takes a pydicom Dataset as the source sent it (plus plain parameters), so
the views only fetch and answer. An instance is fetched whole: C-GET and WADO-RS have no way to
ask a source for one attribute or frame of an instance that works across PACS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import numpy as np
from pydicom import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pixel_array
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian

from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import QueryDataset
from adit.dicom_explorer.rendering import PreviewError, frame_count, render_image

from .errors import BadRequest
from .negotiation import Choice

# Binary values longer than this go out of the metadata as BulkDataURIs (pixel data always).
BULK_DATA_THRESHOLD = 1024
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
THUMBNAIL_SIZE = 128
MAX_FRAMES_PER_REQUEST = 10_000


class ResourceMissing(LookupError):
    """The instance has no such attribute or frame (the message says which)."""


def stored_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return str(syntax) if syntax else str(ExplicitVRLittleEndian)


def _is_bulk(element) -> bool:
    if element.keyword in PIXEL_KEYWORDS:
        return True
    if element.VR not in BINARY_VRS or element.value is None:
        return False
    return len(element.value) > BULK_DATA_THRESHOLD


def metadata_encoder(
    instance_url: Callable[[Dataset], str] | None,
) -> Callable[[Dataset], bytes]:
    """DICOM JSON of an instance whose bulk data is replaced by BulkDataURIs pointing at
    `instance_url(ds)/bulkdata/<tag>`; with `instance_url` None the bulk data is left out
    (a pseudonymized instance has UIDs the source does not know, so no URI would resolve)."""

    def encode(ds: Dataset) -> bytes:
        uris: dict[str, dict] = {}
        for element in list(ds):
            if not _is_bulk(element):
                continue
            if instance_url is not None:
                key = f"{element.tag:08X}"
                uris[key] = {
                    "vr": str(element.VR),
                    "BulkDataURI": f"{instance_url(ds)}/bulkdata/{key}",
                }
            del ds[element.tag]
        # Nested binary values stay inline (base64); a URI could not name them.
        result = ds.to_json_dict(bulk_data_threshold=2**62)
        result.update(uris)
        return json.dumps(dict(sorted(result.items()))).encode()

    return encode


def fetch_instance(
    operator: DicomOperator, study_uid: str, series_uid: str, image_uid: str
) -> Dataset | None:
    instances = operator.fetch_image("", study_uid, series_uid, image_uid)
    try:
        return next(iter(instances), None)
    finally:
        close = getattr(instances, "close", None)
        if close is not None:
            close()


def representative_instance(
    operator: DicomOperator, study_uid: str, series_uid: str | None
) -> tuple[str, str] | None:
    """(series, instance) UIDs of the image shown for a study or series: the middle image
    (by InstanceNumber) of the first series (by SeriesNumber) that has images."""
    if series_uid is None:
        query = QueryDataset.from_dict({"StudyInstanceUID": study_uid, "SeriesNumber": None})
        found = sorted(
            operator.find_series(query), key=lambda r: (r.SeriesNumber is None, r.SeriesNumber)
        )
        series_uids = [result.SeriesInstanceUID for result in found]
    else:
        series_uids = [series_uid]
    for uid in series_uids:
        query = QueryDataset.from_dict(
            {"StudyInstanceUID": study_uid, "SeriesInstanceUID": uid, "Rows": None}
        )
        images = [r for r in operator.find_images(query) if r.get_int("Rows")]
        if images:
            images.sort(key=lambda r: (r.InstanceNumber is None, r.InstanceNumber))
            return uid, images[len(images) // 2].SOPInstanceUID
    return None


# --- transcoding ----------------------------------------------------------------------------


def transcode(ds: Dataset, syntax: str) -> Dataset:
    """The instance in `syntax`: as it is, or decompressed to a native little endian syntax.

    Raises:
        PreviewError: the pixel data cannot be decoded here (the reason says why).
    """
    stored = stored_syntax(ds)
    if syntax == stored:
        return ds
    if UID(stored).is_compressed:
        try:
            # Lossless: the instance stays the same instance (same SOP Instance UID).
            ds.decompress(generate_instance_uid=False)
        except (NotImplementedError, RuntimeError, ValueError) as error:
            raise PreviewError(
                f"The pixel data in {UID(stored).name} cannot be decoded here: {error}"
            ) from None
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    return ds


# --- frames and bulk data -------------------------------------------------------------------


def parse_frame_list(text: str) -> list[int]:
    """ "1,3,5" → [1, 3, 5]; BadRequest for anything but positive whole numbers."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise BadRequest(
                f"The frame list {text!r} must be frame numbers from 1 on, separated by commas."
            )
        numbers.append(int(item))
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise BadRequest(f"At most {MAX_FRAMES_PER_REQUEST} frames per request.")
    return numbers


def _pixel_keyword(ds: Dataset) -> str:
    for keyword in PIXEL_KEYWORDS:
        if keyword in ds:
            return keyword
    raise ResourceMissing("The instance has no pixel data, so it has no frames.")


def _native_frame_size(ds: Dataset, keyword: str) -> int:
    bits = {"PixelData": int(ds.get("BitsAllocated", 8) or 8), "FloatPixelData": 32}.get(
        keyword, 64
    )
    if bits % 8:
        raise ResourceMissing(f"Frames of {bits}-bit pixel data cannot be cut out here.")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    return int(ds.Rows) * int(ds.Columns) * samples * bits // 8


def _decoded_frame(ds: Dataset, number: int) -> bytes:
    try:
        array = pixel_array(ds, index=number - 1, raw=True)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError) as error:
        raise PreviewError(
            f"The pixel data in {UID(stored_syntax(ds)).name} cannot be decoded here: {error}"
        ) from None
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"))).tobytes()


def frames(ds: Dataset, numbers: list[int], choice: Choice) -> Iterator[tuple[bytes, str]]:
    """(payload, part content type) of each asked frame, in the order asked.

    Raises:
        ResourceMissing: no pixel data, or a frame number beyond the last frame.
        NotAcceptable: the stored syntax cannot be sent as asked.
    """
    keyword = _pixel_keyword(ds)
    count = frame_count(ds)
    beyond = [n for n in numbers if n > count]
    if beyond:
        raise ResourceMissing(
            f"Frame {beyond[0]} does not exist: the instance has {count} frame(s)."
        )
    stored = stored_syntax(ds)
    syntax = choice.syntax_for(stored)
    compressed = UID(stored).is_compressed
    value = ds[keyword].value
    if compressed and syntax == stored:
        encapsulated = list(generate_frames(value, number_of_frames=count))
        for number in numbers:
            yield encapsulated[number - 1], choice.content_type(stored)
        return
    size = _native_frame_size(ds, keyword)
    for number in numbers:
        if compressed:
            payload = _decoded_frame(ds, number)
        else:
            payload = bytes(value[(number - 1) * size : number * size])
        yield payload, choice.content_type(syntax)


def bulk_data(ds: Dataset, tag_text: str, choice: Choice) -> Iterator[tuple[bytes, str]]:
    """The value of one top-level attribute (PS3.18 8.4.1.3); pixel data as frames when it is
    encapsulated and sent as stored, as one native value otherwise.

    Raises:
        BadRequest: the tag is not 8 hex digits.
        ResourceMissing: the instance has no such attribute.
    """
    try:
        tag = Tag(int(tag_text, 16)) if len(tag_text) == 8 else None
    except ValueError:
        tag = None
    if tag is None:
        raise BadRequest(f"The bulk data tag {tag_text!r} must be 8 hexadecimal digits.")
    if tag not in ds:
        raise ResourceMissing(f"The instance has no attribute ({tag.group:04X},{tag.element:04X}).")
    element = ds[tag]
    if element.keyword in PIXEL_KEYWORDS:
        stored = stored_syntax(ds)
        syntax = choice.syntax_for(stored)
        if UID(stored).is_compressed and syntax == stored:
            yield from frames(ds, list(range(1, frame_count(ds) + 1)), choice)
            return
        if UID(stored).is_compressed:
            payload = b"".join(_decoded_frame(ds, n) for n in range(1, frame_count(ds) + 1))
        else:
            payload = bytes(element.value)
        yield payload, choice.content_type(syntax)
        return
    if element.VR not in BINARY_VRS:
        raise ResourceMissing(
            f"The attribute ({tag.group:04X},{tag.element:04X}) is not bulk data; it is in the "
            "metadata."
        )
    yield bytes(element.value or b""), choice.media_type


# --- rendered -------------------------------------------------------------------------------


def rendering_options(params) -> dict:
    """`window`, `viewport` and `quality` (PS3.18 8.3.5.1) as arguments of `render_image`.

    Raises:
        BadRequest: naming the parameter and what it must look like.
    """
    options: dict = {}
    known = {"window", "viewport", "quality", "annotation", "charset", "iccprofile"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise BadRequest(
            f"Unknown parameter(s) for a rendered resource: {', '.join(unknown)}; "
            "use window, viewport or quality."
        )
    if params.get("annotation"):
        raise BadRequest("annotation is not supported: ADIT renders images without burned-in text.")
    if window := params.get("window"):
        parts = [part.strip() for part in window.split(",")]
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            center, width = float(parts[0]), float(parts[1])
            if width < 1:
                raise ValueError
        except ValueError:
            raise BadRequest(
                f"window must be center,width[,function] with a width of at least 1; got "
                f"{window!r}."
            ) from None
        function = parts[2].lower() if len(parts) == 3 else "linear"
        if function not in ("linear", "linear_exact", "linear-exact"):
            raise BadRequest(f"window function {parts[2]!r} is not supported; use linear.")
        options["window"] = (center, width)
    if viewport := params.get("viewport"):
        parts = [part.strip() for part in viewport.split(",")]
        if len(parts) != 2 or not all(part.isdigit() and 0 < int(part) <= 8192 for part in parts):
            raise BadRequest(
                "viewport must be width,height in pixels (1 to 8192; ADIT does not crop to a "
                f"source region); got {viewport!r}."
            )
        options["size"] = (int(parts[0]), int(parts[1]))
    if quality := params.get("quality"):
        if not quality.isdigit() or not 1 <= int(quality) <= 100:
            raise BadRequest(f"quality must be a whole number from 1 to 100; got {quality!r}.")
        options["quality"] = int(quality)
    return options


def render(ds: Dataset, media_type: str, options: dict, frame: int = 1, thumbnail=False) -> bytes:
    """The frame as JPEG or PNG.

    Raises:
        PreviewError: the instance cannot be shown (the reason says why).
    """
    options = dict(options)
    if thumbnail:
        options.setdefault("size", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    image_format = "PNG" if media_type == "image/png" else "JPEG"
    return render_image(ds, frame, image_format=image_format, **options)
