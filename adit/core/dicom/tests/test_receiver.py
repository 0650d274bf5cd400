"""The receiver against real peers: DCMTK's storescu, Orthanc and pynetdicom's qrscp (C-MOVE)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from adit.core.dicom.config import LocalConfig, Timeouts
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.file_transmit import FileTransmitClient, Topic
from adit.core.dicom.move import ReceiverMoveFetcher, fetch_with_move
from adit.core.dicom.net import association, commands, pdus
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.receiver import Receiver
from adit.core.dicom.testing.peers import (
    LOOPBACK,
    OrthancInstance,
    free_port,
    peer_environment,
    require_binary,
    skip_or_fail,
    start_qrscp,
)
from adit.core.dicom.testing.synthetic import make_study, write_study
from adit.core.dicom_settings import file_transmit_secret
from adit.core.testing import wait_until

pytestmark = pytest.mark.peers

SCU_AE = "STORE_SCU_T"


def dcmtk_storescu() -> str:
    """DCMTK's storescu (pynetdicom installs a Python `storescu` that shadows it on PATH)."""
    for path in ("/usr/bin/storescu", "/usr/local/bin/storescu"):
        if Path(path).is_file() and not Path(path).read_bytes()[:2] == b"#!":
            return path
    skip_or_fail("DCMTK's storescu not found in /usr/bin (install Debian's 'dcmtk')")
    raise AssertionError("unreachable")


def storescu(receiver: Receiver, files: list[Path], calling_ae: str = SCU_AE, *options: str):
    return subprocess.run(
        [
            dcmtk_storescu(),
            *options,
            "-xr",  # propose RLE Lossless first, so the compressed series goes as it is
            "-aet",
            calling_ae,
            "-aec",
            receiver.ae_title,
            LOOPBACK,
            str(receiver.store_port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        env=peer_environment(),
        timeout=60,
    )


def uids(datasets) -> list[str]:
    return [ds.SOPInstanceUID for ds in datasets]


class AllowedAETitles:
    """A mutable allow list, like the management command's database-backed one."""

    def __init__(self, *titles: str) -> None:
        self.titles = set(titles)

    def __call__(self) -> set[str]:
        return self.titles


@pytest.fixture
def allowed() -> AllowedAETitles:
    return AllowedAETitles(SCU_AE)


@pytest.fixture
def receiver(tmp_path: Path, allowed) -> Iterator[Receiver]:
    # A unique AE title per receiver: Orthanc resolves C-MOVE destinations by AE title.
    port = free_port()
    instance = Receiver(
        f"RECV{port}", port, 0, tmp_path / "spool", allowed, host=LOOPBACK, heartbeat_interval=1
    )
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def client(receiver: Receiver) -> FileTransmitClient:
    return FileTransmitClient(LOOPBACK, receiver.transmit_port, connect_timeout=2)


@pytest.fixture
def study(tmp_path: Path) -> tuple[list[Dataset], list[Path]]:
    datasets = make_study("RCV-PAT", series=(("CT", 4), ("MR", 3)))
    return datasets, write_study(datasets, tmp_path / "study")


def spooled_files(receiver: Receiver) -> list[Path]:
    return sorted((receiver.spool_dir / "files").glob("*.dcm"))


# --- storescu into the receiver -------------------------------------------------------------


def test_store_while_subscribed_delivers_every_instance_unchanged(receiver, study):
    datasets, files = study
    topic = Topic(SCU_AE, datasets[0].StudyInstanceUID)
    with client(receiver).subscribe(topic, uids(datasets)) as subscription:
        sender = threading.Thread(target=storescu, args=(receiver, files))
        sender.start()
        received = list(subscription.iter_instances(uids(datasets), inactivity_timeout=15))
        sender.join()

    assert sorted(uids(received)) == sorted(uids(datasets))
    by_uid = {ds.SOPInstanceUID: ds for ds in received}
    compressed = datasets[-1]
    assert compressed.file_meta.TransferSyntaxUID == RLELossless
    kept = by_uid[compressed.SOPInstanceUID]
    assert kept.file_meta.TransferSyntaxUID == RLELossless  # not decompressed on the way
    assert kept.PixelData == compressed.PixelData
    assert by_uid[datasets[0].SOPInstanceUID].PatientID == "RCV-PAT"


def test_instances_pushed_while_no_move_expects_them_are_refused(receiver, study):
    datasets, files = study
    result = storescu(receiver, files, SCU_AE, "-v")
    output = result.stdout + result.stderr
    assert "Received Store Response (Success)" not in output, output
    assert "Received Store Response (Unknown Status: 0x124)" in output, output  # DCMTK's words
    assert spooled_files(receiver) == []

    topic = Topic(SCU_AE, datasets[0].StudyInstanceUID)
    with client(receiver).subscribe(topic, uids(datasets)) as subscription:
        assert subscription.receive(1.0) is None  # nothing stale is replayed to a new move


def test_two_concurrent_subscribers_both_get_complete_data(receiver, study):
    datasets, files = study
    topic = Topic(SCU_AE, datasets[0].StudyInstanceUID)
    results: dict[int, list[str]] = {}

    def fetch(index: int, subscription) -> None:
        with subscription:
            results[index] = uids(subscription.iter_instances(uids(datasets), 15))

    subscriptions = [client(receiver).subscribe(topic, uids(datasets)) for _ in range(2)]
    threads = [threading.Thread(target=fetch, args=(i, s)) for i, s in enumerate(subscriptions)]
    for thread in threads:
        thread.start()
    # Each worker sent its own C-MOVE: the study is pushed twice, overlapping.
    pushes = [threading.Thread(target=storescu, args=(receiver, files)) for _ in range(2)]
    for push in pushes:
        push.start()
    for thread in threads + pushes:
        thread.join(timeout=60)

    assert sorted(results[0]) == sorted(uids(datasets))
    assert sorted(results[1]) == sorted(uids(datasets))


def test_calling_ae_not_configured_is_rejected_at_association(receiver, allowed, study):
    datasets, files = study
    topic = Topic("INTRUDER", datasets[0].StudyInstanceUID)
    with client(receiver).subscribe(topic, uids(datasets[:1])):
        result = storescu(receiver, files[:1], calling_ae="INTRUDER")
        assert result.returncode != 0
        assert "calling ae title not recogni" in (result.stdout + result.stderr).lower()
        assert spooled_files(receiver) == []

        allowed.titles.add("INTRUDER")  # configured later: accepted without a restart
        result = storescu(receiver, files[:1], calling_ae="INTRUDER")
        assert result.returncode == 0, result.stderr
        assert len(spooled_files(receiver)) == 1


def test_nobody_may_push_when_no_server_is_configured(receiver, allowed, study):
    _, files = study
    allowed.titles.clear()
    result = storescu(receiver, files[:1])
    assert "calling ae title not recogni" in (result.stdout + result.stderr).lower()
    assert spooled_files(receiver) == []


def test_success_is_answered_only_after_the_file_is_spooled(receiver, study):
    datasets, files = study
    topic = Topic(SCU_AE, datasets[0].StudyInstanceUID)
    with client(receiver).subscribe(topic, uids(datasets)):
        result = storescu(receiver, files)
        assert result.returncode == 0, result.stderr
        # The subscriber read nothing: success means the files are on disk in the spool.
        stored = spooled_files(receiver)
        assert all(path.stat().st_mode & 0o777 == 0o600 for path in stored)
        assert len(stored) == len(files)
        spooled = {ds.SOPInstanceUID: ds for ds in map(dcmread, stored)}
    # The move is over: its files leave the spool with the subscription (BYE ends it at once).
    wait_until(lambda: not spooled_files(receiver), 5, what="an empty spool")
    assert sorted(spooled) == sorted(uids(datasets))
    for original in datasets:
        assert spooled[original.SOPInstanceUID].PixelData == original.PixelData


def test_spool_failure_is_answered_with_a_failure_status(receiver, study):
    datasets, files = study
    files_dir = receiver.spool_dir / "files"
    files_dir.rename(receiver.spool_dir / "gone")
    files_dir.write_text("not a directory: every write into the spool fails")

    topic = Topic(SCU_AE, datasets[0].StudyInstanceUID)
    with client(receiver).subscribe(topic, uids(datasets)) as subscription:
        result = storescu(receiver, files[:1], SCU_AE, "-v")
        # The worker learns that ADIT's receiver, not the PACS, failed (a retriable error).
        with pytest.raises(RetriableDicomError, match="ADIT's receiver could not store instance"):
            subscription.receive(5.0)

    output = result.stdout + result.stderr
    assert "Received Store Response (Refused: OutOfResources)" in output, output
    assert "Received Store Response (Success)" not in output
    assert len(receiver.spool or ()) == 0


# --- C-MOVE through the receiver ------------------------------------------------------------


def local_for(receiver: Receiver) -> LocalConfig:
    return LocalConfig(
        calling_ae_title="ADIT_TEST",
        receiver_ae_title=receiver.ae_title,
        file_transmit_host=LOOPBACK,
        file_transmit_port=receiver.transmit_port,
        timeouts=Timeouts(connection=5, acse=10, dimse=60, network=60),
    )


@pytest.fixture
def orthanc_with_receiver(orthanc_a: OrthancInstance, receiver, allowed) -> OrthancInstance:
    orthanc_a.add_modality(receiver.ae_title, receiver.ae_title, LOOPBACK, receiver.store_port)
    allowed.titles.add(orthanc_a.ae_title)
    return orthanc_a


def study_move(orthanc: OrthancInstance, receiver: Receiver, study_uid: str):
    connector = DimseConnector(orthanc.server_config(), local_for(receiver))
    query = QueryDataset.create(QueryRetrieveLevel="STUDY", StudyInstanceUID=study_uid)
    return lambda: connector.send_c_move(query, receiver.ae_title)


def test_c_move_from_orthanc_through_the_receiver(orthanc_with_receiver, receiver):
    datasets = make_study("MOVE-PAT", series=(("CT", 5), ("MR", 3)))
    orthanc_with_receiver.upload(datasets)
    study_uid = datasets[0].StudyInstanceUID
    warnings: list[str] = []

    received = list(
        fetch_with_move(
            client(receiver),
            Topic(orthanc_with_receiver.ae_title, study_uid),
            study_move(orthanc_with_receiver, receiver, study_uid),
            uids(datasets),
            inactivity_timeout=20,
            warnings=warnings,
        )
    )

    assert sorted(uids(received)) == sorted(uids(datasets))
    compressed = {ds.SOPInstanceUID: ds for ds in received}[datasets[-1].SOPInstanceUID]
    assert compressed.file_meta.TransferSyntaxUID == RLELossless
    assert warnings == []


def c_move_operator(orthanc: OrthancInstance, receiver: Receiver) -> DicomOperator:
    """An operator that can only fetch from `orthanc` by C-MOVE through `receiver`."""
    server = orthanc.server_config(
        study_root_get_support=False,
        patient_root_get_support=False,
        dicomweb_wado_support=False,
    )
    return DicomOperator(
        server, local_for(receiver), move_fetcher=ReceiverMoveFetcher(inactivity_timeout=20)
    )


def test_operator_fetches_by_c_move_with_the_receiver_fetcher(orthanc_with_receiver, receiver):
    datasets = make_study("OPMOVE-PAT", series=(("CT", 3), ("MR", 2)))
    orthanc_with_receiver.upload(datasets)
    operator = c_move_operator(orthanc_with_receiver, receiver)

    series_uid = datasets[-1].SeriesInstanceUID
    series = list(operator.fetch_series("OPMOVE-PAT", datasets[0].StudyInstanceUID, series_uid))
    study = list(operator.fetch_study("OPMOVE-PAT", datasets[0].StudyInstanceUID))

    assert sorted(uids(series)) == sorted(
        uids(d for d in datasets if d.SeriesInstanceUID == series_uid)
    )
    assert sorted(uids(study)) == sorted(uids(datasets))


def test_c_moved_instances_are_relayed_as_received(
    orthanc_with_receiver, receiver, orthanc_b, reencoded
):
    datasets = make_study("RELAY-PAT", series=(("CT", 3), ("MR", 2)), compressed_series=True)
    orthanc_with_receiver.upload(datasets)
    source = c_move_operator(orthanc_with_receiver, receiver)
    destination = DicomOperator(orthanc_b.server_config(), local_for(receiver))
    stored = destination.upload(
        source.fetch_study("RELAY-PAT", datasets[0].StudyInstanceUID), unchanged=True
    )

    assert stored == len(datasets)
    assert reencoded == []
    assert orthanc_b.study_instance_uids(datasets[0].StudyInstanceUID) == set(uids(datasets))
    rle = next(ds.SOPInstanceUID for ds in datasets if ds.Modality == "MR")
    assert orthanc_b.instance_transfer_syntax(rle) == RLELossless


def test_two_concurrent_c_moves_of_the_same_study_both_complete(orthanc_with_receiver, receiver):
    datasets = make_study("TWICE-PAT", series=(("CT", 8), ("MR", 4)))
    orthanc_with_receiver.upload(datasets)
    study_uid = datasets[0].StudyInstanceUID
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def fetch(index: int) -> None:
        try:
            results[index] = uids(
                fetch_with_move(
                    client(receiver),
                    Topic(orthanc_with_receiver.ae_title, study_uid),
                    study_move(orthanc_with_receiver, receiver, study_uid),
                    uids(datasets),
                    inactivity_timeout=20,
                )
            )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    assert errors == []
    assert sorted(results[0]) == sorted(uids(datasets))
    assert sorted(results[1]) == sorted(uids(datasets))


def test_unknown_move_destination_is_a_permanent_error(orthanc_a, receiver, allowed):
    datasets = make_study("NODEST-PAT", series=(("CT", 2),))
    orthanc_a.upload(datasets)
    study_uid = datasets[0].StudyInstanceUID
    allowed.titles.add(orthanc_a.ae_title)
    # Orthanc does not know this receiver's AE title (no add_modality).
    with pytest.raises(DicomError) as caught:
        list(
            fetch_with_move(
                client(receiver),
                Topic(orthanc_a.ae_title, study_uid),
                study_move(orthanc_a, receiver, study_uid),
                uids(datasets),
                inactivity_timeout=10,
                settle_timeout=1,
            )
        )
    assert not isinstance(caught.value, RetriableDicomError)


def start_receiver_process(tmp_path: Path, allowed: str) -> tuple[subprocess.Popen, Receiver]:
    store_port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adit.core.dicom.receiver",
            "--ae-title",
            f"KILL{store_port}",
            "--store-port",
            str(store_port),
            "--transmit-port",
            "0",
            "--spool-dir",
            str(tmp_path / "killed-spool"),
            "--allow",
            allowed,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("READY"):
        process.kill()
        raise RuntimeError(f"receiver process did not start: {line!r}")
    _, store, transmit = line.split()
    # A stand-in with the process' addresses for the helpers above (never started itself).
    stand_in = Receiver(f"KILL{store_port}", int(store), int(transmit), tmp_path, [])
    return process, stand_in


def test_receiver_killed_mid_move_is_a_retriable_error_never_success(orthanc_a, tmp_path):
    total = 40
    datasets = make_study("KILLED-PAT", series=(("CT", total),), compressed_series=False)
    orthanc_a.upload(datasets)
    study_uid = datasets[0].StudyInstanceUID
    process, receiver = start_receiver_process(tmp_path, orthanc_a.ae_title)
    try:
        orthanc_a.add_modality(receiver.ae_title, receiver.ae_title, LOOPBACK, receiver.store_port)
        received: list[Dataset] = []
        started = time.monotonic()
        with pytest.raises(RetriableDicomError) as caught:
            for ds in fetch_with_move(
                client(receiver),
                Topic(orthanc_a.ae_title, study_uid),
                study_move(orthanc_a, receiver, study_uid),
                uids(datasets),
                inactivity_timeout=5,
                settle_timeout=2,
            ):
                received.append(ds)
                if len(received) == 3:
                    process.send_signal(signal.SIGKILL)
        elapsed = time.monotonic() - started
    finally:
        process.kill()
        process.wait()

    missing = total - len(received)
    assert missing > 0
    assert f"{missing} of {total} instances missing" in str(caught.value)
    assert elapsed < 30


# --- qrscp ------------------------------------------------------------------------------------


def test_c_move_from_qrscp_through_the_receiver(receiver, allowed, tmp_path):
    qrscp = start_qrscp(
        move_destinations={receiver.ae_title: (LOOPBACK, receiver.store_port)},
        base_dir=tmp_path / "qrscp",
    )
    try:
        allowed.titles.add(qrscp.ae_title)
        datasets = make_study("QR-MOVE-PAT", series=(("CT", 4), ("MR", 2)))
        qrscp.upload(datasets)
        study_uid = datasets[0].StudyInstanceUID
        query = QueryDataset.create(
            QueryRetrieveLevel="STUDY", PatientID="QR-MOVE-PAT", StudyInstanceUID=study_uid
        )
        results: dict[int, list[str]] = {}

        def fetch(index: int) -> None:
            results[index] = uids(
                fetch_with_move(
                    client(receiver),
                    Topic(qrscp.ae_title, study_uid),
                    lambda: DimseConnector(qrscp.server_config(), local_for(receiver)).send_c_move(
                        query, receiver.ae_title
                    ),
                    uids(datasets),
                    inactivity_timeout=20,
                )
            )

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        qrscp.stop()

    assert sorted(results[0]) == sorted(uids(datasets))
    assert sorted(results[1]) == sorted(uids(datasets))


# --- manage.py receiver -----------------------------------------------------------------------


def _database_url(settings_dict: dict) -> str:
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_manage_receiver_admits_configured_servers_and_stops_on_sigterm(tmp_path, study):
    from django.apps import apps
    from django.db import connection

    server_model = apps.get_model("core", "DicomServer")
    server_model.objects.create(name="Pusher", ae_title=SCU_AE, host=LOOPBACK, port=104)
    store_port, transmit_port = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "adit.settings.test",
        "DATABASE_URL": _database_url(connection.settings_dict),
        "ADIT_DATA_DIR": str(tmp_path / "data"),
        "RECEIVER_AE_TITLE": "MANAGED_RECV",
        "STORE_SCP_PORT": str(store_port),
        "FILE_TRANSMIT_PORT": str(transmit_port),
        "PYTHONUNBUFFERED": "1",
    }
    manage = Path(__file__).resolve().parents[4] / "manage.py"
    process = subprocess.Popen(
        [sys.executable, str(manage), "receiver", "--host", LOOPBACK],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"C-STORE port {store_port}" in line, line
        stand_in = Receiver("MANAGED_RECV", store_port, transmit_port, tmp_path, [])
        datasets, files = study
        topic = Topic(SCU_AE, datasets[0].StudyInstanceUID)
        # The command requires the file-transmit secret (same settings and environment here).
        client = FileTransmitClient(LOOPBACK, transmit_port, secret=file_transmit_secret())
        with client.subscribe(topic, uids(datasets)) as subscription:
            accepted = storescu(stand_in, files)
            rejected = storescu(stand_in, files[:1], "INTRUDER")
            spool = tmp_path / "data" / "receiver-spool" / "files"
            spooled = len(list(spool.glob("*.dcm")))  # not taken by the worker yet
            received = list(subscription.iter_instances(uids(datasets), 10))

        assert accepted.returncode == 0, accepted.stderr
        assert "calling ae title not recogni" in (rejected.stdout + rejected.stderr).lower()
        assert spooled == len(files)  # while the worker had not taken them
        assert sorted(uids(received)) == sorted(uids(datasets))
        # Taken by the worker (and the move is over): the files left the spool.
        wait_until(lambda: not list(spool.glob("*.dcm")), 5, what="an empty spool")

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
        process.wait()


def test_c_echo_is_answered_for_configured_servers_only(receiver, allowed):
    echoscu = require_binary("echoscu")

    def echo(calling_ae: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [echoscu, "-aet", calling_ae, "-aec", receiver.ae_title, LOOPBACK,
             str(receiver.store_port)],
            capture_output=True, text=True, timeout=30, env=peer_environment(),
        )  # fmt: skip

    assert echo(SCU_AE).returncode == 0
    refused = echo("INTRUDER")
    assert refused.returncode != 0
    assert "calling ae title not recogni" in (refused.stdout + refused.stderr).lower()


def test_contexts_other_than_storage_and_verification_are_refused(receiver):
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        CTImageStorage,
        StudyRootQueryRetrieveInformationModelFind,
        Verification,
    )

    ae = AE(ae_title=SCU_AE)
    for sop_class in (Verification, CTImageStorage, StudyRootQueryRetrieveInformationModelFind):
        ae.add_requested_context(sop_class)
    assoc = ae.associate(LOOPBACK, receiver.store_port, ae_title=receiver.ae_title)
    try:
        assert assoc.is_established
        accepted = {str(context.abstract_syntax) for context in assoc.accepted_contexts}
        assert accepted == {str(Verification), str(CTImageStorage)}
        assert [str(c.abstract_syntax) for c in assoc.rejected_contexts] == [
            str(StudyRootQueryRetrieveInformationModelFind)
        ]
        status = assoc.send_c_echo()
        assert status is not None and status.Status == 0x0000
    finally:
        assoc.release()


def test_stop_ends_an_idle_association_at_once(tmp_path, allowed):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    port = free_port()
    receiver = Receiver(f"RECV{port}", port, 0, tmp_path / "spool", allowed, host=LOOPBACK)
    receiver.start()
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, port, ae_title=receiver.ae_title)
    assert assoc.is_established
    started = time.monotonic()
    receiver.stop()
    assert time.monotonic() - started < 5
    wait_until(lambda: not assoc.is_established, 5, raising=False)
    assert assoc.is_aborted  # the PACS learns at once that the association is gone


# --- forged and broken pushes ---------------------------------------------------------------


def push(
    receiver: Receiver,
    datasets: list[Dataset],
    calling_ae: str,
    called_ae: str | None = None,
    from_address: str = LOOPBACK,
) -> list[int] | None:
    """Pushes like any PACS would (pynetdicom's SCU); None when the association is rejected."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    for sop_class in {ds.SOPClassUID for ds in datasets}:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(
        LOOPBACK,
        receiver.store_port,
        ae_title=called_ae or receiver.ae_title,
        bind_address=(from_address, 0),
    )
    if not assoc.is_established:
        return None
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def forged_copies(datasets: list[Dataset]) -> list[Dataset]:
    copies = []
    for ds in datasets:
        forged = copy.deepcopy(ds)
        forged.PatientName = "INJECTED^BY^ATTACKER"
        copies.append(forged)
    return copies


def test_forged_pushes_never_reach_a_move(orthanc_a: OrthancInstance, tmp_path):
    datasets = make_study("FORGE-PAT", series=(("CT", 3),), compressed_series=False)
    other_study = make_study("FORGE-OTHER", series=(("CT", 1),), compressed_series=False)
    orthanc_a.upload(datasets)
    port = free_port()
    # The PACS may push only from its own host (127.0.0.1); the forger also uses 127.0.0.2.
    receiver = Receiver(
        f"RECV{port}",
        port,
        0,
        tmp_path / "spool",
        {orthanc_a.ae_title: [LOOPBACK]},
        host="0.0.0.0",
        heartbeat_interval=1,
    )
    receiver.start()
    try:
        orthanc_a.add_modality(receiver.ae_title, receiver.ae_title, LOOPBACK, receiver.store_port)
        forged = forged_copies(datasets)
        study_uid = str(datasets[0].StudyInstanceUID)
        pacs = orthanc_a.ae_title
        # Before any move: the PACS's AE title from the PACS's host is refused all the same.
        assert push(receiver, forged, pacs) == [0x0124] * len(forged)
        # While a move of the study is in flight:
        topic = Topic(pacs, study_uid)
        with client(receiver).subscribe(topic, uids(datasets)):
            assert push(receiver, forged, pacs, from_address="127.0.0.2") is None  # other host
            assert push(receiver, forged, "NOT_A_PACS") is None  # unknown AE title
            assert push(receiver, forged, pacs, called_ae="SOMEONE_ELSE") is None  # wrong called
            assert push(receiver, other_study, pacs) == [0x0124]  # a study nobody moves
        assert spooled_files(receiver) == []

        operator = c_move_operator(orthanc_a, receiver)
        fetched = list(operator.fetch_study("FORGE-PAT", study_uid))
    finally:
        receiver.stop()

    assert sorted(uids(fetched)) == sorted(uids(datasets))
    assert {str(ds.PatientName) for ds in fetched} == {str(datasets[0].PatientName)}


def test_a_truncated_data_set_gets_a_failure_status_and_nothing_is_spooled(receiver, study):
    from pynetdicom import build_context

    from adit.core.dicom.dimse import _encode_for

    datasets, _ = study
    ds = datasets[0]
    encoded = _encode_for(ds, ExplicitVRLittleEndian)
    topic = Topic(SCU_AE, str(ds.StudyInstanceUID))
    statuses = []
    with client(receiver).subscribe(topic, uids(datasets)) as subscription:
        assoc = association.Association.request(
            LOOPBACK,
            receiver.store_port,
            calling_ae_title=SCU_AE,
            called_ae_title=receiver.ae_title,
            contexts=[build_context(ds.SOPClassUID, ExplicitVRLittleEndian)],
            timeouts=Timeouts(connection=5, acse=10, dimse=30, network=30),
        )
        try:
            context = assoc.context_for(str(ds.SOPClassUID), ExplicitVRLittleEndian)
            assert context is not None
            # Cut in the middle of the header and in the middle of the pixel data.
            for message_id, cut in enumerate((len(encoded) // 3, len(encoded) - 7), start=1):
                assoc.send_message(
                    context.context_id,
                    commands.c_store_rq(message_id, str(ds.SOPClassUID), ds.SOPInstanceUID),
                    encoded[:cut],
                )
                statuses.append(assoc.receive_message().status)
        finally:
            assoc.release()
        assert subscription.receive(0.5) is None
    assert statuses == [0xC210, 0xC210]
    assert spooled_files(receiver) == []


def test_an_unwritable_spool_fails_the_move_retriably_naming_adits_receiver(
    orthanc_with_receiver, receiver
):
    datasets = make_study("NOSPOOL-PAT", series=(("CT", 2),))
    orthanc_with_receiver.upload(datasets)
    files_dir = receiver.spool_dir / "files"
    files_dir.rename(receiver.spool_dir / "gone")
    files_dir.write_text("not a directory: every write into the spool fails")
    operator = c_move_operator(orthanc_with_receiver, receiver)

    with pytest.raises(RetriableDicomError, match="ADIT's receiver could not store instance"):
        list(operator.fetch_study("NOSPOOL-PAT", str(datasets[0].StudyInstanceUID)))


# --- hostile peers (raw bytes) --------------------------------------------------------------


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def read_until_closed(sock, timeout: float) -> bytes | None:
    """What the peer sent before it closed the connection; None if still open after `timeout`."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def echo_works(receiver: Receiver) -> bool:
    echoscu = require_binary("echoscu")
    result = subprocess.run(
        [echoscu, "-aet", SCU_AE, "-aec", receiver.ae_title, LOOPBACK, str(receiver.store_port)],
        capture_output=True,
        text=True,
        timeout=30,
        env=peer_environment(),
    )
    return result.returncode == 0


def test_pdus_announcing_a_gigabyte_are_aborted_without_reading_them(receiver):
    import socket
    import struct

    before = rss_bytes()
    answers = []
    for _ in range(3):
        with socket.create_connection((LOOPBACK, receiver.store_port)) as sock:
            # A-ASSOCIATE-RQ announcing 1 GiB, then a trickle of bytes.
            sock.sendall(struct.pack(">BBI", 0x01, 0, 1024**3) + b"\x00" * 1000)
            answers.append(read_until_closed(sock, 5))
    grown = rss_bytes() - before

    # Each got A-ABORT (source 2: service provider, reason 6: invalid PDU parameter value).
    assert answers == [bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6))] * 3
    assert grown < 64 * 1024**2, f"the receiver grew by {grown / 1024**2:.0f} MB"
    assert echo_works(receiver)


def test_an_oversized_p_data_tf_is_answered_with_an_abort(receiver):
    import struct

    from pynetdicom import build_context
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    assoc = association.Association.request(
        LOOPBACK,
        receiver.store_port,
        calling_ae_title=SCU_AE,
        called_ae_title=receiver.ae_title,
        contexts=[build_context(Verification, ExplicitVRLittleEndian)],
        timeouts=Timeouts(connection=5, acse=10, dimse=30, network=30),
    )
    sock = assoc._socket
    try:
        # A P-DATA-TF one byte longer than the 1 MiB maximum length the receiver announced.
        length = pdus.MAX_PDU_RECEIVE + 1
        sock.sendall(struct.pack(">BBI", 0x04, 0, length) + b"\x00" * 4096)
        answer = read_until_closed(sock, 5)
    finally:
        assoc.close()
    assert answer == bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6))
    assert echo_works(receiver)


def test_a_peer_trickling_its_request_is_cut_off_at_the_artim_deadline(receiver, monkeypatch):
    import socket

    from adit.core.dicom import receiver as receiver_module

    monkeypatch.setattr(
        receiver_module, "TIMEOUTS", Timeouts(connection=5, acse=1, dimse=30, network=30)
    )
    with socket.create_connection((LOOPBACK, receiver.store_port)) as sock:
        sock.sendall(b"\x01\x00\x00\x00\x00\xff")  # A-ASSOCIATE-RQ of 255 bytes, never sent
        started = time.monotonic()
        closed = False
        for _ in range(20):  # a byte every 0.25 s would beat a per-read timeout of 1 s
            time.sleep(0.25)
            try:
                sock.sendall(b"\x00")
            except OSError:
                closed = True
                break
            if time.monotonic() - started > 4:
                break
        if not closed:
            closed = read_until_closed(sock, 1) == b""
        elapsed = time.monotonic() - started
    assert closed
    assert elapsed < 3, f"held for {elapsed:.1f} s"


def test_a_flood_of_idle_connections_cannot_lock_the_receiver_out(receiver):
    import socket

    from adit.core.dicom import receiver as receiver_module

    limit = receiver_module.MAX_PENDING_NEGOTIATIONS_PER_HOST
    threads_before = threading.active_count()
    idle = [socket.create_connection((LOOPBACK, receiver.store_port)) for _ in range(limit + 4)]
    try:
        # The connections beyond the per-host limit were closed at once, and the idle ones
        # hold no thread: requests are read by one thread for all connections. (The receiver
        # accepts in order: once the last ones are closed, all were taken.)
        closed = sum(1 for sock in idle[limit:] if read_until_closed(sock, 1) == b"")
        assert closed == 4
        assert threading.active_count() <= threads_before
        # Another host is not locked out by this one (127.0.0.2 is loopback too).
        other = socket.create_connection(
            (LOOPBACK, receiver.store_port), source_address=("127.0.0.2", 0)
        )
        try:
            other.settimeout(0.5)
            with pytest.raises(TimeoutError):  # still open, waiting for its request
                other.recv(1)
        finally:
            other.close()
    finally:
        for sock in idle:
            sock.close()
    # The receiver notices the closed idle connections and takes new ones again.
    wait_until(lambda: echo_works(receiver), 10, what="a C-ECHO after the flood", interval=0.1)


# --- completeness: SOP classes outside the default list -------------------------------------

# A standard storage class that is not among the contexts C-GET proposes by default.
OPHTHALMIC_TOMOGRAPHY = "1.2.840.10008.5.1.4.1.1.77.1.5.4"
# A private storage class no default list can know.
PRIVATE_STORAGE = "1.3.6.1.4.1.9590.100.1.2.987654321"


def study_with_classes(patient_id: str, *sop_classes: str) -> list[Dataset]:
    datasets = make_study(patient_id, series=(("CT", 3),), compressed_series=False)
    for ds, sop_class in zip(datasets[1:], sop_classes, strict=False):
        ds.SOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPClassUID = sop_class
    return datasets


def test_c_get_fetches_instances_of_sop_classes_outside_the_default_list(orthanc_a):
    from adit.core.dicom.dimse import storage_contexts

    default_classes = {str(context.abstract_syntax) for context in storage_contexts()}
    assert OPHTHALMIC_TOMOGRAPHY not in default_classes
    datasets = study_with_classes("RARE-GET", OPHTHALMIC_TOMOGRAPHY, PRIVATE_STORAGE)
    orthanc_a.upload(datasets)
    local = LocalConfig(
        calling_ae_title="ADIT_TEST", timeouts=Timeouts(connection=5, acse=10, dimse=60)
    )
    # C-GET only: otherwise a class C-GET cannot bring would be moved or WADO'd instead.
    get_only = orthanc_a.server_config(
        study_root_move_support=False, patient_root_move_support=False, dicomweb_root_url=""
    )
    operator = DicomOperator(get_only, local)

    try:
        fetched = list(operator.fetch_study("RARE-GET", str(datasets[0].StudyInstanceUID)))
    except DicomError as error:  # allowed only when it names the class it cannot bring
        assert PRIVATE_STORAGE in str(error), error
        assert OPHTHALMIC_TOMOGRAPHY not in str(error), error
        return
    assert sorted(uids(fetched)) == sorted(uids(datasets))
    assert {str(ds.SOPClassUID) for ds in fetched} >= {OPHTHALMIC_TOMOGRAPHY, PRIVATE_STORAGE}


def test_c_move_fetches_instances_of_rare_storage_classes(orthanc_with_receiver, receiver):
    datasets = study_with_classes("RARE-MOVE", OPHTHALMIC_TOMOGRAPHY)
    orthanc_with_receiver.upload(datasets)
    operator = c_move_operator(orthanc_with_receiver, receiver)

    fetched = list(operator.fetch_study("RARE-MOVE", str(datasets[0].StudyInstanceUID)))

    assert sorted(uids(fetched)) == sorted(uids(datasets))


def test_an_instance_c_get_cannot_deliver_fails_the_fetch_naming_its_sop_class(
    orthanc_a, monkeypatch
):
    from adit.core.dicom import dimse

    datasets = study_with_classes("LOST-GET", OPHTHALMIC_TOMOGRAPHY)
    orthanc_a.upload(datasets)
    # As if the association could not carry the class (e.g. a peer that refused its context).
    original = dimse.storage_contexts_for
    monkeypatch.setattr(
        dimse,
        "storage_contexts_for",
        lambda classes, reserved=0: original(
            [c for c in classes if c != OPHTHALMIC_TOMOGRAPHY], reserved
        ),
    )
    local = LocalConfig(
        calling_ae_title="ADIT_TEST", timeouts=Timeouts(connection=5, acse=10, dimse=60)
    )
    get_only = orthanc_a.server_config(
        study_root_move_support=False, patient_root_move_support=False, dicomweb_root_url=""
    )
    operator = DicomOperator(get_only, local)

    with pytest.raises(DicomError) as caught:
        list(operator.fetch_study("LOST-GET", str(datasets[0].StudyInstanceUID)))
    message = str(caught.value)
    # Named before anything is asked for: no half-fetched study, and C-MOVE may do it instead.
    assert "cannot be retrieved completely with C-GET" in message
    assert OPHTHALMIC_TOMOGRAPHY in message and "Ophthalmic Tomography" in message


def test_a_receiver_that_cannot_look_up_its_peers_rejects_transiently(tmp_path):
    """ADIT's database being down means "try again later", never "you are not known"."""
    from pynetdicom import build_context
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    def database_down():
        raise ConnectionError("the database is down")

    port = free_port()
    with Receiver(f"RECV{port}", port, 0, tmp_path / "spool", database_down, host=LOOPBACK):
        with pytest.raises(association.AssociationRejected) as rejected:
            association.Association.request(
                LOOPBACK,
                port,
                calling_ae_title=SCU_AE,
                called_ae_title=f"RECV{port}",
                contexts=[build_context(Verification)],
                timeouts=Timeouts(connection=5, acse=5, dimse=5, network=5),
            )
    assert (rejected.value.result, rejected.value.source) == (2, 1)
    assert not rejected.value.is_permanent
