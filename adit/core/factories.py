"""factory-boy factories for the core models (DICOM nodes and their group access)."""

from factory.declarations import Sequence, SubFactory
from factory.django import DjangoModelFactory

from adit.accounts.factories import GroupFactory
from adit.core.models import DicomFolder, DicomNodeGroupAccess, DicomServer


class DicomServerFactory(DjangoModelFactory):
    """A DIMSE server that supports every query/retrieve model and C-STORE."""

    class Meta:
        model = DicomServer

    name = Sequence(lambda n: f"DICOM Server {n}")
    ae_title = Sequence(lambda n: f"SERVER{n}")
    host = "127.0.0.1"
    port = Sequence(lambda n: 11112 + n)
    patient_root_find_support = True
    patient_root_get_support = True
    patient_root_move_support = True
    study_root_find_support = True
    study_root_get_support = True
    study_root_move_support = True
    store_scp_support = True


class DicomWebServerFactory(DjangoModelFactory):
    """A server reachable only over DICOMweb (QIDO-RS, WADO-RS and STOW-RS)."""

    class Meta:
        model = DicomServer

    name = Sequence(lambda n: f"DICOMweb Server {n}")
    ae_title = Sequence(lambda n: f"WEBSERVER{n}")
    dicomweb_root_url = Sequence(lambda n: f"http://127.0.0.1:{8042 + n}/dicom-web")
    dicomweb_qido_support = True
    dicomweb_wado_support = True
    dicomweb_stow_support = True


class DicomFolderFactory(DjangoModelFactory):
    class Meta:
        model = DicomFolder

    name = Sequence(lambda n: f"DICOM Folder {n}")
    path = Sequence(lambda n: f"/mnt/adit/folder{n}")


class DicomNodeGroupAccessFactory(DjangoModelFactory):
    """Source and destination access of a group to a server (override as needed)."""

    class Meta:
        model = DicomNodeGroupAccess

    node = SubFactory(DicomServerFactory)
    group = SubFactory(GroupFactory)
    source = True
    destination = True
