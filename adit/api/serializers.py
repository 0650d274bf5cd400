"""Serializers of the jobs API: validation follows the same rules as the UI's forms."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from adit.core.deidentification import DEID_OPTION_CHOICES, options_for_new_job
from adit.core.dicom.query import QueryDataset
from adit.core.models import DicomNode, DicomServer
from adit.core.validators import (
    validate_no_backslash_or_control_characters,
    validate_no_wildcards,
    validate_uid,
)


def _django_validators(*validators):
    """Django validators as DRF validators (their messages become field errors)."""

    def run(value):
        for validator in validators:
            try:
                validator(value)
            except DjangoValidationError as error:
                raise serializers.ValidationError(error.messages) from None

    return run


UID_VALIDATOR = _django_validators(validate_no_wildcards, validate_uid)
TEXT_VALIDATOR = _django_validators(validate_no_backslash_or_control_characters)
EXACT_TEXT_VALIDATOR = _django_validators(
    validate_no_backslash_or_control_characters, validate_no_wildcards
)


def resolve_node(user, value, direction: str, servers_only: bool) -> DicomNode:
    """A node named by id, AE title (servers) or name, accessible in `direction`.

    Raises:
        serializers.ValidationError: unknown or not accessible (the same message for both).
    """
    nodes = DicomNode.objects.accessible_by_user(user, direction)  # type: ignore[attr-defined]
    if servers_only:
        nodes = nodes.filter(node_type=DicomNode.NodeType.SERVER)
    node = None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        node = nodes.filter(pk=int(value)).first()
    if node is None and isinstance(value, str):
        server_ids = DicomServer.objects.filter(ae_title=value).values("pk")
        node = nodes.filter(pk__in=server_ids).first() or nodes.filter(name=value).first()
    if node is None:
        kind = "server" if servers_only else "server or folder"
        raise serializers.ValidationError(
            f"No {kind} {value!r} is available to your active group as a {direction}."
        )
    return node.concrete


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "description": "node id"},
            {"type": "string", "description": "AE title (servers) or name"},
        ],
        "description": "In requests: the node's id, AE title or name. In responses: "
        "{id, name, ae_title}.",
    }
)
class NodeField(serializers.Field):
    """A node given by id, AE title or name; shown as {id, name, ae_title}."""

    def __init__(self, direction: str, servers_only: bool = False, **kwargs) -> None:
        self.direction = direction
        self.servers_only = servers_only
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, int | str) or isinstance(data, bool) or data == "":
            raise serializers.ValidationError("Give the node's id, AE title or name.")
        return resolve_node(self.context["request"].user, data, self.direction, self.servers_only)

    def to_representation(self, value):
        node = value.concrete
        return {"id": node.pk, "name": node.name, "ae_title": getattr(node, "ae_title", None)}


class JobStatusMixin(serializers.Serializer):
    status = serializers.CharField(read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    task_counts = serializers.SerializerMethodField()

    def get_task_counts(self, job) -> dict[str, int]:
        labels = dict(job.tasks.model.Status.choices)
        return {labels[code]: count for code, count in job.task_counts().items()}


# --- transfer jobs ------------------------------------------------------------------------------


class StudySerializer(serializers.Serializer):
    study_uid = serializers.CharField(max_length=64, validators=[UID_VALIDATOR])
    patient_id = serializers.CharField(
        max_length=64, required=False, allow_blank=True, validators=[EXACT_TEXT_VALIDATOR]
    )
    series_uids = serializers.ListField(
        child=serializers.CharField(max_length=64, validators=[UID_VALIDATOR]),
        required=False,
        default=list,
        max_length=1000,
    )


class TransferTaskSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    status = serializers.CharField(read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    message = serializers.CharField(read_only=True)
    attempts = serializers.IntegerField(read_only=True)
    source = NodeField("source", read_only=True)
    destination = NodeField("destination", read_only=True)
    patient_id = serializers.CharField(read_only=True)
    study_uid = serializers.CharField(read_only=True)
    series_uids = serializers.ListField(child=serializers.CharField(), read_only=True)
    pseudonym = serializers.CharField(read_only=True)
    start = serializers.DateTimeField(read_only=True)
    end = serializers.DateTimeField(read_only=True)
    log = serializers.CharField(read_only=True)


class TransferJobSerializer(JobStatusMixin, serializers.Serializer):
    """A selective-style transfer job: studies (or some of their series) from a source."""

    id = serializers.IntegerField(read_only=True)
    source = NodeField("source", servers_only=True, write_only=True)
    destination = NodeField("destination", write_only=True)
    studies = StudySerializer(many=True, write_only=True)
    pseudonym = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        write_only=True,
        validators=[TEXT_VALIDATOR],
    )
    trial_protocol_id = serializers.CharField(
        max_length=64, required=False, allow_blank=True, validators=[TEXT_VALIDATOR]
    )
    trial_protocol_name = serializers.CharField(
        max_length=64, required=False, allow_blank=True, validators=[TEXT_VALIDATOR]
    )
    archive_password = serializers.CharField(
        max_length=64, required=False, allow_blank=True, write_only=True
    )
    deid_options = serializers.ListField(
        child=serializers.ChoiceField(choices=DEID_OPTION_CHOICES),
        required=False,
        help_text=(
            "Options of the PS3.15 Basic Application Level Confidentiality Profile applied "
            "when pseudonymizing (codes); omitted: the defaults of your active group."
        ),
    )
    deid_description = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="The profile and options the job applies, in the standard's words.",
    )
    urgent = serializers.BooleanField(required=False, default=False)
    send_finished_mail = serializers.BooleanField(required=False, default=False)
    message = serializers.CharField(read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True)
    created = serializers.DateTimeField(read_only=True)
    start = serializers.DateTimeField(read_only=True)
    end = serializers.DateTimeField(read_only=True)

    def validate_studies(self, studies: list[dict]) -> list[dict]:
        if not studies:
            raise serializers.ValidationError("Give at least one study.")
        user = self.context["request"].user
        limit = settings.SELECTIVE_TRANSFER_MAX_SELECTION
        unique = {study["study_uid"] for study in studies}
        if len(unique) > limit and not user.is_staff:
            raise serializers.ValidationError(
                f"{len(unique)} studies were given; at most {limit} may be transferred in one job."
            )
        if len(unique) != len(studies):
            raise serializers.ValidationError("A study is listed more than once.")
        return studies

    def validate(self, attrs: dict) -> dict:
        user = self.context["request"].user
        if attrs.get("urgent") and not user.has_perm("selective_transfer.can_process_urgently"):
            raise serializers.ValidationError(
                {"urgent": "You lack the permission to process jobs urgently."}
            )
        if not attrs.get("pseudonym") and not user.has_perm(
            "selective_transfer.can_transfer_unpseudonymized"
        ):
            raise serializers.ValidationError(
                {
                    "pseudonym": "A pseudonym is required: your group may not transfer "
                    "unpseudonymized data."
                }
            )
        try:
            attrs["deid_options"] = options_for_new_job(user, attrs.get("deid_options"))
        except ValueError as error:
            raise serializers.ValidationError({"deid_options": str(error)}) from None
        if attrs.get("archive_password") and not attrs["destination"].is_folder:
            raise serializers.ValidationError(
                {"archive_password": "An archive password only works with a folder destination."}
            )
        return attrs


def lookup_patient_id(source: DicomServer, study_uid: str) -> str:
    """The PatientID of a study, asked from the source (the API lets clients omit it).

    Raises:
        serializers.ValidationError: the study is not on the source.
        DicomError: the source failed.
    """
    from adit.core.dicom.operator import DicomOperator
    from adit.core.dicom_settings import local_config

    operator = DicomOperator(source.to_config(), local_config())
    query = QueryDataset.create(QueryRetrieveLevel="STUDY", StudyInstanceUID=study_uid)
    for result in operator.find_studies(query, limit_results=1):
        if result.PatientID:
            return result.PatientID
    raise serializers.ValidationError(
        {"studies": f"The study {study_uid} was not found on {source.name}."}
    )


# --- batch query jobs ---------------------------------------------------------------------------


class BatchQueryRowSerializer(serializers.Serializer):
    """One query, with the columns of the batch query file as keys."""

    PatientID = serializers.CharField(required=False, allow_blank=True)
    PatientName = serializers.CharField(required=False, allow_blank=True)
    PatientBirthDate = serializers.CharField(required=False, allow_blank=True)
    AccessionNumber = serializers.CharField(required=False, allow_blank=True)
    From = serializers.CharField(required=False, allow_blank=True)
    Until = serializers.CharField(required=False, allow_blank=True)
    Modality = serializers.CharField(required=False, allow_blank=True)
    StudyDescription = serializers.CharField(required=False, allow_blank=True)
    SeriesDescription = serializers.CharField(required=False, allow_blank=True)
    SeriesNumber = serializers.CharField(required=False, allow_blank=True)
    Pseudonym = serializers.CharField(required=False, allow_blank=True)


class BatchQueryJobSerializer(JobStatusMixin, serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    source = NodeField("source", servers_only=True, write_only=True)
    project_name = serializers.CharField(max_length=150)
    project_description = serializers.CharField(max_length=2000)
    queries = BatchQueryRowSerializer(many=True, write_only=True)
    urgent = serializers.BooleanField(required=False, default=False)
    send_finished_mail = serializers.BooleanField(required=False, default=False)
    message = serializers.CharField(read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True)
    created = serializers.DateTimeField(read_only=True)
    start = serializers.DateTimeField(read_only=True)
    end = serializers.DateTimeField(read_only=True)

    def validate_queries(self, queries: list[dict]) -> list:
        from adit.batch_query.parsers import parse_row
        from adit.core.spreadsheets import Problems, SheetRow, sheet_settings

        if not queries:
            raise serializers.ValidationError("Give at least one query.")
        limits = sheet_settings("BATCH_QUERY", self.context["request"].user)
        if len(queries) > limits["max_rows"]:
            raise serializers.ValidationError(
                f"{len(queries)} queries were given; at most {limits['max_rows']} are allowed"
                f"{limits['row_limit_hint']}."
            )
        problems = Problems()
        # "Line" n is the n-th query (1-based), like a spreadsheet line without the header.
        rows = [
            parse_row(SheetRow(number, {k: str(v).strip() for k, v in query.items()}), problems)
            for number, query in enumerate(queries, start=1)
        ]
        if problems:
            raise serializers.ValidationError(
                [text.replace("Line ", "Query ", 1) for text in problems.as_text()]
            )
        return rows

    def validate(self, attrs: dict) -> dict:
        user = self.context["request"].user
        if attrs.get("urgent") and not user.has_perm("batch_query.can_process_urgently"):
            raise serializers.ValidationError(
                {"urgent": "You lack the permission to process jobs urgently."}
            )
        return attrs


class BatchQueryTaskSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    status = serializers.CharField(read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    message = serializers.CharField(read_only=True)
    attempts = serializers.IntegerField(read_only=True)
    patient_id = serializers.CharField(read_only=True)
    accession_number = serializers.CharField(read_only=True)
    pseudonym = serializers.CharField(read_only=True)
    start = serializers.DateTimeField(read_only=True)
    end = serializers.DateTimeField(read_only=True)


class BatchQueryResultSerializer(serializers.Serializer):
    task = serializers.IntegerField(source="task_id", read_only=True)
    patient_id = serializers.CharField(read_only=True)
    patient_name = serializers.CharField(read_only=True)
    patient_birth_date = serializers.DateField(read_only=True)
    accession_number = serializers.CharField(read_only=True)
    study_date = serializers.DateField(read_only=True)
    study_time = serializers.TimeField(read_only=True)
    modalities = serializers.ListField(child=serializers.CharField(), read_only=True)
    image_count = serializers.IntegerField(read_only=True)
    study_description = serializers.CharField(read_only=True)
    series_description = serializers.CharField(read_only=True)
    series_number = serializers.CharField(read_only=True)
    pseudonym = serializers.CharField(read_only=True)
    study_uid = serializers.CharField(read_only=True)
    series_uid = serializers.CharField(read_only=True)
