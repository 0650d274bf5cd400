"""Processors do the DICOM work of one task; the worker (`tasks.process_dicom_task`) runs them.

Each app registers a processor for its task model:

    register_processor(SelectiveTransferTask, TransferTaskProcessor)

A processor returns a `ProcessingResult` or raises: `RetriableDicomError` (the task is retried
later with backoff), anything else (the task fails with the message and traceback). A running
processor is stopped by `abort()` from another thread (job canceled, task killed, time limit):
it must stop promptly and leave nothing half-written.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
from collections.abc import Generator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.module_loading import import_string

from .association_limits import association_pool, association_slot, extra_association_slots
from .dicom.read_ahead import ReadAhead
from .processing import ProcessingResult
from .statuses import Status

if TYPE_CHECKING:
    from .dicom.pseudonymizer import PseudonymizedInstance
    from .models import DicomTask

logger = logging.getLogger(__name__)


class ProcessingAborted(Exception):
    """Raised inside a processor once `abort()` was called."""


class Phase(enum.StrEnum):
    """The steps of a task's run, in order; a processor reports its own (SLOT to VERIFYING).

    The worker names the phase when it logs an abort, and test settings may hook each one
    (`DICOM_TASK_PHASE_HOOK`, called as `hook(phase, task_label)` in the thread that enters it).
    """

    LOADING = "loading the task"
    CLAIMING = "claiming the task"
    CLAIMED = "claimed, before processing"
    PROCESSING = "processing"
    SLOT = "waiting for a free association slot"
    CONNECTING = "connecting to the source and the destination"
    FETCHING = "fetching the first instance"
    STORING = "storing"
    VERIFYING = "verifying at the destination"
    RECORDING = "recording the outcome"
    ENDED = "ended"


@cache
def _phase_hook():
    path = getattr(settings, "DICOM_TASK_PHASE_HOOK", None)
    return import_string(path) if path else None


def call_phase_hook(phase: Phase, task_label: str) -> None:
    hook = _phase_hook()
    if hook is not None:
        hook(phase, task_label)


class DicomTaskProcessor:
    """Base of all processors: holds the task, an abort flag and the phase it is in."""

    def __init__(self, task: DicomTask) -> None:
        self.task = task
        self.aborted = threading.Event()
        self._abort_callbacks: list = []
        self.phase = Phase.PROCESSING

    def enter_phase(self, phase: Phase) -> None:
        """Notes the step the processor starts (for the abort log and the tests' hooks)."""
        self.phase = phase
        call_phase_hook(phase, str(self.task))

    def process(self) -> ProcessingResult:
        raise NotImplementedError

    def abort(self) -> None:
        """Ask the processor to stop (called from another thread)."""
        self.aborted.set()
        for callback in list(self._abort_callbacks):
            callback()

    def on_abort(self, callback) -> None:
        """Call `callback` (e.g. an operator's abort) when the processor is aborted."""
        self._abort_callbacks.append(callback)
        if self.aborted.is_set():
            callback()

    def check_aborted(self) -> None:
        if self.aborted.is_set():
            raise ProcessingAborted()


_processors: dict[str, type[DicomTaskProcessor]] = {}


def register_processor(task_model: type[DicomTask], processor: type[DicomTaskProcessor]) -> None:
    _processors[task_model._meta.label_lower] = processor


def registered_task_models() -> list:
    from django.apps import apps

    return [apps.get_model(label) for label in _processors]


# Attribute of an error from a DICOM operation: "source" or "destination", the server it came
# from (an error of the source reaches the destination's side too, through the read-ahead).
ERROR_ROLE = "_adit_error_role"


@contextlib.contextmanager
def _errors_of(role: str) -> Generator[None]:
    """Marks errors raised inside as coming from the task's `role` server (first mark wins)."""
    try:
        yield
    except Exception as error:
        if not hasattr(error, ERROR_ROLE):
            setattr(error, ERROR_ROLE, role)
        raise


def get_processor(model_label: str) -> type[DicomTaskProcessor]:
    try:
        return _processors[model_label]
    except KeyError:
        raise LookupError(f"No processor is registered for {model_label}.") from None


class TransferTaskProcessor(DicomTaskProcessor):
    """Fetch a study (or some of its series), transform each instance, hand it on as it arrives.

    Destinations: a server (C-STORE on one association, else STOW-RS), a folder (the job's
    folder layout, each file written atomically) or, with an archive password, an encrypted
    7-Zip archive in the folder. After storing to a server, the destination is asked which
    instances it holds; any missing one makes the task fail with a retriable error.
    """

    def process(self) -> ProcessingResult:
        # The audit trail gets every run's end and the pseudonym mapping of what was sent
        # (adit.audit.services), whatever the outcome.
        # /metrics counts what reached the destination and which server an error came from
        # (adit.observability.recording).
        from adit.audit.services import MappingCollector, record_transfer
        from adit.observability.recording import count_pacs_error, count_transfer

        self.mapping = MappingCollector()
        self.transferred_count = self.transferred_bytes = 0
        source, destination = self.task.source, self.task.destination
        try:
            result = self._process()
        except BaseException as error:
            role = getattr(error, ERROR_ROLE, None)
            if role is not None:
                count_pacs_error((source if role == "source" else destination).name, role, error)
            try:
                record_transfer(self.task, self.mapping, error=error)
            except Exception:  # the processor's own error is the one to report
                logger.exception("%s: the end of the transfer could not be audited", self.task)
            raise
        result.instances, result.bytes = self.transferred_count, self.transferred_bytes
        record_transfer(self.task, self.mapping, result=result)
        if result.status != Status.FAILURE:
            count_transfer(
                self.task._meta.app_label,
                source.name,
                destination.name,
                self.transferred_count,
                self.transferred_bytes,
            )
        return result

    def _process(self) -> ProcessingResult:
        task = self.task
        source = task.source.concrete
        destination = task.destination.concrete
        self.log_lines: list[str] = []
        transformer = self.transformer = self.make_transformer()
        with contextlib.ExitStack() as stack:
            self.enter_phase(Phase.SLOT)
            stack.enter_context(
                association_slot(source.pk, source.max_associations, aborted=self.aborted)
            )
            if hasattr(destination, "ae_title"):
                stack.enter_context(
                    association_slot(
                        destination.pk, destination.max_associations, aborted=self.aborted
                    )
                )
            self.enter_phase(Phase.CONNECTING)
            source_operator = self._operator(source)
            instances = self._fetch(source_operator)
            # Fetching and transforming run ahead in a thread while the destination stores.
            transformed = stack.enter_context(
                ReadAhead(self._transformed(instances, transformer), name=f"fetch-task-{task.pk}")
            )
            if hasattr(destination, "ae_title"):
                count = self._store_to_server(destination, transformed)
            else:
                count = self._write_to_folder(destination, transformed)
            self.log_lines.extend(source_operator.warnings)
        self.check_aborted()
        self.transferred_count = count
        return self._result(count, transformer)

    def make_transformer(self):
        """The task's `InstanceTransformer`: its pseudonym with the installation-wide seed (the
        same patient and pseudonym get the same UIDs and date shift in every job) and the job's
        de-identification options; what it replaces goes to ``on_pseudonymized``."""
        from .deidentification import pseudonymization_seed
        from .dicom.pseudonymizer import InstanceTransformer

        task, job = self.task, self.task.job
        return InstanceTransformer(
            pseudonym=task.pseudonym or None,
            trial_protocol_id=job.trial_protocol_id or None,
            trial_protocol_name=job.trial_protocol_name or None,
            seed=pseudonymization_seed(task.pseudonym) if task.pseudonym else None,
            exclude_modalities=settings.EXCLUDE_MODALITIES,
            deid_options=job.deid_options,
            on_pseudonymized=self.on_pseudonymized,
        )

    def on_pseudonymized(self, replaced: PseudonymizedInstance) -> None:
        """Called with what was replaced in each pseudonymized instance, in the thread that
        fetches and transforms (quick, never raises): collected for the pseudonym mapping the
        audit app stores when the task ends (`adit.audit.services.record_transfer`)."""
        self.mapping.add(replaced)

    # --- steps ----------------------------------------------------------------------------------

    def _operator(self, server):
        from .dicom.operator import DicomOperator
        from .dicom_settings import local_config

        operator = DicomOperator(server.to_config(), local_config())
        operator.side_association = lambda: _one_more_association_slot(server)
        pool = association_pool()
        if pool is not None and operator.dimse is not None:
            # Associations that end cleanly wait there for this worker's next task, counted
            # against the slots of the server this worker holds (`association_limits`).
            operator.dimse.pool = pool
            operator.dimse.pool_group = server.pk
        self.on_abort(operator.abort)
        return operator

    def _fetch(self, operator) -> Generator:
        task = self.task
        with _errors_of("source"):
            if task.series_uids:
                for series_uid in task.series_uids:
                    yield from operator.fetch_series(task.patient_id, task.study_uid, series_uid)
            else:
                yield from operator.fetch_study(task.patient_id, task.study_uid)

    def _transformed(self, instances, transformer) -> Generator:
        from adit.observability.recording import instance_size

        # Closing the fetch when the consumer stops early (a failed store) ends its association
        # at once instead of whenever the garbage collector gets to it.
        with contextlib.closing(instances):
            self.enter_phase(Phase.FETCHING)
            for ds in instances:
                self.check_aborted()
                size = instance_size(ds)  # before the transform drops the received bytes
                result = transformer.transform(ds)
                if result is not None:
                    self.transferred_bytes += size
                    yield result

    def _store_to_server(self, destination, instances) -> int:
        from .dicom.dimse import (
            SERIES_INSTANCE_UID,
            SOP_INSTANCE_UID,
            STUDY_INSTANCE_UID,
            uid_of,
        )
        from .dicom.errors import RetriableDicomError

        operator = self._operator(destination)
        sent: dict[tuple[str, str], set[str]] = {}

        def remember(stream):
            for index, ds in enumerate(stream):
                if index == 0:
                    self.enter_phase(Phase.STORING)
                key = (uid_of(ds, STUDY_INSTANCE_UID), uid_of(ds, SERIES_INSTANCE_UID))
                sent.setdefault(key, set()).add(uid_of(ds, SOP_INSTANCE_UID))
                yield ds

        # Raises when the destination rejected any instance (after trying all others).
        with (
            _errors_of("destination"),
            extra_association_slots(
                destination.pk, destination.max_associations, settings.DICOM_STORE_ASSOCIATIONS - 1
            ) as extra,
        ):
            # Instances carry the bytes they arrived as only while those are still theirs (see
            # `_transformed`), so they may be sent as those bytes.
            operator.upload(remember(instances), unchanged=True, associations=1 + extra)
        self.check_aborted()
        self.enter_phase(Phase.VERIFYING)
        total = sum(map(len, sent.values()))
        missing = 0
        with _errors_of("destination"):
            for (study_uid, series_uid), sop_uids in sent.items():
                held = operator.instances_held(study_uid, series_uid, expected=sop_uids)
                missing += len(sop_uids - held)
            if missing:
                raise RetriableDicomError(
                    f"{missing} of {total} transferred instance(s) are missing at "
                    f"{destination.name} after the transfer."
                )
        return total

    def _write_to_folder(self, folder, instances) -> int:
        from .dicom.writer import ArchiveWriter, FolderWriter, job_folder_name

        task, job = self.task, self.task.job
        job_folder = job_folder_name(
            job._meta.app_label, job.pk, job.created.date(), job.owner.username
        )
        quota = int(folder.quota * 1024**3) if folder.quota else None
        patient_folder = task.pseudonym or None
        self.enter_phase(Phase.STORING)
        if job.archive_password:
            archive_path = Path(folder.path) / f"{job_folder}_task{task.pk}.7z"
            with ArchiveWriter(archive_path, job.archive_password, quota_bytes=quota) as archive:
                for ds in instances:
                    archive.write(ds, patient_folder=patient_folder)
                    self.check_aborted()
                return archive.written_count
        writer = FolderWriter(folder.path, job_folder, quota_bytes=quota)
        for ds in instances:
            self.check_aborted()
            writer.write(ds, patient_folder=patient_folder)
        return writer.written_count

    def _result(self, count: int, transformer) -> ProcessingResult:
        status, message = Status.SUCCESS, f"{count} instance(s) transferred."
        # Instances left out on purpose (modality, possible burned-in text) never reach the
        # destination, so its check after the transfer does not miss them.
        self.log_lines[:0] = transformer.exclusion_log()
        if self.log_lines:
            status = Status.WARNING
            message += " " + self.log_lines[0]
        if count == 0 and not transformer.excluded_count:
            status, message = Status.FAILURE, "The source returned no instances for this study."
        return ProcessingResult(status, message, self.log_lines)


@contextlib.contextmanager
def _one_more_association_slot(server):
    """A further slot of the server's association limit if one is free now (True), else False."""
    from .association_limits import extra_association_slots

    with extra_association_slots(server.pk, server.max_associations, 1) as extra:
        yield extra > 0
