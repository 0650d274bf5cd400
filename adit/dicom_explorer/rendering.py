"""Turning one DICOM instance into something a browser shows: a PNG and a header table.

Pure functions of a pydicom Dataset (no Django, no network), so they are tested with
datasets made in the test.

Grey levels follow PS3.4 N.2: the Modality LUT (rescale slope/intercept) makes stored values
meaningful (Hounsfield units for CT), then the VOI transform picks the range shown. The VOI
comes from the file when it has one (a VOI LUT Sequence, else Window Center/Width); otherwise
CT gets a soft-tissue window (center 40, width 400 HU) and everything else the 1st to 99th
percentile of the frame, which shows MR and X-ray images with no preset sensibly.
MONOCHROME1 is inverted; colour images are shown as they are (pydicom converts YBR to RGB).

An image that cannot be made raises `PreviewError` with a reason for the user (no pixel data,
a transfer syntax no installed decoder handles, a broken file), never a bare exception.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array
from pydicom.sequence import Sequence

CT_DEFAULT_WINDOW = (40.0, 400.0)  # center, width in HU: soft tissue
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MAX_VALUE_CHARS = 200
MAX_HEADER_ROWS = 5000


class PreviewError(Exception):
    """Why no image could be made (the message is shown to the user)."""


def frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _transfer_syntax_name(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None)
    if syntax is None:
        return "unknown transfer syntax"
    return f"{syntax.name} ({syntax})" if syntax.name != syntax else str(syntax)


def _decode(ds: Dataset, frame: int) -> np.ndarray:
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        raise PreviewError(
            "The instance has no pixel data (e.g. a report, a presentation state or a key object)."
        )
    frames = frame_count(ds)
    if not 1 <= frame <= frames:
        raise PreviewError(f"Frame {frame} does not exist: the instance has {frames} frames.")
    try:
        return pixel_array(ds, index=frame - 1 if frames > 1 else None)
    except (NotImplementedError, RuntimeError) as error:
        raise PreviewError(
            f"The pixel data in {_transfer_syntax_name(ds)} cannot be decoded here: {error}"
        ) from None
    except (ValueError, AttributeError, KeyError, TypeError) as error:
        raise PreviewError(f"The pixel data is malformed: {error}") from None


def _window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 linear windowing onto 0..1."""
    width = max(width, 1.0)
    scaled = (values - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(scaled, 0.0, 1.0)


def _first_number(value) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, list | tuple)
        or hasattr(value, "__getitem__")
        and not isinstance(value, str)
    ):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def grey_levels(
    ds: Dataset, stored: np.ndarray, window: tuple[float, float] | None = None
) -> np.ndarray:
    """Stored values of one monochrome frame → 0..1 after the Modality and VOI transforms.

    `window` (center, width in modality units) replaces the file's VOI when given.
    """
    values = apply_modality_lut(stored, ds).astype(np.float64)
    if window is not None:
        levels = _window(values, *window)
    elif "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        shown = apply_voi_lut(stored, ds, prefer_lut=True).astype(np.float64)
        low, high = float(shown.min()), float(shown.max())
        levels = (shown - low) / (high - low) if high > low else np.zeros_like(shown)
    else:
        center = _first_number(ds.get("WindowCenter"))
        width = _first_number(ds.get("WindowWidth"))
        if center is None or width is None or width <= 0:
            if str(ds.get("Modality", "")).upper() == "CT":
                center, width = CT_DEFAULT_WINDOW
            else:
                low, high = np.percentile(values, (1, 99)) if values.size else (0.0, 0.0)
                center, width = (low + high) / 2, max(high - low, 1.0)
        levels = _window(values, center, width)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        levels = 1.0 - levels
    return levels


def _colour_to_8_bit(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    bits = int(ds.get("BitsStored", 8) or 8)
    return np.clip(pixels.astype(np.float64) / (2**bits - 1) * 255, 0, 255).astype(np.uint8)


def render_png(ds: Dataset, frame: int = 1, max_size: int | None = None) -> bytes:
    """One frame as PNG bytes, shrunk to fit `max_size` × `max_size` if given.

    Raises:
        PreviewError: naming why no image could be made.
    """
    return render_image(ds, frame, size=(max_size, max_size) if max_size else None)


def render_image(
    ds: Dataset,
    frame: int = 1,
    *,
    window: tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    image_format: str = "PNG",
    quality: int | None = None,
) -> bytes:
    """One frame as PNG or JPEG bytes (PS3.18 8.3.5 rendered resources).

    Args:
        window: (center, width) in modality units instead of the file's VOI (greyscale only).
        size: the viewport (width, height) the image is shrunk to fit, aspect ratio kept.
        image_format: "PNG" or "JPEG".
        quality: JPEG quality 1..100.

    Raises:
        PreviewError: naming why no image could be made.
    """
    pixels = _decode(ds, frame)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1:
        if pixels.ndim != 2:
            raise PreviewError(f"Unexpected pixel array shape {pixels.shape} for one frame.")
        levels = grey_levels(ds, pixels, window)
        image = Image.fromarray((levels * 255).round().astype(np.uint8), "L")
    elif samples == 3 and pixels.ndim == 3:
        image = Image.fromarray(_colour_to_8_bit(pixels, ds), "RGB")
    else:
        raise PreviewError(f"{samples} samples per pixel cannot be shown.")
    if size:
        image.thumbnail(size)
    output = io.BytesIO()
    if image_format == "JPEG":
        image.save(output, format="JPEG", quality=quality or 90)
    else:
        image.save(output, format="PNG")
    return output.getvalue()


def shrink_png(data: bytes, max_size: int) -> bytes:
    """A PNG made by someone else, shrunk to fit `max_size` × `max_size`."""
    image = Image.open(io.BytesIO(data))
    image.thumbnail((max_size, max_size))
    output = io.BytesIO()
    image.save(output, format="PNG")
    return output.getvalue()


def placeholder_png(reason: str, size: int = 256) -> bytes:
    """A grey square that says why there is no image (shown where the image would be)."""
    image = Image.new("L", (size, size), 60)
    draw = ImageDraw.Draw(image)
    text = "No preview:\n" + "\n".join(textwrap.wrap(reason, width=max(size // 7, 10))[:12])
    draw.multiline_text((8, 8), text, fill=230, spacing=3)
    output = io.BytesIO()
    image.save(output, format="PNG")
    return output.getvalue()


# --- the header table -------------------------------------------------------------------------


@dataclass
class HeaderRow:
    """One data element as the header table shows it; a sequence has its items' rows."""

    tag: str
    keyword: str
    name: str
    vr: str
    value: str
    private: bool
    items: list[list[HeaderRow]] = field(default_factory=list)

    @property
    def is_sequence(self) -> bool:
        return self.vr == "SQ"

    @property
    def search_text(self) -> str:
        """What the table's filter matches (lower case): tag, keyword, name and value."""
        own = f"{self.tag} {self.tag.replace(',', '')} {self.keyword} {self.name} {self.value}"
        nested = " ".join(row.search_text for item in self.items for row in item)
        return f"{own} {nested}".lower()


def _value_text(element: DataElement) -> str:
    if element.keyword in PIXEL_KEYWORDS or element.VR in ("OB", "OW", "OF", "OD", "OL", "UN"):
        length = len(element.value) if element.value is not None else 0
        return f"<{length} bytes>"
    value = element.value
    text = "\\".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "…"
    return text


def header_rows(
    ds: Dataset, budget: list[int] | None = None, with_file_meta: bool = True
) -> list[HeaderRow]:
    """The data elements of `ds` (file meta first), sequences with their items' rows.

    At most `MAX_HEADER_ROWS` rows in all, so a huge structured report cannot make a page of
    megabytes.
    """
    budget = budget if budget is not None else [MAX_HEADER_ROWS]
    rows: list[HeaderRow] = []
    elements = list(getattr(ds, "file_meta", None) or []) if with_file_meta else []
    elements += list(ds)
    for element in elements:
        if budget[0] <= 0:
            break
        budget[0] -= 1
        tag = element.tag
        row = HeaderRow(
            tag=f"({tag.group:04X},{tag.element:04X})",
            keyword=element.keyword or "",
            name=element.name or "Private tag",
            vr=str(element.VR),
            value="",
            private=tag.is_private,
        )
        if isinstance(element.value, Sequence):
            row.value = f"{len(element.value)} item(s)"
            row.items = [header_rows(item, budget, with_file_meta=False) for item in element.value]
        else:
            row.value = _value_text(element)
        rows.append(row)
    return rows
