"""The errors of ADIT's upper layer (PS3.8): what ends an association early.

`DimseConnector` turns them into the DICOM layer's own errors (`RetriableDicomError` for a
broken association, `DicomError` for a permanent rejection); nothing above `net/` sees them.
"""

from __future__ import annotations


class UpperLayerError(Exception):
    """The association broke: connection lost, peer abort, timeout or protocol violation."""


class PeerReleased(UpperLayerError):
    """The peer released the association (for an acceptor, its normal end)."""


class AssociationRejected(UpperLayerError):
    """The peer answered the association request with A-ASSOCIATE-RJ."""

    def __init__(self, result: int, source: int, diagnostic: int, text: str) -> None:
        super().__init__(text)
        self.result = result
        self.source = source
        self.diagnostic = diagnostic

    @property
    def is_permanent(self) -> bool:
        """Rejected for good: unknown called/calling AE or application context (PS3.8 9.3.4)."""
        return self.result == 0x01 and self.source == 0x01 and self.diagnostic in (2, 3, 7)


class PduTooLarge(UpperLayerError):
    """A peer announced a PDU longer than ADIT accepts for its type (nothing was read of it)."""


class InvalidResponse(UpperLayerError):
    """A DIMSE response that is not the answer asked for (the association was aborted)."""
