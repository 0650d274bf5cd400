"""What a job did, in a few facts, and finding jobs across apps.

The job pages answer "what, from where, to where, as whom" (`JobSummary`); the job lists and
the global Jobs page (`/jobs/`) share one filter (`JobFilterForm`): app, status, owner (staff:
mine or everyone's, or one user), created date range and a search that finds a job by a task's
PatientID, pseudonym, AccessionNumber or StudyInstanceUID (or by job number, message, project).

Non-staff users only ever find their own jobs (`visible_jobs`); staff choose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django import forms
from django.apps import apps
from django.db.models import Exists, OuterRef, Q, QuerySet, Value
from django.urls import NoReverseMatch, reverse

from .models import DicomJob, DicomNode, DicomTask, TransferJob

SEARCH_MAX_LENGTH = 100
# How many distinct pseudonyms a job page lists before it says "and N more".
PSEUDONYMS_SHOWN = 5


def job_models() -> list[type[DicomJob]]:
    """The concrete job models whose apps mount the job pages (in app order)."""
    found = []
    for model in apps.get_models():
        if issubclass(model, DicomJob) and not model._meta.abstract:
            try:
                reverse(f"{model._meta.app_label}:job_list")
            except NoReverseMatch:
                continue
            found.append(model)
    return found


def visible_jobs(job_model: type[DicomJob], user) -> QuerySet:
    jobs = job_model.objects.select_related("owner")
    return jobs if user.is_staff else jobs.filter(owner=user)


def format_duration(duration: timedelta | None) -> str:
    """ "2 h 5 min", "3 min 12 s", "4 s" ("" for None)."""
    if duration is None:
        return ""
    seconds = max(0, round(duration.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


# --- one job's facts --------------------------------------------------------------------------


@dataclass
class JobSummary:
    """The facts a job page and a job list row show."""

    sources: list[DicomNode]
    task_count: int = 0
    destinations: list[DicomNode] = field(default_factory=list)
    pseudonyms: list[str] = field(default_factory=list)
    pseudonym_count: int = 0
    unpseudonymized_count: int = 0
    outputs: list[str] = field(default_factory=list)  # folder paths or archive names
    studies: int | None = None
    instances: int | None = None
    bytes: int | None = None
    duration: str = ""
    is_transfer: bool = False
    # Said instead of the sources when the tasks name none (an upload's files come from the
    # user's browser, not from a server).
    source_fallback: str = "—"

    @property
    def more_pseudonyms(self) -> int:
        return self.pseudonym_count - len(self.pseudonyms)


def summarize(job: DicomJob) -> JobSummary:
    tasks = job.tasks.all()
    source_ids = tasks.values_list("source_id", flat=True).distinct()
    summary = JobSummary(
        sources=list(DicomNode.objects.filter(pk__in=source_ids).order_by("name")),
        task_count=tasks.count(),
        duration=format_duration(job.duration),
        source_fallback=getattr(job, "source_description", "—"),
    )
    if hasattr(job.tasks.model, "pseudonym"):
        pseudonyms = (
            tasks.exclude(pseudonym="").order_by("pseudonym").values_list("pseudonym", flat=True)
        )
        distinct = pseudonyms.distinct()
        summary.pseudonym_count = distinct.count()
        summary.pseudonyms = list(distinct[:PSEUDONYMS_SHOWN])
        summary.unpseudonymized_count = tasks.filter(pseudonym="").count()
    if isinstance(job, TransferJob):
        summary.is_transfer = True
        summary.task_count = job.study_count()
        summary.destinations = job.destinations()
        totals = job.transfer_totals()
        summary.studies, summary.instances = totals["studies"], totals["instances"]
        summary.bytes = totals["bytes"]
        summary.outputs = _outputs(job, summary.destinations)
    return summary


def _outputs(job: TransferJob, destinations: list[DicomNode]) -> list[str]:
    """Where a transfer to a folder puts its files (the processor's naming, see
    `TransferTaskProcessor._write_to_folder`)."""
    from .dicom.writer import job_folder_name

    outputs = []
    name = job_folder_name(job._meta.app_label, job.pk, job.created.date(), job.owner.username)
    for node in destinations:
        if node.node_type != DicomNode.NodeType.FOLDER:
            continue
        path = node.concrete.path.rstrip("/")  # type: ignore[attr-defined]
        if job.archive_password:
            outputs.append(f"{path}/{name}_task<N>.7z (an encrypted 7-Zip archive per task)")
        else:
            outputs.append(f"{path}/{name}/")
    return outputs


# --- finding jobs -------------------------------------------------------------------------------


class JobFilterForm(forms.Form):
    """The filters of the job lists; invalid values are named and ignored, never a 500."""

    app = forms.ChoiceField(required=False, label="App")
    status = forms.ChoiceField(
        required=False, label="Status", choices=[("", "All statuses"), *DicomJob.Status.choices]
    )
    scope = forms.ChoiceField(
        required=False,
        label="Whose jobs",
        choices=[("mine", "My jobs"), ("all", "Everyone's jobs")],
    )
    owner = forms.CharField(required=False, max_length=150, label="Owner (username)")
    created_from = forms.DateField(
        required=False, label="Created from", widget=forms.DateInput(attrs={"type": "date"})
    )
    created_to = forms.DateField(
        required=False, label="Created until", widget=forms.DateInput(attrs={"type": "date"})
    )
    q = forms.CharField(
        required=False,
        max_length=SEARCH_MAX_LENGTH,
        label="Search",
        help_text="PatientID, pseudonym, AccessionNumber, StudyInstanceUID, job number or message",
    )

    def __init__(self, data, *, user, models: list[type[DicomJob]]) -> None:
        super().__init__(data)
        self.user = user
        app_field = self.fields["app"]
        assert isinstance(app_field, forms.ChoiceField)
        app_field.choices = [("", "All apps")] + [
            (model._meta.app_label, str(model._meta.verbose_name).capitalize()) for model in models
        ]
        if not user.is_staff:
            del self.fields["scope"]
            del self.fields["owner"]
        for name, form_field in self.fields.items():
            css = "form-select" if isinstance(form_field, forms.ChoiceField) else "form-control"
            form_field.widget.attrs.setdefault("class", css)
            form_field.widget.attrs.setdefault("id", f"filter-{name}")

    def clean(self):
        cleaned = super().clean() or {}
        start, end = cleaned.get("created_from"), cleaned.get("created_to")
        if start and end and start > end:
            self.add_error("created_to", "The end date lies before the start date.")
        return cleaned

    def value(self, name: str):
        """A filter's valid value ("" or None when it is missing or invalid)."""
        if not self.is_valid() and name in self.errors:
            return None
        return self.cleaned_data.get(name) if hasattr(self, "cleaned_data") else None

    @property
    def everyone(self) -> bool:
        """Staff asked for everyone's jobs (the default of non-staff is their own only)."""
        return bool(self.user.is_staff and self.value("scope") == "all")

    def filter(self, jobs: QuerySet) -> QuerySet:
        """Apply the valid filters to one app's jobs (already limited to visible ones)."""
        user = self.user
        if not self.everyone:
            jobs = jobs.filter(owner=user)
        elif owner := (self.value("owner") or "").strip():
            jobs = jobs.filter(owner__username__iexact=owner)
        if status := self.value("status"):
            jobs = jobs.filter(status=status)
        if start := self.value("created_from"):
            jobs = jobs.filter(created__date__gte=start)
        if end := self.value("created_to"):
            jobs = jobs.filter(created__date__lte=end)
        if search := (self.value("q") or "").strip():
            jobs = jobs.filter(search_condition(jobs.model, search))
        return jobs


def search_condition(job_model: type[DicomJob], search: str) -> Q:
    """Jobs with a task (or, for batch query, a result) whose PatientID, pseudonym,
    AccessionNumber or StudyInstanceUID is `search` (case-insensitive, whole value), or whose
    number, message or project name contains it."""
    condition = Q(message__icontains=search)
    if search.isdigit():
        condition |= Q(pk=int(search))
    if any(f.name == "project_name" for f in job_model._meta.get_fields()):
        condition |= Q(project_name__icontains=search)
    task_model: type[DicomTask] = job_model.tasks.field.model  # type: ignore[attr-defined]
    task_fields = {f.name for f in task_model._meta.get_fields()}
    task_match = Q()
    for name in ("patient_id", "pseudonym", "accession_number", "study_uid"):
        if name in task_fields:
            task_match |= Q(**{f"{name}__iexact": search})
    if task_match:
        condition |= Exists(task_model.objects.filter(task_match, job=OuterRef("pk")))
    results = getattr(job_model, "results", None)
    if results is not None:  # batch query: what the queries found
        result_model = results.field.model
        condition |= Exists(
            result_model.objects.filter(
                Q(patient_id__iexact=search)
                | Q(pseudonym__iexact=search)
                | Q(accession_number__iexact=search)
                | Q(study_uid=search),
                job=OuterRef("pk"),
            )
        )
    return condition


@dataclass
class JobRow:
    """A row of the global Jobs page."""

    job: DicomJob
    app_name: str
    url: str
    summary: JobSummary


def all_jobs_page(form: JobFilterForm, models: list[type[DicomJob]]):
    """Filtered jobs of all apps, newest first, as one union query that a Paginator pages.

    Returns the union of (app label, pk, created) rows; `rows_of` turns a page into JobRows.
    """
    wanted_app = form.value("app")
    parts = []
    for model in models:
        label = model._meta.app_label
        if wanted_app and wanted_app != label:
            continue
        jobs = form.filter(visible_jobs(model, form.user))
        parts.append(jobs.order_by().annotate(app=Value(label)).values_list("app", "pk", "created"))
    if not parts:
        return DicomJobRowsNone()
    union = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
    return union.order_by("-created", "-pk")


class DicomJobRowsNone(list):
    """No app left after the filter: an empty page source."""


def rows_of(page_rows, models: list[type[DicomJob]]) -> list[JobRow]:
    by_label = {model._meta.app_label: model for model in models}
    wanted: dict[str, list[int]] = {}
    for label, pk, _created in page_rows:
        wanted.setdefault(label, []).append(pk)
    loaded = {}
    for label, pks in wanted.items():
        model = by_label[label]
        for job in model.objects.select_related("owner").filter(pk__in=pks):
            loaded[(label, job.pk)] = job
    rows = []
    for label, pk, _created in page_rows:
        job = loaded.get((label, pk))
        if job is None:  # deleted meanwhile
            continue
        name = str(by_label[label]._meta.verbose_name).capitalize()
        url = reverse(f"{label}:job_detail", args=[pk])
        rows.append(JobRow(job, name, url, summarize(job)))
    return rows
