"""File transmit protocol: framing, spool, fan-out, replay and resume (no DICOM network)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from adit.core.dicom.errors import RetriableDicomError
from adit.core.dicom.file_transmit import (
    MAGIC,
    PROTOCOL_VERSION,
    FileTransmitClient,
    FileTransmitServer,
    MessageType,
    ProtocolError,
    ReceivedFile,
    Spool,
    Subscription,
    Topic,
    decode_prefix,
    encode_frame,
    read_frame,
)
from adit.core.dicom.file_transmit.protocol import recv_part10
from adit.core.dicom.testing.peers import dataset_to_bytes
from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing import wait_until

AE = "PACS_1\\X"  # underscore and backslash must not confuse anything


def _frame_over_socket(data: bytes):
    left, right = socket.socketpair()
    with left, right:
        left.sendall(data)
        left.shutdown(socket.SHUT_WR)
        return read_frame(right)


# --- framing --------------------------------------------------------------------------------


def test_frame_round_trip_with_payload():
    frame = _frame_over_socket(encode_frame(MessageType.FILE, {"seq": 7, "x": "ü"}, b"\x00DICM"))
    assert frame.type == MessageType.FILE
    assert frame.header == {"seq": 7, "x": "ü"}
    assert frame.payload == b"\x00DICM"


def test_frame_without_payload():
    frame = _frame_over_socket(encode_frame(MessageType.PING, {}))
    assert (frame.type, frame.header, frame.payload) == (MessageType.PING, {}, b"")


def test_bad_magic_is_rejected():
    data = encode_frame(MessageType.PING, {}).replace(MAGIC, b"HTTP", 1)
    with pytest.raises(ProtocolError, match="bad frame magic"):
        _frame_over_socket(data)


def test_unknown_message_type_is_rejected():
    with pytest.raises(ProtocolError, match="unknown message type 99"):
        decode_prefix(struct.pack(">4sBIQ", MAGIC, 99, 2, 0))


def test_oversized_header_is_rejected():
    with pytest.raises(ProtocolError, match="header size"):
        decode_prefix(struct.pack(">4sBIQ", MAGIC, int(MessageType.ACK), 10**7, 0))


def test_payload_only_allowed_on_file_frames():
    with pytest.raises(ProtocolError, match="ACK frame must not carry a payload"):
        decode_prefix(struct.pack(">4sBIQ", MAGIC, int(MessageType.ACK), 2, 5))


def test_header_must_be_a_json_object():
    prefix = struct.pack(">4sBIQ", MAGIC, int(MessageType.ACK), 2, 0)
    with pytest.raises(ProtocolError, match="JSON object"):
        _frame_over_socket(prefix + b"[]")


def test_truncated_frame_is_an_error_not_a_clean_close():
    data = encode_frame(MessageType.FILE, {"seq": 1}, b"x" * 100)[:-10]
    with pytest.raises(ConnectionError, match="middle of a frame"):
        _frame_over_socket(data)


@pytest.mark.parametrize("part10", [True, False])
def test_a_file_payload_is_read_as_part10_header_and_data_set(part10):
    # The worker reads the data set into its own bytes, ready to be relayed without a copy;
    # anything that is not Part-10 arrives whole and unsplit, never half taken for a header.
    ds = make_study("FT-SPLIT", series=(("CT", 1),))[0]
    payload = dataset_to_bytes(ds) if part10 else b"no DICOM here" * 20
    left, right = socket.socketpair()
    with left, right:
        left.sendall(payload)
        head, body = recv_part10(right, len(payload))
    assert head + body == payload
    received = ReceivedFile.from_part10(payload, transfer_syntax_uid=ExplicitVRLittleEndian)
    if part10:
        assert body == received.encoded_dataset() == encoded_dataset(ds)
        assert (received.head, received.body) == (head, body)
    else:
        assert received.encoded_dataset() is None


def test_topic_validation():
    assert Topic(" PACS_1 ", "1.2.3").calling_ae_title == "PACS_1"
    with pytest.raises(ValueError, match="calling AE title"):
        Topic("", "1.2.3")
    with pytest.raises(ValueError, match="calling AE title"):
        Topic("A" * 17, "1.2.3")
    with pytest.raises(ValueError, match="not a valid StudyInstanceUID"):
        Topic("PACS", "1." * 40)
    with pytest.raises(ValueError, match="not a valid StudyInstanceUID"):
        Topic("PACS", "1.2\\3.4")
    with pytest.raises(ValueError, match="topic needs string fields"):
        Topic.from_json({"calling_ae_title": "PACS"})


# --- spool ----------------------------------------------------------------------------------


def _add(spool: Spool, topic: Topic, ds: Dataset):
    return spool.add(
        topic,
        encoded_dataset(ds),
        sop_instance_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
        series_instance_uid=ds.SeriesInstanceUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
    )


def encoded_dataset(ds: Dataset) -> bytes:
    """The data set's bytes as a C-STORE carries them (Part-10 file without its meta)."""
    return ReceivedFile.from_part10(dataset_to_bytes(ds)).encoded_dataset() or b""


@pytest.fixture
def study() -> list[Dataset]:
    return make_study("FT-PAT", series=(("CT", 4), ("MR", 2)))


def test_spool_survives_a_restart_with_a_new_epoch(tmp_path: Path, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    spool = Spool(tmp_path)
    for ds in study[:3]:
        _add(spool, topic, ds)

    reloaded = Spool(tmp_path)

    assert reloaded.epoch != spool.epoch
    # Everything a subscription needs comes back from the files themselves (no metadata files).
    assert [
        (e.topic, e.sop_instance_uid, e.sop_class_uid, e.series_instance_uid, e.transfer_syntax_uid)
        for e in reloaded.entries(topic)
    ] == [
        (
            topic,
            ds.SOPInstanceUID,
            ds.SOPClassUID,
            ds.SeriesInstanceUID,
            ds.file_meta.TransferSyntaxUID,
        )
        for ds in study[:3]
    ]
    assert sorted(path.suffix for path in (tmp_path / "files").iterdir()) == [".dcm"] * 3


def test_a_spooled_file_is_the_received_data_set_as_part10(tmp_path: Path, study):
    ds = study[-1]  # RLE Lossless: the received bytes are kept in their transfer syntax
    entry = _add(Spool(tmp_path), Topic("PACS_1", ds.StudyInstanceUID), ds)

    assert entry.path.stat().st_mode & 0o777 == 0o600
    spooled = dcmread(entry.path)
    assert spooled.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert spooled.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert spooled.file_meta.SourceApplicationEntityTitle == "PACS_1"
    assert spooled.PixelData == ds.PixelData
    assert entry.path.read_bytes().endswith(encoded_dataset(ds))


def test_a_torn_file_left_by_a_crash_is_dropped_on_reload(tmp_path: Path, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    spool = Spool(tmp_path)
    whole, torn = _add(spool, topic, study[0]), _add(spool, topic, study[1])
    # Without fsync a machine crash may leave a file shorter than written.
    torn.path.write_bytes(torn.path.read_bytes()[:-100])
    foreign = tmp_path / "files" / "junk.dcm"
    foreign.write_bytes(b"junk")

    reloaded = Spool(tmp_path)

    assert [e.sop_instance_uid for e in reloaded.entries(topic)] == [whole.sop_instance_uid]
    assert not torn.path.exists()
    assert not foreign.exists()


def test_spool_expiry_removes_files(tmp_path: Path, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    spool = Spool(tmp_path, retention=60)
    entry = _add(spool, topic, study[0])
    assert spool.expire() == 0
    assert spool.expire(now=time.time() + 61) == 1
    assert not entry.path.exists()
    assert not list((tmp_path / "files").iterdir())
    assert spool.next_entry(topic, 0) == (None, 0)


def test_failed_write_publishes_nothing(tmp_path: Path, study, monkeypatch):
    topic = Topic(AE, study[0].StudyInstanceUID)
    spool = Spool(tmp_path)
    written = []

    def disk_full_after_the_header(descriptor, data):
        if written:
            raise OSError(28, "No space left on device")
        written.append(len(data))
        return real_write(descriptor, data)

    real_write = os.write
    monkeypatch.setattr(os, "write", disk_full_after_the_header)
    with pytest.raises(OSError, match="No space left"):
        _add(spool, topic, study[0])
    monkeypatch.undo()
    assert written  # the file was begun, then removed
    assert len(spool) == 0
    assert not list((tmp_path / "files").iterdir())


# --- server and client ------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileTransmitServer]:
    transmit = FileTransmitServer(Spool(tmp_path / "spool"), "127.0.0.1", 0, heartbeat_interval=0.5)
    transmit.start()
    try:
        yield transmit
    finally:
        transmit.stop()


def _client(server: FileTransmitServer) -> FileTransmitClient:
    return FileTransmitClient("127.0.0.1", server.port, connect_timeout=2)


def _uids(datasets) -> list[str]:
    return [ds.SOPInstanceUID for ds in datasets]


def test_a_new_subscription_gets_only_files_spooled_after_it_began(server, study):
    # Files of an earlier move of the study (or forged ones) must never reach a new move.
    topic = Topic(AE, study[0].StudyInstanceUID)
    for ds in study[:4]:
        _add(server.spool, topic, ds)

    with _client(server).subscribe(topic, _uids(study)) as subscription:
        # Files go out in spool order: had the old ones been sent, they would come first.
        _add(server.spool, topic, study[4])
        first = subscription.receive(5)
        assert first is not None and first.sop_instance_uid == study[4].SOPInstanceUID
        threading.Timer(0.3, lambda: [_add(server.spool, topic, ds) for ds in study]).start()
        received = list(subscription.iter_instances(inactivity_timeout=5))

    assert _uids(received) == _uids(study)
    assert received[-1].file_meta.TransferSyntaxUID == study[-1].file_meta.TransferSyntaxUID
    assert received[-1].PixelData == study[-1].PixelData


def test_a_subscription_gets_only_the_instances_it_expects(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    # The last file of the study is expected too: files go out in spool order, so when it
    # arrives right after the first two, the unexpected ones in between were passed over.
    wanted = [*study[:2], study[-1]]
    with _client(server).subscribe(topic, _uids(wanted)) as subscription:
        for ds in study:
            _add(server.spool, topic, ds)
        received = [subscription.receive(5) for _ in wanted]
    assert [file.sop_instance_uid for file in received if file] == _uids(wanted)


def test_the_receiver_accepts_only_what_a_live_subscription_expects(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    other_topic = Topic("OTHER_PACS", study[0].StudyInstanceUID)
    uid, unlisted = study[0].SOPInstanceUID, study[1].SOPInstanceUID
    assert not server.expectations.expects(topic, uid)  # before the move

    subscription = _client(server).subscribe(topic, [uid])
    assert server.expectations.expects(topic, uid)
    assert not server.expectations.expects(topic, unlisted)
    assert not server.expectations.expects(other_topic, uid)

    subscription.close()  # the move is over: BYE ends the expectation at once
    wait_until(lambda: not server.expectations.expects(topic, uid), what="the expectation ended")


def test_a_dropped_subscription_keeps_its_expectation_while_it_reconnects(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    uid = study[0].SOPInstanceUID
    subscription = _client(server).subscribe(topic, [uid])
    assert subscription._sock is not None
    subscription._sock.close()  # no BYE: a network failure
    subscription._sock = None
    wait_until(
        lambda: server.expectations._live(topic)[0].ends_at is not None,
        what="the grace period of the dropped subscription",
    )
    assert server.expectations.expects(topic, uid)  # still accepted during the grace period
    expectation = server.expectations._live(topic)[0]
    expectation.ends_at = time.monotonic() - 1  # the grace period has passed
    assert not server.expectations.expects(topic, uid)


def test_a_store_failure_at_the_receiver_fails_the_subscription_naming_the_receiver(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    uid = study[0].SOPInstanceUID
    with _client(server).subscribe(topic, [uid]) as subscription:
        server.expectations.report_store_failure(topic, uid, "the spool could not be written")
        with pytest.raises(RetriableDicomError, match="ADIT's receiver could not store instance"):
            subscription.receive(5)


def test_every_subscriber_of_a_topic_gets_every_file(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    other = make_study("FT-OTHER", series=(("CT", 2),))
    results: dict[str, list[str]] = {}

    def consume(name: str, subscription) -> None:
        with subscription:
            results[name] = _uids(subscription.iter_instances(_uids(study), inactivity_timeout=5))

    subscriptions = {
        name: _client(server).subscribe(topic, _uids(study)) for name in ("one", "two")
    }
    threads = [threading.Thread(target=consume, args=item) for item in subscriptions.items()]
    for thread in threads:
        thread.start()
    for ds in other:  # another study: must not reach these subscribers
        _add(server.spool, Topic(AE, ds.StudyInstanceUID), ds)
    for ds in study:
        _add(server.spool, topic, ds)
    for thread in threads:
        thread.join(timeout=20)

    assert sorted(results["one"]) == sorted(_uids(study))
    assert sorted(results["two"]) == sorted(_uids(study))
    # The server counts an acknowledgement when it reads it, a moment after the client sent it.
    wait_until(lambda: server.acknowledged >= 2 * len(study), what="every ACK read")


def test_subscription_resumes_after_a_lost_connection(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    subscription = _client(server).subscribe(topic, _uids(study))
    for ds in study[:2]:
        _add(server.spool, topic, ds)
    with subscription:
        first = [subscription.receive(5), subscription.receive(5)]
        assert [f.sop_instance_uid for f in first if f] == _uids(study[:2])
        # The connection breaks; files arrive while the worker is disconnected.
        assert subscription._sock is not None
        subscription._sock.shutdown(socket.SHUT_RDWR)
        for ds in study[2:]:
            _add(server.spool, topic, ds)
        rest = []
        while len(rest) < len(study) - 2:
            received = subscription.receive(5)
            assert received is not None, subscription.last_error
            rest.append(received.sop_instance_uid)

    assert subscription.reconnects == 1
    # Resumed after the last seen sequence number: no file twice, none missing.
    assert rest == _uids(study[2:])


def test_incomplete_delivery_raises_with_the_missing_count(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    with _client(server).subscribe(topic, _uids(study)) as subscription:
        for ds in study[:4]:
            _add(server.spool, topic, ds)
        received = []
        with pytest.raises(RetriableDicomError, match="2 of 6 instances missing"):
            for ds in subscription.iter_instances(_uids(study), inactivity_timeout=1):
                received.append(ds)
    assert len(received) == 4


def test_invalid_subscription_gets_a_clear_error(server):
    sock = socket.create_connection(("127.0.0.1", server.port))
    with sock:
        sock.sendall(
            encode_frame(
                MessageType.SUBSCRIBE,
                {
                    "version": PROTOCOL_VERSION,
                    "topic": {"calling_ae_title": "X", "study_instance_uid": ""},
                },
            )
        )
        reply = read_frame(sock)
    assert reply.type == MessageType.ERROR
    assert "not a valid StudyInstanceUID" in reply.header["message"]


def test_unsupported_version_is_refused(server):
    sock = socket.create_connection(("127.0.0.1", server.port))
    with sock:
        sock.sendall(encode_frame(MessageType.SUBSCRIBE, {"version": 99}))
        reply = read_frame(sock)
    assert reply.type == MessageType.ERROR
    assert "unsupported protocol version 99" in reply.header["message"]


def test_garbage_does_not_harm_the_server(server, study):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed by the server
    topic = Topic(AE, study[0].StudyInstanceUID)
    with _client(server).subscribe(topic, _uids(study[:1])) as subscription:
        _add(server.spool, topic, study[0])
        assert _uids(subscription.iter_instances(_uids(study[:1]), 5)) == _uids(study[:1])


def test_subscribe_to_an_unreachable_receiver_is_retriable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RetriableDicomError, match=f"127.0.0.1:{port}"):
        FileTransmitClient("127.0.0.1", port, connect_timeout=1).subscribe(
            Topic(AE, "1.2.3"), ["1.2.3.4"]
        )


def test_heartbeats_keep_an_idle_subscription_alive(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    with _client(server).subscribe(topic, _uids(study)) as subscription:
        assert subscription.receive(2.0) is None  # 4 heartbeat intervals of silence
        assert subscription.connected
        assert subscription.reconnects == 0
        _add(server.spool, topic, study[0])
        received = subscription.receive(5)
        assert received is not None and received.sop_instance_uid == study[0].SOPInstanceUID


def test_subscriber_survives_a_receiver_restart(tmp_path: Path, study):
    spool_dir = tmp_path / "restart-spool"
    first = FileTransmitServer(Spool(spool_dir), "127.0.0.1", 0, heartbeat_interval=0.5)
    first.start()
    port = first.port
    topic = Topic(AE, study[0].StudyInstanceUID)
    client = FileTransmitClient("127.0.0.1", port, connect_timeout=2)
    second: FileTransmitServer | None = None
    received: list[str] = []
    try:
        with client.subscribe(topic, _uids(study)) as sub:
            for ds in study[:3]:
                _add(first.spool, topic, ds)
            for ds in sub.iter_instances(_uids(study), inactivity_timeout=10):
                received.append(ds.SOPInstanceUID)
                if len(received) == 2:
                    first.stop()
                    # A new receiver process: it reloads the spool (new epoch) and receives
                    # the rest of the study.
                    second = FileTransmitServer(Spool(spool_dir), "127.0.0.1", port, 0.5)
                    second.start()
                    for rest in study[3:]:
                        _add(second.spool, topic, rest)
            assert sub.reconnects == 1
    finally:
        first.stop()
        if second is not None:
            second.stop()

    assert sorted(received) == sorted(_uids(study))  # complete, each instance once


def test_a_stopping_receiver_leaves_what_it_had_not_sent_for_its_next_run(tmp_path: Path, study):
    # A window of one: the first file is sent and waits for its acknowledgement, the others
    # stay in the spool when the receiver stops. Stopping is not the end of the move: the
    # next run reloads them and the resumed subscription gets every instance.
    spool_dir = tmp_path / "restart-spool"
    first = FileTransmitServer(Spool(spool_dir), "127.0.0.1", 0, heartbeat_interval=0.5)
    first.start()
    port = first.port
    topic = Topic(AE, study[0].StudyInstanceUID)
    second: FileTransmitServer | None = None
    try:
        client = FileTransmitClient("127.0.0.1", port, connect_timeout=2)
        with client.subscribe(topic, _uids(study), window=1) as sub:
            for ds in study:
                _add(first.spool, topic, ds)
            first.stop()
            assert len(list((spool_dir / "files").iterdir())) == len(study)
            second = FileTransmitServer(Spool(spool_dir), "127.0.0.1", port, 0.5)
            second.start()
            assert len(second.spool) == len(study)
            received = list(sub.iter_instances(inactivity_timeout=10))
            assert sub.reconnects == 1
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert sorted(_uids(received)) == sorted(_uids(study))


def test_with_a_shared_secret_only_subscribers_that_know_it_get_files(tmp_path: Path, study):
    secret = b"s" * 32
    transmit = FileTransmitServer(Spool(tmp_path / "spool"), "127.0.0.1", 0, secret=secret)
    transmit.start()
    try:
        topic = Topic(AE, study[0].StudyInstanceUID)
        for wrong in (None, b"x" * 32):
            client = FileTransmitClient("127.0.0.1", transmit.port, connect_timeout=2, secret=wrong)
            with pytest.raises(RetriableDicomError, match="not authorized"):
                client.subscribe(topic, _uids(study))

        client = FileTransmitClient("127.0.0.1", transmit.port, connect_timeout=2, secret=secret)
        with client.subscribe(topic, _uids(study)) as subscription:
            for ds in study:
                _add(transmit.spool, topic, ds)
            received = list(subscription.iter_instances(_uids(study), inactivity_timeout=5))
        assert _uids(received) == _uids(study)
    finally:
        transmit.stop()


def test_the_spool_holds_only_what_the_worker_has_not_taken(server, study):
    # A file goes once the subscription has acknowledged it: the spool is a hand-over buffer,
    # never the whole study, and nothing of a move can be replayed to a later one.
    topic = Topic(AE, study[0].StudyInstanceUID)
    with _client(server).subscribe(topic, _uids(study)) as subscription:
        for ds in study:
            _add(server.spool, topic, ds)
        assert len(server.spool) == len(study)
        received = list(subscription.iter_instances(inactivity_timeout=5))
        wait_until(lambda: len(server.spool) == 0, what="the acknowledged files gone")
        assert not list((server.spool.files_dir).iterdir())
    assert _uids(received) == _uids(study)


def test_the_files_of_a_move_leave_the_spool_when_its_subscription_ends(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    with _client(server).subscribe(topic, _uids(study)):
        for ds in study:
            _add(server.spool, topic, ds)
        assert len(server.spool) == len(study)  # not taken yet
    wait_until(lambda: len(server.spool) == 0, what="the spool emptied")
    assert not list((server.spool.files_dir).iterdir())


def test_a_file_stays_until_every_subscription_that_expects_it_took_it(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    uids = _uids(study[:1])
    with _client(server).subscribe(topic, uids) as one, _client(server).subscribe(topic, uids):
        _add(server.spool, topic, study[0])
        assert one.receive(5) is not None
        time.sleep(0.3)  # the ACK of the first arrived; the second has not read its copy
        assert len(server.spool) == 1
    wait_until(lambda: len(server.spool) == 0, what="the spool emptied")


def test_a_resumed_subscription_gets_what_it_missed_after_a_restart_then_it_goes(
    tmp_path: Path, study
):
    spool_dir = tmp_path / "spool"
    first = Spool(spool_dir)
    topic = Topic(AE, study[0].StudyInstanceUID)
    for ds in study[:2]:
        _add(first, topic, ds)
    transmit = FileTransmitServer(Spool(spool_dir), "127.0.0.1", 0, heartbeat_interval=0.5)
    transmit.start()
    try:
        # A subscription from before the receiver restarted resumes from the time it began.
        subscription = Subscription(_client(transmit), topic, _uids(study), window=16)
        subscription.epoch, subscription.since = first.epoch, 0.0
        subscription.connect()
        with subscription:
            got = [subscription.receive(5) for _ in study[:2]]
            assert [file.sop_instance_uid for file in got if file] == _uids(study[:2])
            wait_until(lambda: len(transmit.spool) == 0, what="the taken files gone")
    finally:
        transmit.stop()


def test_a_dropped_subscriptions_files_stay_for_its_reconnect_and_go_after_the_grace(server, study):
    topic = Topic(AE, study[0].StudyInstanceUID)
    subscription = _client(server).subscribe(topic, _uids(study))
    for ds in study:
        _add(server.spool, topic, ds)
    assert subscription._sock is not None
    subscription._sock.close()  # no BYE: a network failure
    subscription._sock = None
    wait_until(
        lambda: server.expectations._live(topic)[0].ends_at is not None, what="the grace period"
    )
    server.expectations.prune()
    assert len(server.spool) == len(study)  # still there for the reconnect
    server.expectations._live(topic)[0].ends_at = time.monotonic() - 1  # grace has passed
    server.expectations.prune()
    assert len(server.spool) == 0
    assert not list((server.spool.files_dir).iterdir())
