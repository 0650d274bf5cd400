"""What a processor reports about its task (a leaf module: models, processors and task runs
all use it without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .statuses import Status


@dataclass
class ProcessingResult:
    """What a processor reports about its task."""

    status: Status  # one of `statuses.RESULT_STATUSES`
    message: str
    log: list[str] = field(default_factory=list)
    # Of a transfer: instances delivered and their bytes as received (stored on the task).
    instances: int | None = None
    bytes: int | None = None

    @classmethod
    def failure(cls, message: str, *log: str) -> ProcessingResult:
        return cls(Status.FAILURE, message, list(log))
