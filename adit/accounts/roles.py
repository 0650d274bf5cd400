"""Role presets: the sets of permissions a group gets in one choice instead of ~150 checkboxes.

An admin picks "Researcher", "Data manager" or "Staff" on the group's admin page and the
group's permissions become exactly the preset's. Each role includes the one before it. Node
access (which servers and folders) is separate: it is granted per group on the same page.

Permissions are named ``app_label.codename`` as in ``user.has_perm``; a name that does not
exist is a programming error (an app renamed a permission) and raises at once rather than
silently granting less.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import Permission
from django.db.models import Q


@dataclass(frozen=True)
class Role:
    key: str
    label: str
    description: str
    permissions: tuple[str, ...]


_RESEARCHER = (
    "selective_transfer.add_selectivetransferjob",
    "selective_transfer.can_download_study",
    "batch_query.add_batchqueryjob",
    "batch_transfer.add_batchtransferjob",
    "upload.add_uploadjob",
    "dicom_explorer.use_explorer",
    "dicom_web.can_query",
    "dicom_web.can_retrieve",
    "accounts.add_token",
)
_DATA_MANAGER = (
    *_RESEARCHER,
    "selective_transfer.can_transfer_unpseudonymized",
    "batch_transfer.can_transfer_unpseudonymized",
    "upload.can_transfer_unpseudonymized",
    "selective_transfer.can_process_urgently",
    "batch_query.can_process_urgently",
    "batch_transfer.can_process_urgently",
    "dicom_web.can_store",
    "accounts.can_generate_never_expiring_token",
)
_STAFF = (
    *_DATA_MANAGER,
    "audit.export_pseudonym_mapping",
    "core.view_dicomserver",
    "core.change_dicomserver",
    "core.add_dicomserver",
    "core.view_dicomfolder",
    "core.change_dicomfolder",
    "core.add_dicomfolder",
    "core.view_dicomnodegroupaccess",
    "core.add_dicomnodegroupaccess",
    "core.change_dicomnodegroupaccess",
    "core.delete_dicomnodegroupaccess",
    "selective_transfer.view_selectivetransfersettings",
    "selective_transfer.change_selectivetransfersettings",
    "batch_query.view_batchquerysettings",
    "batch_query.change_batchquerysettings",
    "batch_transfer.view_batchtransfersettings",
    "batch_transfer.change_batchtransfersettings",
    "upload.view_uploadsettings",
    "upload.change_uploadsettings",
)

ROLES: dict[str, Role] = {
    role.key: role
    for role in (
        Role(
            "researcher",
            "Researcher",
            "Query, transfer, upload and download pseudonymized data (selective transfer, batch "
            "query, batch transfer, upload, DICOM explorer, DICOMweb query/retrieve, API tokens).",
            _RESEARCHER,
        ),
        Role(
            "data_manager",
            "Data manager",
            "Everything a researcher may, plus transfer and upload unpseudonymized data, urgent "
            "jobs, DICOMweb store and never-expiring tokens.",
            _DATA_MANAGER,
        ),
        Role(
            "staff",
            "Staff",
            "Everything a data manager may, plus export pseudonym mappings and manage servers, "
            "folders, node access and the apps' settings in the admin (the user also needs "
            '"Staff status").',
            _STAFF,
        ),
    )
}


def role_permissions(key: str) -> list[Permission]:
    """The permissions of a role.

    Raises:
        KeyError: the role does not exist.
        LookupError: one of the role's permissions does not exist (names it).
    """
    names = ROLES[key].permissions
    condition = Q()
    for name in names:
        app_label, codename = name.split(".")
        condition |= Q(content_type__app_label=app_label, codename=codename)
    found = list(Permission.objects.filter(condition).select_related("content_type"))
    found_names = {f"{p.content_type.app_label}.{p.codename}" for p in found}
    missing = sorted(set(names) - found_names)
    if missing:
        raise LookupError(f"The role {key!r} names unknown permissions: {', '.join(missing)}")
    return found


def matching_role(permissions) -> str:
    """The key of the role whose permissions are exactly these, else ""."""
    names = {f"{p.content_type.app_label}.{p.codename}" for p in permissions}
    for role in ROLES.values():
        if names == set(role.permissions):
            return role.key
    return ""
