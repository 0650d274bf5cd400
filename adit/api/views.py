"""REST API for jobs: selective-style transfer jobs and batch query jobs.

The same rules as the web pages: creating needs the app's "add job" permission (from the
token owner's active group), nodes must be accessible to the active group, urgency and
unpseudonymized transfers need their permissions, users see only their own jobs (staff all;
someone else's job answers 404), and actions follow the job's state machine (409 otherwise).
"""

from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from adit.audit.models import AuditEntry
from adit.audit.services import record
from adit.batch_query.models import BatchQueryJob, BatchQueryResult, create_batch_query_job
from adit.core.dicom.errors import DicomError
from adit.core.job_views import visible_jobs
from adit.core.models import JobActionError
from adit.dicom_web.errors import api_error_for
from adit.dicom_web.usage import ApiUsageMixin
from adit.selective_transfer.models import SelectiveTransferJob, SelectiveTransferTask

from .serializers import (
    BatchQueryJobSerializer,
    BatchQueryResultSerializer,
    BatchQueryTaskSerializer,
    TransferJobSerializer,
    TransferTaskSerializer,
    lookup_patient_id,
)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The action is not possible in the job's current state."
    default_code = "conflict"


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class JobApiMixin(ApiUsageMixin):
    job_model: type = SelectiveTransferJob
    job_serializer: type[serializers.Serializer] = TransferJobSerializer
    task_serializer: type[serializers.Serializer] = TransferTaskSerializer
    add_permission = "selective_transfer.add_selectivetransferjob"

    def handle_exception(self, exc):
        if isinstance(exc, DicomError):
            exc = api_error_for(exc)
        elif isinstance(exc, JobActionError):
            exc = Conflict(str(exc))
        return super().handle_exception(exc)  # type: ignore[misc]

    def jobs(self, request: Request):
        return visible_jobs(self.job_model, request.user).order_by("-created")

    def job(self, request: Request, pk: int):
        return get_object_or_404(self.jobs(request), pk=pk)

    def check_locked(self, request: Request) -> None:
        app_settings = self.job_model.app_settings_model.get()
        if app_settings.locked and not request.user.is_superuser:
            raise PermissionDenied(
                f"{self.job_model._meta.verbose_name.capitalize()}s are locked by the "
                "administrators."
            )


class JobListView(JobApiMixin, APIView):
    def get(self, request: Request) -> Response:
        jobs = self.jobs(request)
        wanted_status = request.query_params.get("status")
        if wanted_status:
            if wanted_status not in self.job_model.Status.values:
                raise serializers.ValidationError(
                    {
                        "status": f"Unknown status {wanted_status!r}; use one of "
                        f"{', '.join(self.job_model.Status.values)}."
                    }
                )
            jobs = jobs.filter(status=wanted_status)
        paginator = Pagination()
        page = paginator.paginate_queryset(jobs, request, view=self)
        data = self.job_serializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    def post(self, request: Request) -> Response:
        if not request.user.has_perm(self.add_permission):
            raise PermissionDenied(
                f"You lack the permission to create {self.job_model._meta.verbose_name}s "
                f"({self.add_permission})."
            )
        self.check_locked(request)
        serializer = self.job_serializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        job = self.create_job(request, dict(serializer.validated_data))  # type: ignore[arg-type]
        output = self.job_serializer(job, context={"request": request}).data
        return Response(output, status=status.HTTP_201_CREATED)

    def create_job(self, request: Request, data: dict):
        raise NotImplementedError


class TransferJobListView(JobListView):
    @extend_schema(
        summary="List your transfer jobs",
        description="Your transfer jobs (staff: everyone's), newest first, 50 per page; "
        "`status` filters by status code (e.g. `FA` for failed).",
        responses=TransferJobSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    @extend_schema(
        summary="Create a transfer job",
        description="Moves studies (or some of their series) from a source server to a "
        "destination server or folder in the background, one task per study, optionally "
        "pseudonymized. Needs the permission to create selective transfer jobs and access of "
        "your active group to both nodes. Jobs of users without the right to skip it must name "
        "a pseudonym.",
        request=TransferJobSerializer,
        responses={201: TransferJobSerializer},
    )
    def post(self, request: Request) -> Response:
        return super().post(request)

    def create_job(self, request: Request, data: dict) -> SelectiveTransferJob:
        source = data["source"]
        studies = data["studies"]
        for study in studies:
            if not study.get("patient_id"):
                record(
                    AuditEntry.Action.QUERY,
                    request=request,
                    study_uid=study["study_uid"],
                    source=source,
                    details={"query": {"StudyInstanceUID": study["study_uid"]}, "level": "STUDY"},
                )
                study["patient_id"] = lookup_patient_id(source, study["study_uid"])
        user = request.user
        with transaction.atomic():
            job = SelectiveTransferJob.objects.create(
                owner=user,
                urgent=data.get("urgent", False),
                send_finished_mail=data.get("send_finished_mail", False),
                trial_protocol_id=data.get("trial_protocol_id", ""),
                trial_protocol_name=data.get("trial_protocol_name", ""),
                archive_password=data.get("archive_password", ""),
                deid_options=data["deid_options"],
            )
            SelectiveTransferTask.objects.bulk_create(
                SelectiveTransferTask(
                    job=job,
                    source=source,
                    destination=data["destination"],
                    patient_id=study["patient_id"],
                    study_uid=study["study_uid"],
                    series_uids=study.get("series_uids") or [],
                    pseudonym=data.get("pseudonym", ""),
                )
                for study in studies
            )
            job.submit(by_staff=user.is_staff)
        job.refresh_from_db()
        return job


class BatchQueryMixin:
    job_model = BatchQueryJob
    job_serializer = BatchQueryJobSerializer
    task_serializer = BatchQueryTaskSerializer
    add_permission = "batch_query.add_batchqueryjob"


class BatchQueryJobListView(BatchQueryMixin, JobListView):
    @extend_schema(
        summary="List your batch query jobs",
        description="Your batch query jobs (staff: everyone's), newest first, 50 per page.",
        responses=BatchQueryJobSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    @extend_schema(
        summary="Create a batch query job",
        description="Queries a source server for each row of `queries` (the column names of "
        "ADIT's batch query file, e.g. PatientID, PatientName, PatientBirthDate, "
        "AccessionNumber, Modality, StudyDate) in the background; the results are at "
        "`/api/batch-query-jobs/{id}/results/`.",
        request=BatchQueryJobSerializer,
        responses={201: BatchQueryJobSerializer},
    )
    def post(self, request: Request) -> Response:
        return super().post(request)

    def create_job(self, request: Request, data: dict) -> BatchQueryJob:
        job = create_batch_query_job(
            request.user,
            data["source"],
            data["queries"],
            project_name=data["project_name"],
            project_description=data["project_description"],
            urgent=data.get("urgent", False),
            send_finished_mail=data.get("send_finished_mail", False),
        )
        job.refresh_from_db()
        return job


class JobDetailView(JobApiMixin, APIView):
    @extend_schema(
        summary="Get a transfer job",
        description="Status, message and task counts of one of your jobs.",
        responses=TransferJobSerializer,
    )
    def get(self, request: Request, pk: int) -> Response:
        job = self.job(request, pk)
        return Response(self.job_serializer(job, context={"request": request}).data)


class BatchQueryJobDetailView(BatchQueryMixin, JobDetailView):
    @extend_schema(
        summary="Get a batch query job",
        description="Status, message and task counts of one of your batch query jobs.",
        responses=BatchQueryJobSerializer,
    )
    def get(self, request: Request, pk: int) -> Response:
        return super().get(request, pk)


class JobTasksView(JobApiMixin, APIView):
    @extend_schema(
        summary="List the tasks of a transfer job",
        description="One task per study, with its status and message, 50 per page.",
        responses=TransferTaskSerializer(many=True),
    )
    def get(self, request: Request, pk: int) -> Response:
        job = self.job(request, pk)
        paginator = Pagination()
        page = paginator.paginate_queryset(
            job.tasks.select_related("source").order_by("id"), request, view=self
        )
        data = self.task_serializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)


class BatchQueryJobTasksView(BatchQueryMixin, JobTasksView):
    @extend_schema(
        summary="List the tasks of a batch query job",
        description="One task per query row, with its status and message, 50 per page.",
        responses=BatchQueryTaskSerializer(many=True),
    )
    def get(self, request: Request, pk: int) -> Response:
        return super().get(request, pk)


class BatchQueryJobResultsView(BatchQueryMixin, JobApiMixin, APIView):
    @extend_schema(
        summary="Get the results of a batch query job",
        description="The studies (or series) found, one row per match and query, in the order "
        "of the queries, 50 per page (`page`, `page_size` up to 500).",
        responses=BatchQueryResultSerializer(many=True),
    )
    def get(self, request: Request, pk: int) -> Response:
        job = self.job(request, pk)
        paginator = Pagination()
        page = paginator.paginate_queryset(
            BatchQueryResult.objects.filter(job=job).order_by("task_id", "id"), request, view=self
        )
        data = BatchQueryResultSerializer(page, many=True).data
        return paginator.get_paginated_response(data)


JOB_ACTIONS = ("cancel", "retry", "resume")


class JobActionView(JobApiMixin, APIView):
    action = ""

    @extend_schema(
        summary="Cancel, retry or resume a transfer job",
        description="`cancel` stops pending tasks; `retry` runs the failed tasks again; "
        "`resume` continues a canceled job. 409 if the job's state does not allow it.",
        request=None,
        responses=TransferJobSerializer,
    )
    def post(self, request: Request, pk: int) -> Response:
        job = self.job(request, pk)
        getattr(job, self.action)()
        job.refresh_from_db()
        return Response(self.job_serializer(job, context={"request": request}).data)


class BatchQueryJobActionView(BatchQueryMixin, JobActionView):
    @extend_schema(
        summary="Cancel, retry or resume a batch query job",
        description="`cancel` stops pending tasks; `retry` runs the failed tasks again; "
        "`resume` continues a canceled job. 409 if the job's state does not allow it.",
        request=None,
        responses=BatchQueryJobSerializer,
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)
