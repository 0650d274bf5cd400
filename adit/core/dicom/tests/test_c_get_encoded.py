"""C-GET without decoding (`DimseConnector.send_c_get_encoded`) and what every C-GET refuses.

The encoded C-GET hands instances on as the bytes they arrived as; a retrieve that changes
nothing writes them as Part-10 files. Against a real Orthanc, its files must equal those the
decoding C-GET writes from the same bytes, and read back as the instances that were stored.

Both C-GETs check each sub-operation before answering it: a data set that is not of the
study the C-GET asked for is refused (0124, Not Authorized) and named in the warnings, not
handed on. A real pynetdicom SCP that slips a foreign instance into its sub-operations shows
it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage
from pynetdicom import evt

from adit.core.dicom.config import ServerConfig
from adit.core.dicom.dicomweb import part10_pieces
from adit.core.dicom.dimse import SOP_INSTANCE_UID, DimseConnector, uid_of
from adit.core.dicom.errors import RetriableDicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing.peers import LOOPBACK, start_get_scp
from adit.core.dicom.testing.synthetic import make_study

from .conftest import new_patient_id

GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
NOT_AUTHORIZED = 0x0124


def study_query(datasets) -> QueryDataset:
    return QueryDataset.create(
        QueryRetrieveLevel="STUDY", StudyInstanceUID=str(datasets[0].StudyInstanceUID)
    )


@pytest.mark.peers
def test_encoded_instances_make_the_files_the_decoded_c_get_makes(orthanc_a, local_config):
    study = make_study(new_patient_id("ENC"), series=(("CT", 3), ("MR", 2)))
    orthanc_a.upload(study)
    try:
        config = orthanc_a.server_config(dicomweb_root_url="")
        encoded = {
            instance.sop_instance_uid: instance
            for instance in DimseConnector(config, local_config).send_c_get_encoded(
                study_query(study)
            )
        }
        # uid_of: reading ds.SOPInstanceUID would convert an element, and a changed instance
        # no longer has the bytes it arrived as.
        decoded = {
            uid_of(ds, SOP_INSTANCE_UID): ds
            for ds in DimseConnector(config, local_config).send_c_get(study_query(study))
        }
    finally:
        orthanc_a.delete_study(str(study[0].StudyInstanceUID))
    assert sorted(encoded) == sorted(decoded) == sorted(str(ds.SOPInstanceUID) for ds in study)
    stored = {str(ds.SOPInstanceUID): ds for ds in study}
    for uid, instance in encoded.items():
        pieces = part10_pieces(decoded[uid])
        assert pieces is not None
        assert instance.part10() == b"".join(pieces)
        read = dcmread(io.BytesIO(instance.part10()))
        assert read.file_meta.MediaStorageSOPInstanceUID == uid
        assert read.file_meta.TransferSyntaxUID == instance.transfer_syntax_uid
        assert read.SOPClassUID == stored[uid].SOPClassUID
        assert read.PixelData == stored[uid].PixelData


class ForeignInstanceScp:
    """A real C-GET SCP (pynetdicom, in this process) that sends the instances of the study
    asked for and, in the middle of them, one of another study. Records each sub-operation's
    status as ADIT answered it."""

    def __init__(self, study, foreign) -> None:
        self.study, self.foreign = study, foreign
        self.statuses: dict[str, int] = {}
        self.server, self.port = start_get_scp(
            "FOREIGN", [(evt.EVT_C_GET, self._get), (evt.EVT_DIMSE_RECV, self._answered)]
        )

    def server_config(self) -> ServerConfig:
        return ServerConfig(
            name="Foreign", ae_title="FOREIGN", host=LOOPBACK, port=self.port,
            study_root_get_support=True,
        )  # fmt: skip

    def _get(self, event) -> Iterator:
        sent = [*self.study[:1], self.foreign, *self.study[1:]]
        yield len(sent)
        for ds in sent:
            yield 0xFF00, ds

    def _answered(self, event) -> None:
        message = event.message
        if type(message).__name__ == "C_STORE_RSP":
            command = message.command_set
            self.statuses[str(command.AffectedSOPInstanceUID)] = int(command.Status)


@pytest.fixture
def foreign_scp() -> Iterator[ForeignInstanceScp]:
    study = make_study(new_patient_id("ASKED"), series=(("CT", 3),), compressed_series=False)
    other = make_study(new_patient_id("OTHER"), series=(("CT", 1),), compressed_series=False)
    scp = ForeignInstanceScp(study, other[0])
    try:
        yield scp
    finally:
        scp.server.shutdown()


@pytest.mark.parametrize("encoded", [True, False], ids=["encoded", "decoded"])
def test_an_instance_of_another_study_is_refused_and_named(foreign_scp, local_config, encoded):
    connector = DimseConnector(foreign_scp.server_config(), local_config)
    query = study_query(foreign_scp.study)
    if encoded:
        received = [
            i.sop_instance_uid for i in connector.send_c_get_encoded(query, [CTImageStorage])
        ]
    else:
        received = [str(ds.SOPInstanceUID) for ds in connector.send_c_get(query, [CTImageStorage])]
    assert received == [str(ds.SOPInstanceUID) for ds in foreign_scp.study]
    foreign_uid = str(foreign_scp.foreign.SOPInstanceUID)
    refusals = [w for w in connector.warnings if foreign_uid in w]
    assert len(refusals) == 1
    assert "StudyInstanceUID" in refusals[0] and "not one the C-GET asked for" in refusals[0]
    assert foreign_scp.statuses[foreign_uid] == NOT_AUTHORIZED
    assert all(foreign_scp.statuses[uid] == 0 for uid in received)


def test_a_fetch_with_a_foreign_instance_fails_naming_the_refused_sub_operation(
    foreign_scp, local_config
):
    operator = DicomOperator(foreign_scp.server_config(), local_config)
    study_uid = str(foreign_scp.study[0].StudyInstanceUID)
    with pytest.raises(RetriableDicomError, match=r"1 sub-operation\(s\) failed"):
        list(operator.fetch_encoded("", study_uid))
