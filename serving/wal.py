"""Write-ahead log of the decision log: what was acknowledged survives a killed process.

`serving.decision_log.DecisionLog` buffers rows in memory and writes them as Parquet parts
about once a second. A process killed in between (SIGKILL, power loss, the OOM killer)
would lose the buffer, though every decision in it was already answered. So each accepted
batch of rows is first appended to a write-ahead segment and fsync'd; only then is the
request answered. Requests that arrive while a sync runs share the next one (group
commit), so under load one fsync covers many requests.

Layout, under the log directory (hidden, so dataset readers skip it)::

    .wal/<owner>/LOCK                 flock'd by the live process that owns the log
    .wal/<owner>/seg-<n>.wal          records, n = 1, 2, ... (rotated at every flush)

A record is ``<payload length u32><crc32 u32><table u8><payload>`` (little endian), the
payload an Arrow IPC stream of the rows. A *group* record (table byte `GROUP`) holds the
rows of several tables that must be kept or lost together (an outcome's `redemptions`
row and its entry in the outcome ledger): its payload is a sequence of
``<table u8><length u32><Arrow IPC stream>``. A torn last record (the process died while
writing it, so it was never acknowledged) fails its length or checksum and ends the
segment, all its tables with it.

The parts the decision log writes carry their owner and the newest segment they cover
(``...-<owner>-w<n>.parquet``): a part of table T tagged n holds every T row of the
owner's segments up to n. Recovery (`recover`) takes the lock of every owner directory
whose process is gone, replays the T records of segments after the newest T tag as parts
tagged the same way, and removes the directory; a crash during recovery leaves it
repeatable with nothing written twice.

Pure Python and polars: no Ray, no web framework.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import re
import shutil
import struct
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl

log = logging.getLogger(__name__)

WAL_DIR = ".wal"
"""The write-ahead directory's name inside a decision log directory."""

_HEADER = struct.Struct("<IIB")
_SEGMENT = re.compile(r"^seg-(\d+)\.wal$")
_TAG = re.compile(r"-(?P<owner>[0-9a-f]{12})-w(?P<segment>\d+)\.parquet$")
MAX_RECORD_BYTES = 1 << 30
"""A length above this is a torn or foreign header, not a record."""

GROUP = 255
"""The table byte of a group record (several tables' rows, kept or lost together)."""

_MEMBER = struct.Struct("<BI")


class WriteAheadError(RuntimeError):
    """Rows could not be made durable; they were not accepted."""


def part_tag(owner: str, segment: int) -> str:
    """The suffix a part name carries: which owner's segments up to which it covers."""
    return f"{owner}-w{segment}"


def tag_of(part: Path) -> tuple[str, int] | None:
    """(owner, segment) of a tagged part's name; None for an untagged one."""
    match = _TAG.search(part.name)
    return None if match is None else (match["owner"], int(match["segment"]))


class WriteAheadLog:
    """One process's write-ahead segments (see the module docstring); thread-safe.

    `append` writes a record into the current segment (buffered, no I/O wait) and returns
    its sequence number; `sync(seq)` returns once that record is on disk. `rotate` starts a
    new segment and returns the id of the one it closed; `drop_through(n)` deletes the
    segments up to n once their rows are in parts.
    """

    def __init__(self, directory: Path, tables: Sequence[str]) -> None:
        self.owner = uuid.uuid4().hex[:12]
        self.directory = Path(directory) / WAL_DIR / self.owner
        self.tables = tuple(tables)
        self._lock = threading.Lock()  # the file, the counters
        self._sync_lock = threading.Lock()  # one fsync at a time (group commit)
        self._segment = 0
        self._file: BinaryIO | None = None
        self._lock_file: BinaryIO | None = None
        self._appended = 0  # sequence of the last record written to a file
        self._synced = 0  # every record up to this sequence is on disk

    @property
    def segment(self) -> int:
        """The id of the segment records go to now."""
        return self._segment

    def open(self) -> None:
        """Create the owner directory, take its lock and start segment 1."""
        for attempt in range(3):  # a recovery may remove an empty `.wal` meanwhile
            try:
                self.directory.mkdir(parents=True)  # a fresh owner id: never there before
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        self._lock_file = (self.directory / "LOCK").open("wb")
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fsync_directory(self.directory.parent)
        self._start_segment(1)

    def append(self, table: str, frame: pl.DataFrame) -> int:
        """Write `frame` as one record of `table`; its sequence number (see `sync`)."""
        return self._write(self.tables.index(table), _encode(frame))

    def append_group(self, frames: Sequence[tuple[str, pl.DataFrame]]) -> int:
        """Write the rows of several tables as one record, so a crash keeps all of them or
        none (recovery and readers see each table's rows as if appended alone); its
        sequence number (see `sync`)."""
        members = []
        for table, frame in frames:
            payload = _encode(frame)
            members.append(_MEMBER.pack(self.tables.index(table), len(payload)) + payload)
        return self._write(GROUP, b"".join(members))

    def _write(self, table_byte: int, payload: bytes) -> int:
        record = _HEADER.pack(len(payload), zlib.crc32(payload), table_byte)
        with self._lock:
            if self._file is None:
                raise WriteAheadError("the write-ahead log is closed")
            try:
                self._file.write(record + payload)
            except OSError as exc:
                raise WriteAheadError(f"cannot write {self._segment_path()}: {exc}") from exc
            self._appended += 1
            return self._appended

    def sync(self, seq: int) -> None:
        """Return once record `seq` is on disk; one fsync serves every waiting caller."""
        with self._sync_lock:
            if self._synced >= seq:
                return
            with self._lock:
                handle, upto = self._file, self._appended
                if handle is None:
                    raise WriteAheadError("the write-ahead log is closed")
                try:
                    handle.flush()
                except OSError as exc:
                    raise WriteAheadError(f"cannot write {self._segment_path()}: {exc}") from exc
            try:
                os.fsync(handle.fileno())
            except OSError as exc:
                raise WriteAheadError(f"cannot sync {self._segment_path()}: {exc}") from exc
            self._synced = max(self._synced, upto)

    def rotate(self) -> int:
        """Close the current segment (synced) and start the next; the closed one's id.

        The caller makes sure no `append` runs meanwhile whose rows it counts as before
        the rotation (the decision log rotates under the lock its appends hold).
        """
        with self._sync_lock, self._lock:
            closed = self._segment
            self._close_segment()
            self._start_segment(closed + 1)
            return closed

    def drop_through(self, segment: int) -> None:
        """Delete the segments with ids up to `segment` (their rows are in parts)."""
        for path, number in _segments(self.directory):
            if number <= segment:
                path.unlink(missing_ok=True)

    def close(self, remove: bool) -> None:
        """Close the files; `remove`: delete the owner directory (all rows are in parts)."""
        with self._sync_lock, self._lock:
            self._close_segment()
            if remove:
                shutil.rmtree(self.directory, ignore_errors=True)
                _remove_if_empty(self.directory.parent)
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def _segment_path(self, number: int | None = None) -> Path:
        return self.directory / f"seg-{self._segment if number is None else number:08d}.wal"

    def _start_segment(self, number: int) -> None:
        self._segment = number
        self._file = self._segment_path(number).open("ab")
        fsync_directory(self.directory)

    def _close_segment(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._synced = self._appended
        finally:
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------- recovery


@dataclass(frozen=True)
class Recovered:
    """What `recover` did for one dead owner."""

    owner: str
    rows: dict[str, int]
    """Rows replayed into new parts, per table."""
    skipped_records: dict[str, int]
    """Records already in parts (a flush finished before the process died), per table."""
    torn: bool
    """A segment ended in a torn record (never acknowledged), which was dropped."""


WritePart = Callable[[str, pl.DataFrame, str], None]
"""`write_part(table, rows, tag)`: write rows as a part of `table` whose name ends in
``-<tag>.parquet``, durably."""


def recover(log_directory: Path, tables: Sequence[str], write_part: WritePart) -> list[Recovered]:
    """Replay the segments of every owner whose process is gone (see the module docstring)."""
    root = Path(log_directory) / WAL_DIR
    if not root.is_dir():
        return []
    done = []
    for owner_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        with _owner_lock(owner_dir) as locked:
            if not locked:
                continue  # a live process owns it
            done.append(_recover_owner(Path(log_directory), owner_dir, tables, write_part))
    return done


def _recover_owner(
    log_directory: Path, owner_dir: Path, tables: Sequence[str], write_part: WritePart
) -> Recovered:
    owner = owner_dir.name
    segments = _segments(owner_dir)
    newest = max((n for _, n in segments), default=0)
    covered = {t: _covered_through(log_directory / t, owner) for t in tables}
    frames: dict[str, list[pl.DataFrame]] = {t: [] for t in tables}
    skipped = dict.fromkeys(tables, 0)
    torn = False
    for path, number in segments:
        records, segment_torn = _read_segment(path, len(tables))
        torn = torn or segment_torn
        for table_index, payload in records:
            table = tables[table_index]
            if number <= covered[table]:
                skipped[table] += 1
            else:
                frames[table].append(pl.read_ipc_stream(io.BytesIO(payload)))
    rows = {}
    for table, parts in frames.items():
        rows[table] = sum(f.height for f in parts)
        if parts:
            write_part(table, pl.concat(parts, how="vertical"), part_tag(owner, newest))
    for path, _ in segments:
        path.unlink(missing_ok=True)
    shutil.rmtree(owner_dir, ignore_errors=True)
    fsync_directory(owner_dir.parent)
    _remove_if_empty(owner_dir.parent)
    if any(rows.values()) or torn:
        log.warning(
            "decision log: recovered %s row(s) of a stopped process (%s)%s",
            rows,
            owner,
            "; a torn last record (never acknowledged) was dropped" if torn else "",
        )
    return Recovered(owner, rows, skipped, torn)


def segment_files(log_directory: Path) -> list[tuple[str, Path, int]]:
    """(owner, path, segment id) of every write-ahead segment under a log directory, live
    or left by a stopped process, each owner's oldest first (for readers such as
    `serving.decision_index`; a file may vanish as soon as it is listed)."""
    root = Path(log_directory) / WAL_DIR
    try:
        owners = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    return [(d.name, path, n) for d in owners for path, n in _segments(d)]


def _covered_through(table_dir: Path, owner: str) -> int:
    """The newest segment of `owner` whose rows of this table are all in parts."""
    newest = 0
    if table_dir.is_dir():
        for part in table_dir.glob("part-*.parquet"):
            tag = tag_of(part)
            if tag is not None and tag[0] == owner:
                newest = max(newest, tag[1])
    return newest


class _owner_lock:  # noqa: N801  (used as a context manager, like a function)
    """Context manager: try to take an owner directory's lock; yields whether it did."""

    def __init__(self, owner_dir: Path) -> None:
        self.path = owner_dir / "LOCK"
        self.handle: BinaryIO | None = None

    def __enter__(self) -> bool:
        try:
            self.handle = self.path.open("ab")
        except OSError:
            return False  # removed by another recovery meanwhile
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            self.handle = None
            return False
        return self.path.exists()

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


def _segments(owner_dir: Path) -> list[tuple[Path, int]]:
    """The owner's segment files with their ids, oldest first."""
    found = []
    for path in owner_dir.glob("seg-*.wal"):
        match = _SEGMENT.match(path.name)
        if match:
            found.append((path, int(match[1])))
    return sorted(found, key=lambda item: item[1])


def _read_segment(path: Path, n_tables: int) -> tuple[list[tuple[int, bytes]], bool]:
    """The segment's whole records (group records split into their tables' payloads) and
    whether it ended in a torn one."""
    data = path.read_bytes()
    records, end = _whole_records(data, n_tables)
    members = [m for table, payload in records for m in _members(table, payload, n_tables)]
    return members, end < len(data)


def read_records(path: Path, offset: int, n_tables: int) -> tuple[list[tuple[int, bytes]], int]:
    """(table index, Arrow IPC payload) of the whole records of a segment from byte
    `offset` on, group records split into their tables' payloads, and the offset after
    the last whole record (where to go on reading once more has been written).

    For readers following another process's live segment: a record still being written
    ends the read without being consumed. A segment deleted meanwhile reads as empty (its
    rows are in parts by then).
    """
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    records, end = _whole_records(data, n_tables)
    members = [m for table, payload in records for m in _members(table, payload, n_tables)]
    return members, offset + end


def _whole_records(data: bytes, n_tables: int) -> tuple[list[tuple[int, bytes]], int]:
    records = list(_records(data, n_tables))
    return records, sum(_HEADER.size + len(payload) for _, payload in records)


def _records(data: bytes, n_tables: int) -> Iterator[tuple[int, bytes]]:
    """(table index, payload) of each whole record, up to the first torn or foreign one."""
    at = 0
    while at + _HEADER.size <= len(data):
        length, crc, table = _HEADER.unpack_from(data, at)
        start, end = at + _HEADER.size, at + _HEADER.size + length
        if length > MAX_RECORD_BYTES or end > len(data) or (table >= n_tables and table != GROUP):
            return
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return
        yield table, payload
        at = end


def _members(table: int, payload: bytes, n_tables: int) -> list[tuple[int, bytes]]:
    """A record's (table index, Arrow IPC payload) pairs: itself, or a group's members
    (a member of a table this reader does not know is skipped)."""
    if table != GROUP:
        return [(table, payload)]
    out = []
    view = memoryview(payload)
    at = 0
    while at + _MEMBER.size <= len(view):
        member, length = _MEMBER.unpack_from(view, at)
        start = at + _MEMBER.size
        if member < n_tables:
            out.append((member, bytes(view[start : start + length])))
        at = start + length
    return out


def _encode(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_ipc_stream(buffer)
    return buffer.getvalue()


def _remove_if_empty(directory: Path) -> None:
    """Remove the `.wal` directory once no owner is left in it (another may be racing)."""
    with contextlib.suppress(OSError):
        directory.rmdir()


def fsync_directory(directory: Path) -> None:
    """Make a file's creation, rename or removal in `directory` durable; best effort (not
    every platform can sync a directory). The decision log's part renames use it too."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
