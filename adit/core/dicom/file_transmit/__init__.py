"""File transmit: how the receiver hands C-MOVEd files to the worker that asked for them.

With C-MOVE the source PACS pushes every instance to one fixed AE, ADIT's receiver (a C-STORE
SCP, see :mod:`adit.core.dicom.receiver`). Many workers may wait for files at the same time, so
the receiver spools each file to disk and streams it over TCP to every worker that subscribed to
the file's *topic*.

Topic
    ``(calling AE title of the pushing PACS, StudyInstanceUID)``. It is sent as a JSON object,
    never parsed out of a file name, so AE titles with ``_`` or ``\\`` cannot break it.

Expectations (the receiver takes only what was asked for)
    A subscription names the SOP Instance UIDs it expects (the worker knows them from an
    IMAGE-level C-FIND done before the C-MOVE). While it lasts, and for `RECONNECT_GRACE`
    seconds after its connection dropped without BYE, the receiver accepts exactly those
    instances from that PACS; anything else is refused at the C-STORE. A subscription is sent
    only the files it expects.

Spool and replay (files are never lost because a subscriber was late)
    The receiver answers a C-STORE with success only after the file is written to the spool:
    one Part-10 file per instance, written once where it stays (no temporary name, no rename,
    no metadata file beside it; what a subscription needs is kept in memory, what a restarted
    receiver needs is in the file's own meta information). It does not ``fsync``: the spool is
    a hand-over buffer, and a file that a machine crash loses is caught downstream (the
    C-MOVE's completed count and the check at the destination make the task retry). A file cut
    short by a crash is recognised on reload by its structure (`completeness`).

    Every spooled file gets a sequence number (``seq``, increasing within one receiver run, the
    *epoch*). It stays only while a subscription that expected it has not acknowledged it: the
    spool holds what is in flight between receiver and worker, not the study. When the last
    subscription of a topic ends (BYE, or its reconnect grace passed) the move is over and
    whatever is left of the topic is removed at once. ``retention`` (default 15 minutes) only
    bounds files that no subscription waits for, such as those reloaded after a receiver
    restart. A new subscription gets only files spooled after it began, never files of earlier
    moves (which might be stale or forged). A resumed one gets what it missed: files after its
    last ``seq`` within the same epoch, or, when the receiver restarted meanwhile, the files of
    its topic received since it first subscribed (the receiver's clock, sent in
    ``SUBSCRIBED``); those stay until it acknowledges them.

Fan-out
    Every subscription of a topic gets every file of the topic. Two workers fetching the same
    study concurrently each get complete data (the PACS pushes the study twice; a subscription
    may see an instance more than once and the client drops duplicates by SOP Instance UID).

Wire format
    Both directions use the same frame::

        +-------+------+-------------+--------------+-------------+---------+
        | magic | type | header size | payload size | header      | payload |
        | ADFT  | 1 B  | uint32 BE   | uint64 BE    | UTF-8 JSON  | bytes   |
        +-------+------+-------------+--------------+-------------+---------+

    The header is a JSON object (at most 64 KiB). Only ``FILE`` frames carry a payload: the
    complete DICOM Part-10 file exactly as received (transfer syntax untouched).

Conversation
    1. client → ``SUBSCRIBE`` ``{"version": 2, "topic": {"calling_ae_title": …,
       "study_instance_uid": …}, "expected": [SOP Instance UIDs], "resume": {"epoch": …,
       "after_seq": n, "since": t} | null, "window": n}`` (this frame's header may hold up to
       `MAX_SUBSCRIBE_HEADER_SIZE` bytes). ``resume`` is given on a reconnect (see above).
    2. server → ``SUBSCRIBED`` ``{"version": 2, "epoch": …, "heartbeat_interval": s,
       "since": t}`` or ``ERROR`` ``{"message": …}`` and close (bad topic, unknown version, …).
    3. server → ``FILE`` ``{"seq", "sop_instance_uid", "sop_class_uid",
       "series_instance_uid", "transfer_syntax_uid", "calling_ae_title", "received_at"}`` +
       payload, in ``seq`` order.
    4. client → ``ACK`` ``{"seq": n}`` once a file was read completely. The server keeps at
       most ``window`` files unacknowledged per subscription (back pressure), logs deliveries,
       so the sending side knows which subscriber got which file, and removes the file from
       the spool once no other subscription waits for it.
    5. server → ``PING`` ``{}`` when nothing was sent for ``heartbeat_interval`` seconds, so a
       client notices a dead receiver (no frame for 3 intervals → reconnect).
    6. server → ``STORE_FAILED`` ``{"sop_instance_uid", "message"}`` when the receiver could
       not spool an expected instance (its disk, not the PACS): the client raises a retriable
       `ReceiverStoreError` naming ADIT's receiver.
    7. client → ``BYE`` ``{}`` to end the subscription (its expectations end at once).

Client side::

    with FileTransmitClient(host, port).subscribe(topic, expected_sop_uids) as subscription:
        send_c_move(...)  # only after subscribing
        for ds in subscription.iter_instances(inactivity_timeout=60):
            ...

Authentication
    When the server is given a shared ``secret``, a ``SUBSCRIBE`` must carry ``"auth"``:
    the hex HMAC-SHA256 of the topic's canonical JSON under that secret; otherwise it gets
    ``ERROR`` and the connection is closed. ADIT derives the secret from
    ``FILE_TRANSMIT_SECRET`` (else ``SECRET_KEY``), so only processes configured like ADIT can
    read received images. The channel itself is plain TCP (not encrypted): keep it on a private
    network.
"""

from .client import ArrivalTracker, FileTransmitClient, ReceivedFile, Subscription
from .protocol import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_RETENTION,
    DEFAULT_WINDOW,
    MAGIC,
    PROTOCOL_VERSION,
    ConnectionClosed,
    MessageType,
    ProtocolError,
    ReceiverStoreError,
    Topic,
    decode_prefix,
    encode_frame,
    read_frame,
    topic_signature,
)
from .server import FileTransmitServer
from .spool import Spool

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_RETENTION",
    "DEFAULT_WINDOW",
    "MAGIC",
    "PROTOCOL_VERSION",
    "ArrivalTracker",
    "ConnectionClosed",
    "FileTransmitClient",
    "FileTransmitServer",
    "MessageType",
    "ProtocolError",
    "ReceivedFile",
    "ReceiverStoreError",
    "Spool",
    "Subscription",
    "Topic",
    "decode_prefix",
    "encode_frame",
    "read_frame",
    "topic_signature",
]
