"""A batch transfer of what a batch query found ("Transfer these studies…").

Before, users downloaded the query's export and uploaded it again as a batch transfer file.
Here the found studies become the transfer's studies directly, with the same rules as a file:
one task per study (a series query's series of one study go together, a study found whole
goes whole), the pseudonym of the query's row, one pseudonym per patient and one patient per
pseudonym, a pseudonym required unless the user may transfer unpseudonymized data, and the
user's row limit.
"""

from __future__ import annotations

from adit.batch_query.models import BatchQueryJob, BatchQueryResult

from .parsers import StudyRequest


class FromQueryError(ValueError):
    """The found studies cannot become a transfer; the message says why and what to do."""


def _lines(numbers: set[int]) -> str:
    ordered = sorted(numbers)
    shown = ", ".join(str(n) for n in ordered[:10])
    return shown + (f" and {len(ordered) - 10} more" if len(ordered) > 10 else "")


def studies_from_query(
    query_job: BatchQueryJob, *, pseudonym_required: bool, max_rows: int
) -> list[StudyRequest]:
    """The studies (with series, pseudonym and the query's lines) the query job found.

    Raises:
        FromQueryError: nothing was found, too many studies, a missing pseudonym, or
            pseudonyms that contradict each other (each names the query's lines).
    """
    results = (
        BatchQueryResult.objects.filter(job=query_job)
        .select_related("task")
        .order_by("task_id", "id")
    )
    studies: dict[str, StudyRequest] = {}
    lines_of: dict[str, set[int]] = {}
    for result in results.iterator():
        lines = set(result.task.lines)
        study = studies.get(result.study_uid)
        if study is None:
            study = studies[result.study_uid] = StudyRequest(
                patient_id=result.patient_id,
                study_uid=result.study_uid,
                pseudonym=result.pseudonym,
                whole_study=not result.series_uid,
            )
            lines_of[result.study_uid] = set()
        elif study.pseudonym != result.pseudonym or study.patient_id != result.patient_id:
            raise FromQueryError(
                f"The study {result.study_uid} was found by lines "
                f"{_lines(lines_of[result.study_uid] | lines)} with different patients or "
                "pseudonyms; correct the query file so that they agree."
            )
        lines_of[result.study_uid] |= lines
        if result.series_uid:
            if result.series_uid not in study.series_uids:
                study.series_uids.append(result.series_uid)
        else:
            study.whole_study = True
    if not studies:
        raise FromQueryError(f"{query_job} found no studies (yet); there is nothing to transfer.")
    if len(studies) > max_rows:
        raise FromQueryError(
            f"{query_job} found {len(studies)} studies; at most {max_rows} may be transferred "
            "in one job. Split the query file."
        )
    for study in studies.values():
        if study.whole_study:
            study.series_uids = []
        study.lines = sorted(lines_of[study.study_uid])
    _check_pseudonyms(list(studies.values()), pseudonym_required)
    return list(studies.values())


def _check_pseudonyms(studies: list[StudyRequest], pseudonym_required: bool) -> None:
    if pseudonym_required:
        missing = {line for s in studies if not s.pseudonym for line in s.lines}
        if missing:
            raise FromQueryError(
                f"Studies found by lines {_lines(missing)} have no pseudonym, and your group "
                "may only transfer pseudonymized data. Add a Pseudonym column to those rows "
                "of the query file and run the query again."
            )
    pseudonyms_of: dict[str, set[str]] = {}
    patients_of: dict[str, set[str]] = {}
    lines_of_patient: dict[str, set[int]] = {}
    lines_of_pseudonym: dict[str, set[int]] = {}
    for study in studies:
        pseudonyms_of.setdefault(study.patient_id, set()).add(study.pseudonym)
        lines_of_patient.setdefault(study.patient_id, set()).update(study.lines)
        if study.pseudonym:
            patients_of.setdefault(study.pseudonym, set()).add(study.patient_id)
            lines_of_pseudonym.setdefault(study.pseudonym, set()).update(study.lines)
    for patient_id, pseudonyms in pseudonyms_of.items():
        if len(pseudonyms) > 1:
            lines = _lines(lines_of_patient[patient_id])
            raise FromQueryError(
                f"One patient has different pseudonyms (lines {lines}); one patient gets one "
                "pseudonym."
            )
    for pseudonym, patients in patients_of.items():
        if len(patients) > 1:
            raise FromQueryError(
                f"The pseudonym {pseudonym} is given to different patients (lines "
                f"{_lines(lines_of_pseudonym[pseudonym])}); a pseudonym stands for one patient."
            )
