"""Demo PACS: started for real (Orthanc, qrscp), filled with demo studies, registered as nodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from adit.accounts.factories import UserFactory
from adit.accounts.models import User
from adit.core.demo import (
    DEMO_AE_TITLES,
    DEMO_STUDIES,
    STATE_FILE_NAME,
    DemoPacs,
    demo_datasets,
    demo_dir,
    known_demo_pacs,
    load_demo_studies,
    register_demo_nodes,
    reset_pacs,
    start_demo_pacs,
    stop_demo_pacs,
)
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing.peers import free_port, require_orthanc, start_qrscp
from adit.core.dicom.testing.synthetic import make_study
from adit.core.models import DicomFolder, DicomNode, DicomNodeGroupAccess, DicomServer

RECEIVER_AE = "ADIT_DEMO_RCV"
N_DEMO_INSTANCES = sum(len(study) for study in demo_datasets())


@pytest.fixture(scope="module")
def demo_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adit-data")


@pytest.fixture(scope="module")
def demo_pacs(demo_data_dir) -> Iterator[list[DemoPacs]]:
    require_orthanc()
    pacs = start_demo_pacs(
        demo_data_dir,
        dicom_ports=(0, 0),
        http_ports=(0, 0),
        receiver=(RECEIVER_AE, "127.0.0.1", free_port()),
        backend="orthanc",
    )
    try:
        yield pacs
    finally:
        stop_demo_pacs(pacs)


def orthanc_study_uids(pacs: DemoPacs) -> set[str]:
    assert pacs.peer is not None
    studies = pacs.peer.rest("GET", "/studies?expand").json()
    return {study["MainDicomTags"]["StudyInstanceUID"] for study in studies}


def orthanc_instance_count(pacs: DemoPacs) -> int:
    assert pacs.peer is not None
    return pacs.peer.statistics()["CountInstances"]


DEMO_STUDY_UIDS = {str(study[0].StudyInstanceUID) for study in demo_datasets()}


def test_demo_studies_are_varied_and_deterministic():
    first, second = demo_datasets(), demo_datasets()
    assert [[ds.SOPInstanceUID for ds in s] for s in first] == [
        [ds.SOPInstanceUID for ds in s] for s in second
    ]
    modalities = {ds.Modality for study in first for ds in study}
    assert {"CT", "MR", "CR", "SR"} <= modalities
    compressed = {
        ds.SeriesInstanceUID
        for study in first
        for ds in study
        if ds.file_meta.TransferSyntaxUID.is_compressed
    }
    assert len(compressed) == 1
    per_patient: dict[str, set[str]] = {}
    for study in first:
        per_patient.setdefault(study[0].PatientID, set()).add(study[0].StudyInstanceUID)
    assert all(1 <= len(studies) <= 3 for studies in per_patient.values())
    assert len(per_patient) >= 4
    assert len(DEMO_STUDY_UIDS) == len(DEMO_STUDIES)


def test_demo_pacs_know_each_other_and_the_receiver(demo_pacs, demo_data_dir):
    first, second = demo_pacs
    assert (first.ae_title, second.ae_title) == DEMO_AE_TITLES
    for this, other in ((first, second), (second, first)):
        assert this.answers()
        modalities = this.peer.rest("GET", "/modalities?expand").json()
        assert modalities[other.ae_title]["Port"] == other.dicom_port
        assert modalities[RECEIVER_AE]["AET"] == RECEIVER_AE
        DimseConnector(this.server_config(), _local()).send_c_echo()
    state = json.loads((demo_dir(demo_data_dir) / STATE_FILE_NAME).read_text())
    assert [item["ae_title"] for item in state] == list(DEMO_AE_TITLES)
    assert known_demo_pacs(demo_data_dir) == demo_pacs
    assert (demo_dir(demo_data_dir) / first.ae_title / "storage").is_dir()


def _local():
    from adit.core.dicom.config import LocalConfig

    return LocalConfig(calling_ae_title="DEMO_TEST")


def test_load_demo_studies_twice_gives_no_duplicates(demo_pacs):
    first = demo_pacs[0]
    reset_pacs(first)
    result = load_demo_studies(first)
    assert (result.loaded_studies, result.skipped_studies) == (len(DEMO_STUDIES), 0)
    assert result.instances == N_DEMO_INSTANCES
    assert orthanc_study_uids(first) == DEMO_STUDY_UIDS
    assert orthanc_instance_count(first) == N_DEMO_INSTANCES

    again = load_demo_studies(first)
    assert (again.loaded_studies, again.skipped_studies, again.instances) == (
        0,
        len(DEMO_STUDIES),
        0,
    )
    assert orthanc_instance_count(first) == N_DEMO_INSTANCES

    # The compressed series stays compressed in the PACS.
    compressed = next(
        ds
        for study in demo_datasets()
        for ds in study
        if ds.file_meta.TransferSyntaxUID.is_compressed
    )
    assert first.peer.instance_transfer_syntax(compressed.SOPInstanceUID) == str(
        compressed.file_meta.TransferSyntaxUID
    )


def test_a_half_loaded_study_is_completed(demo_pacs):
    first = demo_pacs[0]
    reset_pacs(first)
    study = demo_datasets()[0]
    first.peer.upload(study[:3])
    result = load_demo_studies(first)
    assert result.loaded_studies == len(DEMO_STUDIES)
    assert orthanc_instance_count(first) == N_DEMO_INSTANCES


def test_demo_pacs_can_query_and_move_between_each_other(demo_pacs):
    first, second = demo_pacs
    load_demo_studies(first)
    reset_pacs(second)
    operator = DicomOperator(first.server_config(), _local())
    studies = list(operator.find_studies(QueryDataset.create(PatientID="DEMO0003")))
    assert len(studies) == 3
    target = studies[0]
    operator.move_study(target.PatientID, target.StudyInstanceUID, second.ae_title)
    assert orthanc_study_uids(second) == {target.StudyInstanceUID}


def test_demo_storage_survives_a_restart(demo_pacs):
    first = demo_pacs[0]
    load_demo_studies(first)
    first.peer.stop()
    first.peer.start()
    assert orthanc_study_uids(first) == DEMO_STUDY_UIDS


@pytest.mark.django_db
def test_register_demo_nodes_gives_the_default_group_both_directions(demo_pacs, settings, tmp_path):
    settings.ADIT_DATA_DIR = tmp_path
    call_command("create_superuser", stdout=_Sink())
    superuser = User.objects.get(username=settings.SUPERUSER_USERNAME)
    default = Group.objects.get(name="Default")
    assert superuser.active_group == default
    member = UserFactory()
    member.groups.add(default)
    member.active_group = default
    member.save()
    outsider = UserFactory()

    nodes = register_demo_nodes(demo_pacs)
    register_demo_nodes(demo_pacs)  # again: updates, never duplicates

    assert DicomServer.objects.count() == 2
    assert DicomFolder.objects.count() == 1
    assert DicomNodeGroupAccess.objects.count() == 3
    server_names = {pacs.name for pacs in demo_pacs}
    # The member of "Default" sees exactly what the group was given ...
    sources = DicomNode.objects.accessible_by_user(member, "source")
    destinations = DicomNode.objects.accessible_by_user(member, "destination")
    assert set(sources.values_list("name", flat=True)) == server_names
    assert set(destinations.values_list("name", flat=True)) == server_names | {"Downloads"}
    # ... and so does the superuser (who would see every node anyway) through its active group.
    rows = DicomNodeGroupAccess.objects.filter(group=superuser.active_group)
    assert {(row.node.name, row.source, row.destination) for row in rows} == {
        *((name, True, True) for name in server_names),
        ("Downloads", False, True),
    }
    for direction in ("source", "destination"):
        visible = DicomNode.objects.accessible_by_user(superuser, direction)
        assert server_names <= set(visible.values_list("name", flat=True))
    assert not DicomNode.objects.accessible_by_user(outsider, "source").exists()

    folder = DicomFolder.objects.get()
    assert Path(folder.path) == (tmp_path / "downloads").resolve()
    assert Path(folder.path).is_dir()
    server = DicomServer.objects.get(ae_title=demo_pacs[0].ae_title)
    config = server.to_config()
    assert config.port == demo_pacs[0].dicom_port
    assert config.dicomweb_root_url == demo_pacs[0].dicomweb_url
    assert config.study_root_get_support and config.dicomweb_stow_support
    assert [node.pk for node in nodes] == [
        *DicomServer.objects.filter(ae_title__in=DEMO_AE_TITLES)
        .order_by("ae_title")
        .values_list("pk", flat=True),
        folder.pk,
    ]
    # The registered node works with the DICOM layer as is.
    DimseConnector(config, _local()).send_c_echo()


@pytest.mark.django_db
def test_populate_example_data_registers_the_running_demo_pacs(demo_pacs, demo_data_dir, settings):
    settings.ADIT_DATA_DIR = demo_data_dir
    call_command("create_superuser", stdout=_Sink())
    out = _Sink()
    call_command("populate_example_data", "--users", "4", "--groups", "2", stdout=out)
    assert set(DicomServer.objects.values_list("ae_title", flat=True)) == set(DEMO_AE_TITLES)
    assert DicomFolder.objects.filter(name="Downloads").exists()
    assert User.objects.filter(is_superuser=False).count() == 4
    example_user = User.objects.filter(is_superuser=False).first()
    assert example_user is not None and example_user.active_group is not None
    sources = DicomNode.objects.accessible_by_user(example_user, "source")
    assert set(sources.values_list("name", flat=True)) == {pacs.name for pacs in demo_pacs}

    call_command("populate_example_data", stdout=_Sink())  # again: no duplicates
    assert DicomServer.objects.count() == 2


@pytest.mark.django_db
def test_populate_example_data_skips_demo_pacs_that_do_not_answer(settings, tmp_path):
    settings.ADIT_DATA_DIR = tmp_path
    silent = DemoPacs(
        "Gone PACS", "GONE", dicom_port=free_port(), rest_url=f"http://127.0.0.1:{free_port()}"
    )
    (tmp_path / "demo-pacs").mkdir()
    (tmp_path / "demo-pacs" / STATE_FILE_NAME).write_text(json.dumps([silent.to_dict()]))
    out = _Sink()
    call_command("populate_example_data", "--users", "0", "--groups", "0", stdout=out)
    assert "Gone PACS does not answer" in out.text
    assert not DicomServer.objects.exists()
    assert DicomFolder.objects.filter(name="Downloads").exists()


@pytest.mark.django_db
def test_populate_demo_pacs_reset_empties_and_reloads(demo_pacs, settings, tmp_path):
    settings.ADIT_DATA_DIR = tmp_path
    first, second = demo_pacs
    register_demo_nodes(demo_pacs)
    foreign = make_study("FOREIGN1", "Foreign^Fred", series=(("CT", 2),))
    first.peer.upload(foreign)

    call_command("populate_demo_pacs", stdout=_Sink())  # no reset: the foreign study stays
    assert orthanc_study_uids(first) == DEMO_STUDY_UIDS | {foreign[0].StudyInstanceUID}

    out = _Sink()
    call_command("populate_demo_pacs", "--reset", stdout=out)
    assert orthanc_study_uids(first) == DEMO_STUDY_UIDS
    assert orthanc_instance_count(first) == N_DEMO_INSTANCES
    assert f"loaded {len(DEMO_STUDIES)} demo studies" in out.text

    # Any Orthanc: by REST URL, or by the AE title of a configured server.
    reset_pacs(second)
    call_command("populate_demo_pacs", "--orthanc-url", second.rest_url, stdout=_Sink())
    assert orthanc_study_uids(second) == DEMO_STUDY_UIDS
    second.peer.upload(foreign)
    call_command("populate_demo_pacs", "--reset", "--ae", second.ae_title, stdout=_Sink())
    assert orthanc_study_uids(second) == DEMO_STUDY_UIDS


@pytest.mark.django_db
def test_populate_demo_pacs_names_bad_input():
    with pytest.raises(CommandError, match="NOPE"):
        call_command("populate_demo_pacs", "--ae", "NOPE")
    with pytest.raises(CommandError, match="--orthanc-url"):
        call_command("populate_demo_pacs", "--orthanc-url", "ftp://x")
    with pytest.raises(CommandError, match="Orthanc REST API"):
        call_command("populate_demo_pacs", "--orthanc-url", f"http://127.0.0.1:{free_port()}")


def test_qrscp_demo_pacs_are_filled_over_dimse(tmp_path):
    start_qrscp(base_dir=tmp_path / "probe").stop()  # skips/fails when qrscp cannot run
    pacs = start_demo_pacs(
        tmp_path,
        dicom_ports=(0, 0),
        http_ports=(0, 0),
        receiver=(RECEIVER_AE, "127.0.0.1", free_port()),
        backend="qrscp",
    )
    try:
        first, second = pacs
        assert first.kind == "qrscp" and not first.rest_url
        assert first.answers()
        result = load_demo_studies(first)
        assert result.loaded_studies == len(DEMO_STUDIES)
        assert load_demo_studies(first).skipped_studies == len(DEMO_STUDIES)
        operator = DicomOperator(first.server_config(), _local())
        found = {s.StudyInstanceUID for s in operator.find_studies(QueryDataset.create())}
        assert found == DEMO_STUDY_UIDS
        with pytest.raises(Exception, match="only an Orthanc can be reset"):
            reset_pacs(first)
        # qrscp knows the other demo PACS as a C-MOVE destination.
        study = demo_datasets()[3]
        operator.move_study(study[0].PatientID, study[0].StudyInstanceUID, second.ae_title)
        moved = DicomOperator(second.server_config(), _local()).find_studies(QueryDataset.create())
        assert {s.StudyInstanceUID for s in moved} == {study[0].StudyInstanceUID}
    finally:
        stop_demo_pacs(pacs, tmp_path)
    assert not (tmp_path / "demo-pacs" / STATE_FILE_NAME).exists()


class _Sink:
    """A stdout for call_command that keeps the text."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass
