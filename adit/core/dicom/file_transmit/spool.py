"""The receiver's spool: what a PACS pushed and a worker has not taken yet (mode 0600).

A hand-over buffer, not an archive. Each instance is one Part-10 file, written once where it
stays (no temporary name, no rename, no metadata file beside it, no ``fsync``): everything a
subscription needs to know about it (topic, UIDs, transfer syntax) is kept in memory, and the
file's own meta information holds what a restarted receiver needs to index it again — the
pushing PACS's AE title as Source Application Entity Title (0002,0016), the SOP Class, SOP
Instance and transfer syntax UIDs; study and series UIDs are read from the data set. An entry is
published only after its file was written completely, so a file cut short by a crash of the
receiver or the machine is recognised on reload (`completeness.check_complete`) and removed.

An entry leaves the spool as soon as it is no longer needed:

* every subscription that expected it when it arrived (its *holders*) has acknowledged it —
  the usual case, so the spool holds only what is in flight between receiver and worker;
* a holder ended (BYE, or its reconnect grace passed) without acknowledging it;
* the last subscription of its topic ended: the move is over, nothing of it is replayed to a
  later one (`discard`);
* it is older than ``retention``: only entries that no subscription ever held are subject to
  this, e.g. those reloaded after a restart whose subscribers do not come back.

Entries get a sequence number within the receiver's run (the epoch) so a subscription can
resume after exactly the last file it acknowledged; see the package docstring.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian

from ..completeness import IncompleteDataSet, check_complete, text_value
from ..net.association import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from ..part10 import file_meta_bytes
from .protocol import DEFAULT_RETENTION, Topic

logger = logging.getLogger(__name__)

MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
TRANSFER_SYNTAX_UID = 0x00020010
SOURCE_APPLICATION_ENTITY_TITLE = 0x00020016
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E


@dataclass(eq=False)
class SpoolEntry:
    seq: int
    topic: Topic
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    received_at: float
    path: Path
    # The subscriptions that have yet to acknowledge this entry (see the module docstring).
    holders: set[object] = field(default_factory=set)
    held: bool = False

    def file_header(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class_uid": self.sop_class_uid,
            "series_instance_uid": self.series_instance_uid,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "calling_ae_title": self.topic.calling_ae_title,
            "received_at": self.received_at,
        }


def part10_header(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae_title: str
) -> bytes:
    """Preamble, prefix and file meta information (PS3.10 7.1) for a received data set,
    naming the AE it came from. The group length comes first, as
    `ReceivedFile.encoded_dataset` relies on."""
    return file_meta_bytes(
        sop_class_uid,
        sop_instance_uid,
        transfer_syntax_uid,
        IMPLEMENTATION_CLASS_UID,
        IMPLEMENTATION_VERSION_NAME,
        source_ae_title,
    )


def read_spooled_file(path: Path) -> tuple[Topic, dict[str, str]]:
    """The topic and UIDs of a spooled file, checked to be whole (for a reload).

    Raises:
        ValueError: the file is not a whole spooled instance (torn by a crash, or foreign).
    """
    data = path.read_bytes()
    if len(data) < 144 or data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
        raise ValueError("no Part-10 file meta information")
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    try:
        meta = check_complete(
            memoryview(data)[144:meta_end],  # type: ignore[arg-type]
            ExplicitVRLittleEndian,
            capture=(
                MEDIA_STORAGE_SOP_CLASS_UID,
                MEDIA_STORAGE_SOP_INSTANCE_UID,
                TRANSFER_SYNTAX_UID,
                SOURCE_APPLICATION_ENTITY_TITLE,
            ),
        )
        transfer_syntax = text_value(meta.get(TRANSFER_SYNTAX_UID))
        found = check_complete(
            memoryview(data)[meta_end:],  # type: ignore[arg-type]
            transfer_syntax,
            capture=(STUDY_INSTANCE_UID, SERIES_INSTANCE_UID),
        )
    except IncompleteDataSet as error:
        raise ValueError(str(error)) from None
    topic = Topic(
        text_value(meta.get(SOURCE_APPLICATION_ENTITY_TITLE)),
        text_value(found.get(STUDY_INSTANCE_UID)),
    )
    return topic, {
        "sop_instance_uid": text_value(meta.get(MEDIA_STORAGE_SOP_INSTANCE_UID)),
        "sop_class_uid": text_value(meta.get(MEDIA_STORAGE_SOP_CLASS_UID)),
        "series_instance_uid": text_value(found.get(SERIES_INSTANCE_UID)),
        "transfer_syntax_uid": transfer_syntax,
    }


class Spool:
    """Received files on disk, indexed by topic in memory.

    Layout: ``<root>/files/<received ns>-<epoch>-<number>.dcm``, one Part-10 file per
    instance (see the module docstring). ``holders``, when set (the file transmit server does),
    names the subscriptions that wait for a new entry: ``holders(topic, sop_instance_uid)``,
    called holding ``condition``.
    """

    def __init__(self, root: Path, retention: float = DEFAULT_RETENTION) -> None:
        self.root = Path(root)
        self.retention = retention
        self.files_dir = self.root / "files"
        self.epoch = uuid.uuid4().hex
        self.condition = threading.Condition()
        self.holders: Callable[[Topic, str], Iterable[object]] | None = None
        self._entries: dict[Topic, list[SpoolEntry]] = {}
        self._by_seq: dict[int, SpoolEntry] = {}
        self._next_seq = 1
        self._files_written = 0
        for folder in (self.root, self.files_dir):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)  # received images are nobody else's business
        self._reload()

    def _reload(self) -> None:
        # Leftovers of the layout before (files written under a temporary name, metadata in a
        # JSON file beside each): never replayed, they carry no source AE title.
        incoming = self.root / "incoming"
        if incoming.is_dir():
            for leftover in incoming.iterdir():
                leftover.unlink(missing_ok=True)
            incoming.rmdir()
        for stale in self.files_dir.glob("*.json"):
            stale.unlink(missing_ok=True)
        loaded: list[tuple[str, float, Topic, dict[str, str], Path]] = []
        for path in self.files_dir.iterdir():
            try:
                received_ns = int(path.name.split("-", 1)[0])
                topic, uids = read_spooled_file(path)
            except (OSError, ValueError) as err:
                logger.warning("Removing unreadable spool file %s: %s", path.name, err)
                path.unlink(missing_ok=True)
                continue
            loaded.append((path.name, received_ns / 1e9, topic, uids, path))
        # File names sort in the order the files arrived (see `add`).
        for _, received_at, topic, uids, path in sorted(loaded, key=lambda item: item[0]):
            self._index(topic, path, received_at, **uids)
        if loaded:
            logger.info("Spool reloaded %d files from %s", len(loaded), self.files_dir)
        self.expire()

    def _index(
        self,
        topic: Topic,
        path: Path,
        received_at: float,
        *,
        sop_instance_uid: str,
        sop_class_uid: str,
        series_instance_uid: str,
        transfer_syntax_uid: str,
    ) -> SpoolEntry:
        with self.condition:
            entry = SpoolEntry(
                seq=self._next_seq,
                topic=topic,
                sop_instance_uid=sop_instance_uid,
                sop_class_uid=sop_class_uid,
                series_instance_uid=series_instance_uid,
                transfer_syntax_uid=transfer_syntax_uid,
                received_at=received_at,
                path=path,
            )
            if self.holders is not None:
                entry.holders.update(self.holders(topic, sop_instance_uid))
                entry.held = bool(entry.holders)
            self._next_seq += 1
            self._entries.setdefault(topic, []).append(entry)
            self._by_seq[entry.seq] = entry
            self.condition.notify_all()
            return entry

    def add(
        self,
        topic: Topic,
        encoded_dataset: bytes | memoryview,
        *,
        sop_instance_uid: str,
        sop_class_uid: str,
        series_instance_uid: str = "",
        transfer_syntax_uid: str,
    ) -> SpoolEntry:
        """Writes a received data set as a Part-10 file and publishes it to the topic.

        Raises:
            OSError: when the file could not be written; nothing is published then.
        """
        header = part10_header(
            sop_class_uid, sop_instance_uid, transfer_syntax_uid, topic.calling_ae_title
        )
        # Named by arrival (receiver clock, then a counter for files of the same instant), so a
        # restarted receiver replays them in the order they came.
        received_ns = time.time_ns()
        with self.condition:
            self._files_written += 1
            number = self._files_written
        path = self.files_dir / f"{received_ns:020d}-{self.epoch[:8]}-{number:09d}.dcm"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(descriptor, header)
                _write_all(descriptor, encoded_dataset)
            finally:
                os.close(descriptor)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return self._index(
            topic,
            path,
            received_ns / 1e9,
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=sop_class_uid,
            series_instance_uid=series_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
        )

    def next_entry(
        self, topic: Topic, after_seq: int, wanted: Collection[str] | None = None
    ) -> tuple[SpoolEntry | None, int]:
        """The oldest entry of ``topic`` above ``after_seq`` whose SOP Instance UID is
        ``wanted`` (any when None), and the sequence number to continue after next time
        (entries skipped as unwanted are not looked at again)."""
        with self.condition:
            entries = self._entries.get(topic)
            if not entries:
                return None, after_seq
            index = bisect_right(entries, after_seq, key=lambda entry: entry.seq)
            for entry in entries[index:]:
                if wanted is None or entry.sop_instance_uid in wanted:
                    return entry, entry.seq
                after_seq = entry.seq
            return None, after_seq

    def hold(self, topic: Topic, after_seq: int, holder: object, wanted: Collection[str]) -> None:
        """Makes `holder` (a resumed subscription) wait for the entries of `topic` above
        `after_seq` that it wants, so they stay until it acknowledges them."""
        with self.condition:
            entries = self._entries.get(topic, [])
            index = bisect_right(entries, after_seq, key=lambda entry: entry.seq)
            for entry in entries[index:]:
                if entry.sop_instance_uid in wanted:
                    entry.holders.add(holder)
                    entry.held = True

    def acknowledge(self, seq: int, holder: object) -> None:
        """`holder` has taken entry `seq`; the entry goes when no holder waits for it."""
        with self.condition:
            entry = self._by_seq.get(seq)
            if entry is None or holder not in entry.holders:
                return
            entry.holders.discard(holder)
            if entry.holders:
                return
            self._remove([entry])
        entry.path.unlink(missing_ok=True)

    def release(self, topic: Topic, holder: object) -> int:
        """`holder` ended: the entries only it still waited for go; returns how many."""
        with self.condition:
            released = []
            for entry in self._entries.get(topic, ()):
                if holder in entry.holders:
                    entry.holders.discard(holder)
                    if not entry.holders:
                        released.append(entry)
            self._remove(released)
        for entry in released:
            entry.path.unlink(missing_ok=True)
        return len(released)

    def _remove(self, removed: list[SpoolEntry]) -> None:
        """Drops entries from the index (holding the condition)."""
        for entry in removed:
            self._by_seq.pop(entry.seq, None)
            entries = self._entries.get(entry.topic)
            if not entries:
                continue
            index = bisect_right(entries, entry.seq, key=lambda item: item.seq) - 1
            if index >= 0 and entries[index] is entry:
                del entries[index]
            if not entries:
                del self._entries[entry.topic]

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest entry (a new subscription starts after it)."""
        with self.condition:
            return self._next_seq - 1

    def seq_before(self, topic: Topic, received_since: float) -> int:
        """The sequence number after which the entries of ``topic`` received at or after
        ``received_since`` (receiver clock) begin."""
        with self.condition:
            for entry in self._entries.get(topic, ()):
                if entry.received_at >= received_since:
                    return entry.seq - 1
            return self._next_seq - 1

    def entries(self, topic: Topic) -> list[SpoolEntry]:
        with self.condition:
            return list(self._entries.get(topic, ()))

    def __len__(self) -> int:
        with self.condition:
            return len(self._by_seq)

    def discard(self, topic: Topic) -> int:
        """Removes every entry of ``topic`` (its move is over); returns how many."""
        with self.condition:
            discarded = self._entries.pop(topic, [])
            for entry in discarded:
                self._by_seq.pop(entry.seq, None)
        for entry in discarded:
            entry.path.unlink(missing_ok=True)
        if discarded:
            logger.debug("Spool discarded %d files of a finished move", len(discarded))
        return len(discarded)

    def expire(self, now: float | None = None) -> int:
        """Removes entries older than the retention time that no subscription waits for;
        returns how many."""
        cutoff = (time.time() if now is None else now) - self.retention
        with self.condition:
            expired = [
                entry
                for entries in self._entries.values()
                for entry in entries
                if entry.received_at < cutoff and not entry.holders
            ]
            self._remove(expired)
        for entry in expired:
            entry.path.unlink(missing_ok=True)
        if expired:
            logger.debug("Spool expired %d files", len(expired))
        return len(expired)


def _write_all(descriptor: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]
