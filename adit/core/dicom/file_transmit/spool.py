"""The receiver's spool: every received file on disk (mode 0600) until its move is over.

A topic's files are discarded when the last subscription expecting them ends (`discard`);
the retention time only bounds what no subscription ever claims again (files reloaded after a
receiver restart whose subscribers do not come back).

Files get a sequence number within the receiver's run (the epoch) so a subscription can resume
after exactly the last file it acknowledged; see the package docstring.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .protocol import DEFAULT_RETENTION, Topic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    topic: Topic
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    received_at: float
    path: Path = field(compare=False)

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


class Spool:
    """Received files on disk, indexed by topic, kept for ``retention`` seconds.

    Layout: ``<root>/incoming/`` for files being written, ``<root>/files/<id>.dcm`` plus
    ``<id>.json`` (topic and metadata) for complete ones. A ``.json`` is renamed into place
    last, so it marks a complete entry; a restarted receiver reloads complete entries (with new
    sequence numbers in a new epoch) and removes leftovers.
    """

    def __init__(self, root: Path, retention: float = DEFAULT_RETENTION) -> None:
        self.root = Path(root)
        self.retention = retention
        self.incoming_dir = self.root / "incoming"
        self.files_dir = self.root / "files"
        self.epoch = uuid.uuid4().hex
        self.condition = threading.Condition()
        self._entries: dict[Topic, list[SpoolEntry]] = {}
        self._next_seq = 1
        for folder in (self.root, self.incoming_dir, self.files_dir):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)  # received images are nobody else's business
        self._reload()

    def _reload(self) -> None:
        for leftover in self.incoming_dir.iterdir():
            leftover.unlink(missing_ok=True)
        loaded: list[tuple[float, dict[str, Any], Path]] = []
        for meta_path in self.files_dir.glob("*.json"):
            data_path = meta_path.with_suffix(".dcm")
            try:
                meta = json.loads(meta_path.read_text("utf-8"))
                received_at = float(meta["received_at"])
                Topic.from_json(meta["topic"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                logger.warning("Removing unreadable spool entry %s: %s", meta_path.name, err)
                meta_path.unlink(missing_ok=True)
                data_path.unlink(missing_ok=True)
                continue
            try:
                size = data_path.stat().st_size
            except OSError:
                size = None
            if size is None or ("size" in meta and size != meta["size"]):
                if size is not None:
                    logger.warning("Removing torn spool entry %s", meta_path.name)
                meta_path.unlink(missing_ok=True)
                data_path.unlink(missing_ok=True)
                continue
            loaded.append((received_at, meta, data_path))
        known = {path for _, _, path in loaded}
        for data_path in self.files_dir.glob("*.dcm"):
            if data_path not in known:
                data_path.unlink(missing_ok=True)
        for _, meta, data_path in sorted(loaded, key=lambda item: item[0]):
            self._index(meta, data_path)
        if loaded:
            logger.info("Spool reloaded %d files from %s", len(loaded), self.files_dir)
        self.expire()

    def _index(self, meta: dict[str, Any], data_path: Path) -> SpoolEntry:
        with self.condition:
            entry = SpoolEntry(
                seq=self._next_seq,
                topic=Topic.from_json(meta["topic"]),
                sop_instance_uid=meta["sop_instance_uid"],
                sop_class_uid=meta.get("sop_class_uid", ""),
                series_instance_uid=meta.get("series_instance_uid", ""),
                transfer_syntax_uid=meta.get("transfer_syntax_uid", ""),
                received_at=float(meta["received_at"]),
                path=data_path,
            )
            self._next_seq += 1
            self._entries.setdefault(entry.topic, []).append(entry)
            self.condition.notify_all()
            return entry

    def add(
        self,
        topic: Topic,
        write_file: Callable[[BinaryIO], object],
        *,
        sop_instance_uid: str,
        sop_class_uid: str = "",
        series_instance_uid: str = "",
        transfer_syntax_uid: str = "",
    ) -> SpoolEntry:
        """Writes a file (write, rename; see "Spool and replay") and publishes it to the topic.

        Raises:
            OSError: when the file could not be stored; nothing is published then.
        """
        name = uuid.uuid4().hex
        data_tmp = self.incoming_dir / f"{name}.dcm"
        meta_tmp = self.incoming_dir / f"{name}.json"
        data_path = self.files_dir / f"{name}.dcm"
        meta_path = self.files_dir / f"{name}.json"
        meta = {
            "topic": topic.to_json(),
            "sop_instance_uid": sop_instance_uid,
            "sop_class_uid": sop_class_uid,
            "series_instance_uid": series_instance_uid,
            "transfer_syntax_uid": transfer_syntax_uid,
            "received_at": time.time(),
        }
        try:
            with open(data_tmp, "xb", opener=private_file) as data_file:
                write_file(data_file)
                meta["size"] = data_file.tell()
            with open(meta_tmp, "x", encoding="utf-8", opener=private_file) as meta_file:
                json.dump(meta, meta_file)
            os.replace(data_tmp, data_path)
            os.replace(meta_tmp, meta_path)
        except BaseException:
            for path in (data_tmp, meta_tmp, data_path, meta_path):
                path.unlink(missing_ok=True)
            raise
        return self._index(meta, data_path)

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
            return sum(len(entries) for entries in self._entries.values())

    def discard(self, topic: Topic) -> int:
        """Removes every entry of ``topic`` (its move is over); returns how many."""
        with self.condition:
            discarded = self._entries.pop(topic, [])
        for entry in discarded:
            entry.path.with_suffix(".json").unlink(missing_ok=True)
            entry.path.unlink(missing_ok=True)
        if discarded:
            logger.debug("Spool discarded %d files of a finished move", len(discarded))
        return len(discarded)

    def expire(self, now: float | None = None) -> int:
        """Removes entries older than the retention time; returns how many."""
        cutoff = (time.time() if now is None else now) - self.retention
        expired: list[SpoolEntry] = []
        with self.condition:
            for topic in list(self._entries):
                entries = self._entries[topic]
                keep = [entry for entry in entries if entry.received_at >= cutoff]
                expired.extend(entry for entry in entries if entry.received_at < cutoff)
                if keep:
                    self._entries[topic] = keep
                else:
                    del self._entries[topic]
        for entry in expired:
            entry.path.with_suffix(".json").unlink(missing_ok=True)
            entry.path.unlink(missing_ok=True)
        if expired:
            logger.debug("Spool expired %d files", len(expired))
        return len(expired)


def private_file(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
