"""Writing the audit trail and the pseudonym mapping: the one home of this side effect.

Every place that queries, retrieves, transfers or exports calls a function of this module;
nothing else writes `AuditEntry` or `PseudonymMapping` rows. What is recorded:

- a query: its matching keys (PatientID, StudyDate, ...), never the results;
- a retrieve (WADO-RS, ZIP download): the study (and series/instance) asked for, the pseudonym;
- a transfer, when its task ends (success, warning or failure): job, task, source, destination,
  the original StudyInstanceUID and the pseudonymized one, the pseudonym, the outcome;
- a mapping or audit log export, allowed or denied, with what was asked for;
- API token use (each authenticated request, and each rejected token), logins, failed logins.

Writing fails closed: if the entry cannot be written, the caller's action fails with it (an
action that cannot be audited must not happen unaudited). Identifying values go to the audit
table only; the normal log gets at most DEBUG lines without them.

When ``AUDIT_SYSLOG_ADDRESS`` is set, each entry is also sent as an RFC 5424 syslog message
over UDP whose structured data follows the fields of RFC 3881 / DICOM PS3.15 A.5 (event,
active participant, participant object); see `syslog_message`.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from adit.core.statuses import Status

from .models import AuditEntry, PseudonymMapping

if TYPE_CHECKING:
    from pydicom import Dataset

    from adit.core.dicom.pseudonymizer import PseudonymizedInstance
    from adit.core.dicom.query import QueryDataset
    from adit.core.models import DicomTask
    from adit.core.processing import ProcessingResult

logger = logging.getLogger(__name__)

Action = AuditEntry.Action
Outcome = AuditEntry.Outcome

# `record(user=FROM_REQUEST)`: the user is the request's; `user=None` says "nobody" explicitly.
FROM_REQUEST: Any = object()


def client_address(request) -> str | None:
    """The peer address of an HTTP request or a Channels scope (no proxy header is trusted:
    a client could set it to anything)."""
    if request is None:
        return None
    if isinstance(request, dict):  # a Channels scope
        client = request.get("client")
        return client[0] if client else None
    meta = getattr(request, "META", None)
    return (meta or {}).get("REMOTE_ADDR") or None


def _node_name(node) -> str:
    if node is None:
        return ""
    return str(getattr(node, "name", node))[:128]


def record(
    action: str,
    *,
    user=FROM_REQUEST,
    request=None,
    outcome: str = Outcome.SUCCESS,
    username: str = "",
    patient_id: str = "",
    pseudonym: str = "",
    study_uid: str = "",
    series_uids: Iterable[str] = (),
    source=None,
    destination=None,
    job=None,
    task=None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Appends one entry to the audit trail.

    Args:
        action: one of `AuditEntry.Action`.
        user: who acted; by default the user of `request`; None for the system or nobody.
        request: an HTTP request or a Channels scope: the user and the client address.
        outcome: one of `AuditEntry.Outcome`.
        username: the name to record when there is no user (e.g. a failed login's).
        patient_id, pseudonym, study_uid, series_uids: the subject of the action.
        source, destination: nodes (or their names).
        job, task: the job and task acted on (their app label and ids are recorded).
        details: what was asked (a query's keys, options), JSON-serializable; no results.
    """
    if user is FROM_REQUEST:
        user = None
        if request is not None:
            user = (
                request.get("user") if isinstance(request, dict) else getattr(request, "user", None)
            )
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    if job is None and task is not None:
        job = task.job
    entry = AuditEntry(
        user=user,
        username=(user.get_username() if user is not None else username)[:150],
        action=action,
        outcome=outcome,
        patient_id=(patient_id or "")[:64],
        pseudonym=(pseudonym or "")[:64],
        study_uid=(study_uid or "")[:64],
        series_uids=[str(uid) for uid in series_uids],
        source=_node_name(source),
        destination=_node_name(destination),
        job_type=job._meta.app_label if job is not None else "",
        job_id=job.pk if job is not None else None,
        task_id=task.pk if task is not None else None,
        details=details or {},
        client_address=client_address(request),
    )
    entry.save()
    logger.debug("Audit entry %s (%s) recorded", entry.pk, action)
    if settings.AUDIT_SYSLOG_ADDRESS:
        send_to_syslog(entry)
    return entry


def query_details(query: QueryDataset, level: str = "") -> dict[str, Any]:
    """The matching keys of a query (the keys with a value; return keys say nothing)."""
    keys: dict[str, Any] = {}
    for element in query.dataset:
        value = element.value
        if value in (None, "", b""):
            continue
        keys[element.keyword or str(element.tag)] = (
            [str(v) for v in value] if isinstance(value, list | tuple) else str(value)
        )
    details: dict[str, Any] = {"query": keys}
    if level:
        details["level"] = level
    return details


def record_query(query: QueryDataset, *, level: str = "STUDY", **kwargs) -> AuditEntry:
    """An entry for a C-FIND / QIDO-RS query; patient and study come from its matching keys."""
    return record(
        Action.QUERY,
        patient_id=query.get_str("PatientID") if query.has("PatientID") else "",
        study_uid=query.get_str("StudyInstanceUID") if query.has("StudyInstanceUID") else "",
        details=query_details(query, level),
        **kwargs,
    )


# --- transfers and the pseudonym mapping ------------------------------------------------------


def _uid(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value) if value is not None else ""


@dataclass
class MappingCollector:
    """Collects original → pseudonymized identifiers as a transfer pseudonymizes its instances.

    The processor hands it what the pseudonymizer replaced in each instance
    (`PseudonymizedInstance`, through `TransferTaskProcessor.on_pseudonymized`). Pure
    bookkeeping, no database: the processor's fetch thread fills it, `record_transfer` stores it
    once the task ends.
    """

    # (original study, original series) → (pseudonymized study, pseudonymized series)
    series: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    patient_ids: set[str] = field(default_factory=set)
    pseudonymized_patient_ids: set[str] = field(default_factory=set)

    def add(self, replaced: PseudonymizedInstance) -> None:
        self.patient_ids.add(replaced.original_patient_id)
        self.pseudonymized_patient_ids.add(replaced.pseudonym)
        key = (replaced.original_study_uid, replaced.original_series_uid)
        self.series.setdefault(key, (replaced.study_uid, replaced.series_uid))

    @property
    def pseudonymized_study_uids(self) -> list[str]:
        return sorted({study for study, _ in self.series.values()})


def record_transfer(
    task: DicomTask,
    collector: MappingCollector,
    result: ProcessingResult | None = None,
    error: BaseException | None = None,
) -> AuditEntry:
    """Audits the end of a transfer task's run and stores its pseudonym mapping.

    The mapping is stored whatever the outcome: instances that reached the destination before
    a failure are pseudonymized data in the world, and the trusted party must be able to map
    them back.
    """
    pseudonym = getattr(task, "pseudonym", "") or ""
    with transaction.atomic():
        if pseudonym and collector.series:
            job = task.job
            PseudonymMapping.objects.bulk_create(
                [
                    PseudonymMapping(
                        job_type=job._meta.app_label,
                        job_id=job.pk,
                        task_id=task.pk,
                        patient_id=getattr(task, "patient_id", "") or "",
                        pseudonym=pseudonym,
                        study_uid=study_uid,
                        pseudonymized_study_uid=new_study,
                        series_uid=series_uid,
                        pseudonymized_series_uid=new_series,
                    )
                    for (study_uid, series_uid), (new_study, new_series) in sorted(
                        collector.series.items()
                    )
                ],
                ignore_conflicts=True,  # a task that runs again maps the same series again
            )
        details: dict[str, Any] = {
            "pseudonymized_study_uids": collector.pseudonymized_study_uids if pseudonym else [],
            "series_count": len(collector.series),
        }
        if result is not None:
            details.update(status=result.status, message=result.message)
            outcome = Outcome.FAILURE if result.status == Status.FAILURE else Outcome.SUCCESS
        else:
            details.update(error=str(error) or type(error).__name__)
            outcome = Outcome.FAILURE
        return record(
            Action.TRANSFER,
            user=task.job.owner,
            outcome=outcome,
            patient_id=getattr(task, "patient_id", ""),
            pseudonym=pseudonym,
            study_uid=getattr(task, "study_uid", ""),
            series_uids=getattr(task, "series_uids", None) or [],
            source=task.source,
            destination=getattr(task, "destination", None),
            task=task,
            details=details,
        )


# --- syslog -------------------------------------------------------------------------------------

# RFC 3881 EventOutcomeIndicator: 0 success, 4 minor failure, 8 serious failure.
_OUTCOME_CODES = {Outcome.SUCCESS: "0", Outcome.FAILURE: "8", Outcome.DENIED: "4"}
# RFC 3881 EventActionCode: C create, R read, U update, D delete, E execute.
_ACTION_CODES = {
    Action.QUERY: "E",
    Action.RETRIEVE: "R",
    Action.TRANSFER: "R",
    Action.MAPPING_EXPORT: "R",
    Action.AUDIT_EXPORT: "R",
    Action.PURGE: "D",
}


def _sd_value(value: Any) -> str:
    # RFC 5424 §6.3.3: '"', '\' and ']' are escaped inside PARAM-VALUE.
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(entry: AuditEntry, hostname: str = "") -> bytes:
    """The entry as an RFC 5424 message (facility auth = 4, severity notice = 5 → PRI 37).

    The structured data element ``adit-audit`` carries RFC 3881's parts: EventID (the
    action), EventActionCode, EventDateTime, EventOutcomeIndicator, the active participant
    (UserID, NetworkAccessPointID) and the participant objects (patient, study, job).
    """
    params = {
        "EventID": entry.action,
        "EventActionCode": _ACTION_CODES.get(entry.action, "E"),  # type: ignore[arg-type]
        "EventDateTime": entry.time.isoformat(),
        "EventOutcomeIndicator": _OUTCOME_CODES.get(entry.outcome, "8"),  # type: ignore[arg-type]
        "UserID": entry.username,
        "NetworkAccessPointID": entry.client_address or "",
        "PatientID": entry.patient_id,
        "Pseudonym": entry.pseudonym,
        "StudyInstanceUID": entry.study_uid,
        "Source": entry.source,
        "Destination": entry.destination,
        "Job": f"{entry.job_type}:{entry.job_id}" if entry.job_id else "",
        "Task": entry.task_id or "",
    }
    data = " ".join(f'{key}="{_sd_value(value)}"' for key, value in params.items() if value)
    host = (hostname or socket.gethostname() or "-")[:255]
    header = f"<37>1 {entry.time.isoformat()} {host} adit - AUDIT [adit-audit {data}]"
    return header.encode("utf-8") + b" " + entry.get_action_display().encode("utf-8")


def send_to_syslog(entry: AuditEntry) -> None:
    """Sends the entry over UDP to ``AUDIT_SYSLOG_ADDRESS``; a failure is logged (the entry is
    in the database already, which is the record that counts)."""
    address = settings.AUDIT_SYSLOG_ADDRESS
    host, _, port = address.rpartition(":")
    try:
        family, kind, proto, _, target = socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_DGRAM
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.sendto(syslog_message(entry), target)
    except (OSError, ValueError) as error:
        logger.warning(
            "Audit entry %s could not be sent to syslog %s: %s", entry.pk, address, error
        )


# --- retention ----------------------------------------------------------------------------------


def purge_expired(retention_days: int | None = None, now: dt.datetime | None = None) -> int:
    """Deletes the entries older than the retention period; returns how many.

    The only DELETE the table's trigger lets through: the cut-off travels to it in the
    transaction-local setting ``adit.audit_purge_before``, so even this statement cannot remove
    a younger entry. The purge itself is recorded as an entry (by the system, no user).

    Raises:
        ValueError: the retention period is not a positive number of days.
    """
    days = settings.AUDIT_RETENTION_DAYS if retention_days is None else retention_days
    if days < 1:
        raise ValueError(f"The audit retention must be at least 1 day, got {days}.")
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('adit.audit_purge_before', %s, true)", [cutoff.isoformat()]
        )
        cursor.execute(f"DELETE FROM {AuditEntry._meta.db_table} WHERE time < %s", [cutoff])
        deleted = cursor.rowcount
        cursor.execute("SELECT set_config('adit.audit_purge_before', '', true)")
        record(
            Action.PURGE,
            details={"deleted": deleted, "before": cutoff.isoformat(), "retention_days": days},
        )
    return deleted
