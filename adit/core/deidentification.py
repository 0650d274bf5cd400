"""How a job's pseudonymization is configured: the linkage seed and the PS3.15 options.

Linkable pseudonyms
-------------------
Every pseudonymizing path (transfer tasks of every app, the study download, DICOMweb retrieves)
seeds its pseudonymizer with :func:`pseudonymization_seed`, ``HMAC-SHA256(PSEUDONYM_SALT,
pseudonym)``. The pseudonymizer derives each patient's values from this seed and the original
PatientID, so the same patient under the same pseudonym gets the same Study/Series/SOP Instance
UIDs and the same date shift in every job of the installation, months apart, while another
pseudonym gives unrelated values. Neither the salt nor the seed is ever stored: a job keeps only
its pseudonyms, and the seed is derived again when a task runs. Without the installation's salt
nobody can recompute the mapping; with another salt (another installation) it differs.

Options
-------
A job stores the codes of the options it was created with (`deid_options`, see
`adit.core.dicom.deid_profile.DeidOption`). When a form or API call chooses none explicitly,
the options come from the default staff set for the user's active group
(`GroupDeidentificationDefaults`, edited in the admin).
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

from adit.core.dicom.deid_profile import DEID_OPTION_CHOICES, DeidOption, parse_options

__all__ = ["DEID_OPTION_CHOICES", "options_for_new_job", "pseudonymization_seed"]

DEID_OPTIONS_HELP = (
    "With a pseudonym, the Basic Application Level Confidentiality Profile (DICOM PS3.15 E.1) "
    "always applies: dates, descriptions, device and institution go, private tags too, and "
    "images that may carry burned-in text are left out. The options keep or clean more. "
    "Preselected: your group's defaults."
)


def pseudonymization_seed(pseudonym: str) -> str:
    """The pseudonymizer seed for ``pseudonym`` in this installation (see the module docstring).

    Raises:
        ValueError: if the pseudonym is empty or the installation has no PSEUDONYM_SALT.
    """
    if not pseudonym:
        raise ValueError("pseudonymization_seed: the pseudonym must not be empty")
    salt = settings.PSEUDONYM_SALT
    if not salt:
        raise ValueError(
            "PSEUDONYM_SALT is not set: pseudonyms cannot be linked across jobs without it"
        )
    message = f"adit-pseudonym-seed:{pseudonym}".encode()
    return hmac.new(salt.encode(), message, hashlib.sha256).hexdigest()


def group_default_options(user) -> list[str]:
    """The option codes staff chose as default for the user's active group ([] without one)."""
    from adit.core.models import GroupDeidentificationDefaults

    group_id = getattr(user, "active_group_id", None)
    if group_id is None:
        return []
    defaults = GroupDeidentificationDefaults.objects.filter(group_id=group_id).first()
    return list(defaults.options) if defaults is not None else []


def options_for_new_job(user, chosen: list[str] | None) -> list[str]:
    """The options a new job stores: the chosen ones, else the group's default; validated.

    Raises:
        ValueError: naming an unknown option or the contradiction.
    """
    options = parse_options(group_default_options(user) if chosen is None else chosen)
    return [option.value for option in DeidOption if option in options]
