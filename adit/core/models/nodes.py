"""DICOM nodes: servers and folders, and which groups may use them as source or destination."""

from typing import Literal

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Exists, OuterRef, Q

from adit.core.dicom.config import ServerConfig
from adit.core.validators import (
    validate_absolute_folder_path,
    validate_ae_title,
    validate_host,
    validate_http_url,
    validate_url_prefix,
)

AccessDirection = Literal["source", "destination"]


ACCESS_DIRECTIONS: tuple[AccessDirection, ...] = ("source", "destination")


class DicomNodeQuerySet(models.QuerySet):
    def active(self):
        return self.filter(active=True)

    def accessible_by_user(self, user, direction: AccessDirection, all_groups: bool = False):
        """Active nodes that `user` may use as `direction` ("source" or "destination").

        Access comes from the user's active group (or, with `all_groups`, from any of the
        user's groups). Group and flag are matched on the *same* access row, so a source right
        of one group never combines with a destination right of another. Superusers get every
        active node; anonymous and inactive users get none.
        """
        if direction not in ACCESS_DIRECTIONS:
            raise ValueError(
                f"Unknown access direction {direction!r}; use 'source' or 'destination'."
            )
        nodes = self.active()
        if not user or not user.is_authenticated or not user.is_active:
            return nodes.none()
        if user.is_superuser:
            return nodes
        access_rows = DicomNodeGroupAccess.objects.filter(
            node=OuterRef("pk"), group__user=user, **{direction: True}
        )
        if not all_groups:
            if not user.active_group_id:
                return nodes.none()
            access_rows = access_rows.filter(group_id=user.active_group_id)
        return nodes.filter(Exists(access_rows))


class DicomNode(models.Model):
    """A place DICOM data comes from or goes to: a server or a folder.

    Concrete parent of `DicomServer` and `DicomFolder` (multi-table inheritance) so that jobs
    can point at any node with one foreign key.
    """

    class NodeType(models.TextChoices):
        SERVER = "SV", "Server"
        FOLDER = "FO", "Folder"

    name = models.CharField(max_length=64, unique=True)
    node_type = models.CharField(max_length=2, choices=NodeType.choices, editable=False)
    active = models.BooleanField(
        default=True, help_text="Inactive nodes are hidden everywhere and cannot be used."
    )
    created = models.DateTimeField(auto_now_add=True)
    modified = models.DateTimeField(auto_now=True)

    objects = DicomNodeQuerySet.as_manager()

    # Set by the subclasses.
    NODE_TYPE: str = ""

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if self.NODE_TYPE:
            self.node_type = self.NODE_TYPE
        super().save(*args, **kwargs)

    @property
    def concrete(self) -> "DicomServer | DicomFolder":
        """This node as its subclass (a `DicomNode` fetched directly knows only the base)."""
        if isinstance(self, DicomServer | DicomFolder):
            return self
        if self.node_type == self.NodeType.SERVER:
            return self.dicomserver  # type: ignore[attr-defined]
        if self.node_type == self.NodeType.FOLDER:
            return self.dicomfolder  # type: ignore[attr-defined]
        raise ValueError(f"The node {self.name!r} has an unknown type {self.node_type!r}.")

    @property
    def is_server(self) -> bool:
        return self.node_type == self.NodeType.SERVER

    @property
    def is_folder(self) -> bool:
        return self.node_type == self.NodeType.FOLDER

    def is_accessible_by_user(
        self, user, direction: AccessDirection, all_groups: bool = False
    ) -> bool:
        return (
            DicomNode.objects.accessible_by_user(user, direction, all_groups=all_groups)
            .filter(pk=self.pk)
            .exists()
        )


class DicomServer(DicomNode):
    """A PACS or other DICOM server reachable over DIMSE and/or DICOMweb."""

    NODE_TYPE = DicomNode.NodeType.SERVER

    ae_title = models.CharField(
        "AE title",
        max_length=16,
        unique=True,
        validators=[validate_ae_title],
        help_text="The server's (called) AE title; also its key in ADIT's DICOMweb API.",
    )
    host = models.CharField(max_length=255, blank=True, validators=[validate_host])
    port = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[
            MinValueValidator(1, "The port must be between 1 and 65535."),
            MaxValueValidator(65535, "The port must be between 1 and 65535."),
        ],
    )
    patient_root_find_support = models.BooleanField(default=False)
    patient_root_get_support = models.BooleanField(default=False)
    patient_root_move_support = models.BooleanField(default=False)
    study_root_find_support = models.BooleanField(default=False)
    study_root_get_support = models.BooleanField(default=False)
    study_root_move_support = models.BooleanField(default=False)
    store_scp_support = models.BooleanField(
        "C-STORE SCP support", default=False, help_text="The server accepts C-STORE from ADIT."
    )
    pushes_from_any_host = models.BooleanField(
        "C-MOVE pushes from any host",
        default=False,
        help_text=(
            "ADIT's receiver accepts C-MOVE pushes with this server's AE title only from the "
            "server's host. Tick this for a PACS behind NAT whose pushes come from elsewhere."
        ),
    )
    dicomweb_root_url = models.CharField(
        "DICOMweb root URL", max_length=2000, blank=True, validators=[validate_http_url]
    )
    dicomweb_qido_prefix = models.CharField(
        "QIDO-RS prefix", max_length=2000, blank=True, validators=[validate_url_prefix]
    )
    dicomweb_wado_prefix = models.CharField(
        "WADO-RS prefix", max_length=2000, blank=True, validators=[validate_url_prefix]
    )
    dicomweb_stow_prefix = models.CharField(
        "STOW-RS prefix", max_length=2000, blank=True, validators=[validate_url_prefix]
    )
    dicomweb_qido_support = models.BooleanField("QIDO-RS support", default=False)
    dicomweb_wado_support = models.BooleanField("WADO-RS support", default=False)
    dicomweb_stow_support = models.BooleanField("STOW-RS support", default=False)
    dicomweb_authorization_header = models.CharField(
        "DICOMweb Authorization header",
        max_length=2000,
        blank=True,
        help_text="Sent verbatim as the Authorization header, e.g. 'Bearer <token>'.",
    )
    max_search_results = models.PositiveIntegerField(
        default=200,
        validators=[MinValueValidator(1, "The maximum number of search results must be >= 1.")],
        help_text="How many results one query may return before ADIT splits it.",
    )
    max_associations = models.PositiveIntegerField(
        default=4,
        validators=[MinValueValidator(1, "The maximum number of associations must be >= 1.")],
        help_text="How many associations/requests ADIT may hold open to this server at once.",
    )

    DIMSE_FLAGS = (
        "patient_root_find_support",
        "patient_root_get_support",
        "patient_root_move_support",
        "study_root_find_support",
        "study_root_get_support",
        "study_root_move_support",
        "store_scp_support",
    )
    DICOMWEB_FLAGS = ("dicomweb_qido_support", "dicomweb_wado_support", "dicomweb_stow_support")

    class Meta:
        verbose_name = "DICOM server"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(port__isnull=True) | Q(port__gte=1, port__lte=65535),
                name="dicomserver_port_range",
            ),
            models.CheckConstraint(
                condition=Q(max_associations__gte=1), name="dicomserver_max_associations_min"
            ),
            models.CheckConstraint(
                condition=Q(max_search_results__gte=1), name="dicomserver_max_search_results_min"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.ae_title})"

    @property
    def has_dimse(self) -> bool:
        return bool(self.ae_title and self.host and self.port)

    @property
    def has_dicomweb(self) -> bool:
        return bool(self.dicomweb_root_url)

    def clean(self) -> None:
        super().clean()
        errors: dict[str, list[str]] = {}
        if self.host and not self.port:
            errors.setdefault("port", []).append("A host needs a port for DIMSE.")
        if self.port and not self.host:
            errors.setdefault("host", []).append("A port needs a host for DIMSE.")
        if not (self.host or self.port) and not self.dicomweb_root_url:
            errors.setdefault("__all__", []).append(
                "The server is not reachable: give a host and port (DIMSE) or a DICOMweb root URL."
            )
        if not (self.host and self.port):
            enabled = [
                str(self._meta.get_field(flag).verbose_name)
                for flag in self.DIMSE_FLAGS
                if getattr(self, flag)
            ]
            if enabled:
                errors.setdefault("__all__", []).append(
                    f"DIMSE support ({', '.join(enabled)}) needs a host and port."
                )
        if not self.dicomweb_root_url:
            for flag in self.DICOMWEB_FLAGS:
                if getattr(self, flag):
                    label = self._meta.get_field(flag).verbose_name
                    errors.setdefault(flag, []).append(f"{label} needs a DICOMweb root URL.")
        if errors:
            raise ValidationError(errors)  # pyright: ignore[reportArgumentType]

    def to_config(self) -> ServerConfig:
        """The plain config value the DICOM layer works with."""
        return ServerConfig(
            name=self.name,
            ae_title=self.ae_title,
            host=self.host,
            port=self.port or 0,
            patient_root_find_support=self.patient_root_find_support,
            patient_root_get_support=self.patient_root_get_support,
            patient_root_move_support=self.patient_root_move_support,
            study_root_find_support=self.study_root_find_support,
            study_root_get_support=self.study_root_get_support,
            study_root_move_support=self.study_root_move_support,
            store_scp_support=self.store_scp_support,
            dicomweb_root_url=self.dicomweb_root_url,
            dicomweb_qido_prefix=self.dicomweb_qido_prefix,
            dicomweb_wado_prefix=self.dicomweb_wado_prefix,
            dicomweb_stow_prefix=self.dicomweb_stow_prefix,
            dicomweb_qido_support=self.dicomweb_qido_support,
            dicomweb_wado_support=self.dicomweb_wado_support,
            dicomweb_stow_support=self.dicomweb_stow_support,
            dicomweb_authorization_header=self.dicomweb_authorization_header,
            max_search_results=self.max_search_results,
            max_associations=self.max_associations,
        )


class DicomFolder(DicomNode):
    """A directory (as the workers see it) that studies are written to."""

    NODE_TYPE = DicomNode.NodeType.FOLDER

    path = models.CharField(
        max_length=1024,
        validators=[validate_absolute_folder_path],
        help_text="Absolute path of the directory as the workers see it.",
    )
    quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="Disk quota in GB; a transfer that would exceed it fails."
    )
    warn_size = models.PositiveIntegerField(
        null=True, blank=True, help_text="Warn the admins when the folder grows beyond this (GB)."
    )

    class Meta:
        verbose_name = "DICOM folder"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.path})"

    def clean(self) -> None:
        super().clean()
        if self.quota is not None and self.warn_size is not None and self.warn_size > self.quota:
            raise ValidationError(
                {
                    "warn_size": f"The warn size ({self.warn_size} GB) must not exceed the "
                    f"quota ({self.quota} GB)."
                }
            )


class DicomNodeGroupAccess(models.Model):
    """What one group may do with one node."""

    node = models.ForeignKey(DicomNode, on_delete=models.CASCADE, related_name="group_accesses")
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="dicom_node_accesses")
    source = models.BooleanField(default=False, help_text="The group may read from this node.")
    destination = models.BooleanField(
        default=False, help_text="The group may send data to this node."
    )

    class Meta:
        verbose_name = "group access"
        verbose_name_plural = "group accesses"
        constraints = [
            models.UniqueConstraint(fields=["node", "group"], name="unique_node_group_access")
        ]

    def __str__(self) -> str:
        rights = [d for d in ACCESS_DIRECTIONS if getattr(self, d)] or ["no access"]
        return f"{self.group} → {self.node}: {', '.join(rights)}"

    def clean(self) -> None:
        super().clean()
        if not (self.source or self.destination):
            raise ValidationError(
                "Give the group source and/or destination access, or delete the row."
            )
        if self.source and self.node_id and self.node.node_type == DicomNode.NodeType.FOLDER:
            raise ValidationError({"source": "A folder can only be a destination, not a source."})
