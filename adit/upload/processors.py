"""Stores the staged instances of one upload task on the job's destination.

The files were de-identified in the browser and checked on arrival; the worker sends them as
they are (C-STORE, else STOW-RS, then asks the server which it holds), or writes them to the
folder, with the same steps as every transfer (`TransferTaskProcessor`). Staged files are
deleted once the destination holds them; a task that runs again sends them again (storing is
idempotent by SOP Instance UID at the destination).
"""

from __future__ import annotations

import contextlib
import io
import logging
import struct
from collections.abc import Generator
from pathlib import Path

from pydicom import Dataset, dcmread

from adit.core.association_limits import association_slot
from adit.core.dicom.dimse import remember_received_encoding
from adit.core.processing import ProcessingResult
from adit.core.processors import ERROR_ROLE, Phase, TransferTaskProcessor
from adit.core.statuses import Status

from .models import UploadTask

logger = logging.getLogger(__name__)


class UploadTaskProcessor(TransferTaskProcessor):
    task: UploadTask

    def process(self) -> ProcessingResult:
        from adit.audit.services import MappingCollector, record_transfer
        from adit.observability.recording import count_pacs_error, count_transfer

        # No mapping: the server never sees the original identifiers (the browser keeps them).
        self.mapping = MappingCollector()
        self.transferred_count = self.transferred_bytes = 0
        destination = self.task.destination
        try:
            result = self._process()
        except BaseException as error:
            if getattr(error, ERROR_ROLE, None) == "destination":
                count_pacs_error(destination.name, "destination", error)
            try:
                record_transfer(self.task, self.mapping, error=error)
            except Exception:
                logger.exception("%s: the end of the upload could not be audited", self.task)
            raise
        if result.status != Status.FAILURE:
            # Shown on the task and summed on the job page ("Transferred").
            result.instances, result.bytes = self.transferred_count, self.transferred_bytes
        record_transfer(self.task, self.mapping, result=result)
        if result.status != Status.FAILURE:
            count_transfer(
                "upload",
                "browser",
                destination.name,
                self.transferred_count,
                self.transferred_bytes,
            )
        return result

    def _process(self) -> ProcessingResult:
        task = self.task
        destination = task.destination.concrete
        self.log_lines: list[str] = []
        instances = list(task.instances.order_by("id"))  # type: ignore[attr-defined]
        missing = [i for i in instances if not i.staged_path.exists()]
        if missing:
            return ProcessingResult(
                Status.FAILURE,
                f"{len(missing)} of {len(instances)} received file(s) are no longer staged; "
                "upload them again.",
                [f"missing: {i.sop_instance_uid}" for i in missing[:20]],
            )
        with contextlib.ExitStack() as stack:
            if destination.is_server:
                self.enter_phase(Phase.SLOT)
                stack.enter_context(
                    association_slot(
                        destination.pk,
                        destination.max_associations,  # type: ignore[union-attr]
                        aborted=self.aborted,
                    )
                )
                count = self._store_to_server(destination, self._staged(instances))
            else:
                count = self._write_to_folder(destination, self._staged(instances))
        self.check_aborted()
        self.transferred_count = count
        for instance in instances:
            instance.staged_path.unlink(missing_ok=True)
        return ProcessingResult(Status.SUCCESS, f"{count} instance(s) stored.", self.log_lines)

    def _staged(self, instances) -> Generator:
        self.enter_phase(Phase.FETCHING)
        for instance in instances:
            self.check_aborted()
            self.transferred_bytes += instance.size
            yield read_staged(instance.staged_path)


def read_staged(path: Path) -> Dataset:
    """A staged file, keeping the bytes of its data set so that C-STORE sends them as they are
    (the file was checked on arrival and is not changed here) instead of encoding it again."""
    raw = path.read_bytes()
    ds = dcmread(io.BytesIO(raw))
    # The data set starts after the file meta group, whose length (0002,0000) says where; the
    # bytes there must be the data set's first tag, else they are not reused.
    if raw[128:132] == b"DICM" and raw[132:136] == b"\x02\x00\x00\x00" and len(ds):
        start = 144 + int.from_bytes(raw[140:144], "little")
        first = next(iter(ds.keys()))
        if raw[start : start + 4] == struct.pack("<HH", first.group, first.element):
            remember_received_encoding(ds, str(ds.file_meta.TransferSyntaxUID), raw[start:])
    return ds
