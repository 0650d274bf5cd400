"""The explorer stores nothing; this model only holds its permission.

`use_explorer` is granted to groups like any other permission (admin → groups). The model is
unmanaged: no table, only the content type and the permission row that Django creates for it.
"""

from django.db import models


class ExplorerPermissions(models.Model):
    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("use_explorer", "Can browse servers in the DICOM explorer")]

    def __str__(self) -> str:
        return "DICOM explorer permissions"
