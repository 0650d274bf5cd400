"""Models every ADIT app shares, in three modules: `nodes` (servers, folders, group access),
`settings` (project, app and de-identification settings) and `jobs` (the job and task bases).

Everything is importable from `adit.core.models` as before; historic migrations name the node
validators and `new_pseudonymization_seed` as `adit.core.models.<name>`, so they stay here too.
"""

from adit.core.statuses import FINAL_STATUSES, Status, TaskStatus
from adit.core.validators import (
    validate_absolute_folder_path,
    validate_ae_title,
    validate_deid_options,
    validate_host,
    validate_http_url,
    validate_no_backslash_or_control_characters,
    validate_no_wildcards,
    validate_uid,
    validate_url_prefix,
)

from .jobs import (
    TASK_RESET_VALUES,
    DicomJob,
    DicomTask,
    JobActionError,
    TransferJob,
    TransferTask,
)
from .nodes import (
    ACCESS_DIRECTIONS,
    AccessDirection,
    DicomFolder,
    DicomNode,
    DicomNodeGroupAccess,
    DicomNodeQuerySet,
    DicomServer,
)
from .settings import (
    DicomAppSettings,
    GroupDeidentificationDefaults,
    ProjectSettings,
    deid_options_field,
    new_pseudonymization_seed,
)

__all__ = [
    "ACCESS_DIRECTIONS",
    "AccessDirection",
    "DicomAppSettings",
    "DicomFolder",
    "DicomJob",
    "DicomNode",
    "DicomNodeGroupAccess",
    "DicomNodeQuerySet",
    "DicomServer",
    "DicomTask",
    "FINAL_STATUSES",
    "GroupDeidentificationDefaults",
    "JobActionError",
    "ProjectSettings",
    "Status",
    "TASK_RESET_VALUES",
    "TaskStatus",
    "TransferJob",
    "TransferTask",
    "deid_options_field",
    "new_pseudonymization_seed",
    "validate_absolute_folder_path",
    "validate_ae_title",
    "validate_deid_options",
    "validate_host",
    "validate_http_url",
    "validate_no_backslash_or_control_characters",
    "validate_no_wildcards",
    "validate_uid",
    "validate_url_prefix",
]
