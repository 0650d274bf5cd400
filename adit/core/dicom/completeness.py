"""Is a received data set whole? A walk over its element structure (PS3.5 section 7).

pydicom reads leniently: an element whose value is cut short keeps its declared length and a
short value, and a sequence without its delimiter ends at the end of the buffer with a warning.
That is right for reading damaged archives, wrong for a receiver that answers "stored": a data
set cut in half would be acknowledged, spooled and relayed. So before the receiver says
success it walks the encoded bytes once, without decoding any value: every element's declared
length must fit into what is left, every undefined-length sequence, item and encapsulated pixel
data must end with its delimiter, and nothing may be left over. A deflated data set must be a
complete deflate stream that inflates to at most `MAX_INFLATED_BYTES` (a deflate bomb of a
megabyte would otherwise inflate to gigabytes in memory). The walk costs a few microseconds per
element and no copies.

What it cannot see: a data set cut exactly between two top-level elements is structurally a
shorter, valid data set. The upper layer's "last fragment" flag and the destination's checks
remain the guard there.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = (0xFFFE, 0xE000)
ITEM_DELIMITATION = (0xFFFE, 0xE00D)
SEQUENCE_DELIMITATION = (0xFFFE, 0xE0DD)
# Explicit VRs with a reserved field and a 32-bit length (PS3.5 table 7.1-1).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
MAX_NESTING = 64
MAX_INFLATED_BYTES = 256 * 1024 * 1024
_INFLATE_STEP = 16 * 1024 * 1024


class IncompleteDataSet(ValueError):
    """The data set's bytes end before its structure does (or do not end where it does)."""


def check_complete(
    encoded: bytes | memoryview, transfer_syntax_uid: str, capture: Collection[int] = ()
) -> dict[int, bytes]:
    """Raises `IncompleteDataSet` unless `encoded` is one whole data set in that syntax.

    Returns the raw values of the top-level elements whose tags (as ``0xGGGGEEEE``) are in
    `capture`, found on the way: a receiver learns the UIDs that route an instance without
    decoding the data set a second time.
    """
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        encoded = _inflate(encoded)
    walker = _Walker(
        memoryview(encoded),
        implicit=transfer_syntax_uid == ImplicitVRLittleEndian,
        byte_order=">" if transfer_syntax_uid == ExplicitVRBigEndian else "<",
        capture=capture,
    )
    walker.data_set(0, len(encoded), in_undefined_item=False, depth=0)
    return walker.captured


def text_value(value: bytes | None) -> str:
    """A captured UI/AE/CS value as text (padding removed); '' when absent."""
    return value.rstrip(b"\0 ").decode("ascii", "replace").strip() if value else ""


def _inflate(deflated: bytes | memoryview) -> bytes:
    """The inflated data set, in bounded steps so that a bomb stops at the limit."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = bytearray()
    pending = deflated
    try:
        while pending and not inflater.eof:
            inflated += inflater.decompress(pending, _INFLATE_STEP)
            if len(inflated) > MAX_INFLATED_BYTES:
                raise IncompleteDataSet(
                    f"the deflated data set inflates to more than "
                    f"{MAX_INFLATED_BYTES // (1024 * 1024)} MiB"
                )
            pending = inflater.unconsumed_tail
        inflated += inflater.flush()
    except zlib.error as error:
        raise IncompleteDataSet(f"the deflated data set is corrupt: {error}") from None
    if not inflater.eof:
        raise IncompleteDataSet("the deflated data set ends before its deflate stream")
    return bytes(inflated)


class _Walker:
    def __init__(
        self, data: memoryview, implicit: bool, byte_order: str, capture: Collection[int] = ()
    ) -> None:
        self.data = data
        self.implicit = implicit
        self.capture = frozenset(capture)
        self.captured: dict[int, bytes] = {}
        self.tag = struct.Struct(byte_order + "HH")
        self.u16 = struct.Struct(byte_order + "H")
        self.u32 = struct.Struct(byte_order + "I")

    def _need(self, position: int, size: int, end: int, what: str) -> None:
        if position + size > end:
            raise IncompleteDataSet(
                f"{what} at byte {position} needs {size} bytes, {max(0, end - position)} left"
            )

    def data_set(self, position: int, end: int, in_undefined_item: bool, depth: int) -> int:
        """Walks elements from `position` to `end` (or to an item delimiter); returns where
        the walk stopped."""
        if depth > MAX_NESTING:
            raise IncompleteDataSet(f"sequences nested deeper than {MAX_NESTING} levels")
        data = self.data
        while position < end:
            self._need(position, 8, end, "an element header")
            group, element = self.tag.unpack_from(data, position)
            if (group, element) == ITEM_DELIMITATION and in_undefined_item:
                return position + 8
            if group == 0xFFFE:
                raise IncompleteDataSet(
                    f"unexpected item tag ({group:04X},{element:04X}) at byte {position}"
                )
            if self.implicit:
                vr = b""
                length = self.u32.unpack_from(data, position + 4)[0]
                position += 8
            else:
                vr = bytes(data[position + 4 : position + 6])
                if vr in LONG_VRS:
                    self._need(position, 12, end, "an element header")
                    length = self.u32.unpack_from(data, position + 8)[0]
                    position += 12
                else:
                    length = self.u16.unpack_from(data, position + 6)[0]
                    position += 8
            if length == UNDEFINED_LENGTH:
                # A sequence, encapsulated pixel data, or UN holding an implicit sequence.
                position = self.items(position, end, depth, f"({group:04X},{element:04X})")
            else:
                if position + length > end:
                    self._need(position, length, end, f"the value of ({group:04X},{element:04X})")
                if depth == 0 and self.capture and (group << 16 | element) in self.capture:
                    self.captured[group << 16 | element] = bytes(data[position : position + length])
                position += length
        if in_undefined_item:
            raise IncompleteDataSet("an item of undefined length ends without its delimiter")
        if position != end:
            raise IncompleteDataSet(f"{position - end} bytes past the end of the data set")
        return position

    def items(self, position: int, end: int, depth: int, tag_text: str) -> int:
        data = self.data
        while True:
            self._need(position, 8, end, f"an item of {tag_text}")
            group, element = self.tag.unpack_from(data, position)
            length = self.u32.unpack_from(data, position + 4)[0]
            position += 8
            if (group, element) == SEQUENCE_DELIMITATION:
                return position
            if (group, element) != ITEM:
                raise IncompleteDataSet(
                    f"{tag_text}: expected an item or the sequence delimiter at byte "
                    f"{position - 8}, found ({group:04X},{element:04X})"
                )
            if length == UNDEFINED_LENGTH:
                position = self.data_set(position, end, in_undefined_item=True, depth=depth + 1)
            else:
                self._need(position, length, end, f"an item of {tag_text}")
                position += length
