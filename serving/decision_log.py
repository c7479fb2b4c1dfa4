"""The service's log of decisions and outcomes, as the contract's `exposures` and `redemptions`.

Every ranking decision becomes an `exposures` row (`exposure_id` = the decision id, the
exact propensity, `policy` = the model version, `seller_id` = whose decision) and every
reported outcome a `redemptions` row, so the next `recsys train` learns from what the
service did and off-policy evaluation can judge a new policy on it.

The request path validates rows (the service's own decision rows, built in the contract's
exact schema, only by that schema: `append_decisions`), appends them to a write-ahead log
and waits for it to be on disk (`serving.wal`; concurrent requests share one fsync), then
buffers them; a background thread writes the buffer as Parquet parts when `max_rows` rows
are waiting or the oldest has waited `max_seconds`:

    <directory>/exposures/part-<UTC time>-<pid>-<seq>-<owner>-w<segment>.parquet
    <directory>/redemptions/part-<UTC time>-<pid>-<seq>-<owner>-w<segment>.parquet
    <directory>/outcome_ledger/part-<UTC time>-<pid>-<seq>-<owner>-w<segment>.parquet

`outcome_ledger/` is the service's own record of every outcome it accepted (the
idempotency key: decision, type and order id; see `serving.outcomes`), written in the
same write-ahead record as the outcome's `redemptions` row, so the two are kept or lost
together. It is not a contract table: dataset readers ignore the directory.

Each part is written to a hidden temporary file in the same directory, synced and then
renamed into place, so a reader never sees half a part and no part is ever overwritten.

The parts are training data as they are: the dataset loader reads `<table>/*.parquet`
as parts of that table (skipping hidden files), so a `directory` inside a dataset
directory makes every `recsys train --data DATASET` learn from the decisions, and a log
kept elsewhere is added with `recsys train --decisions DIRECTORY` (`data.decision_logs`).
Both are checked with the dataset's rows: a decision read twice is a duplicate
`exposure_id`, an error.
A failed write (disk full, permissions) keeps its rows for the next attempt and is
recorded (`last_error`, `stats()`), never raised into a request; `close()` raises if
rows are still unwritten at the end (they stay in the write-ahead log). A process killed
without `close()` (SIGKILL, OOM) loses nothing it acknowledged: the next `start()` on the
directory writes the logged-ahead rows of stopped processes into parts, exactly once.

Pure Python and polars (no Ray, no web framework), so it is tested in seconds.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import polars as pl

from recsys.data.errors import ContractError
from recsys.data.loader import conform_table
from recsys.data.schema import EXPOSURES, FLOAT, ID, REDEMPTIONS, TS, Column, TableSpec
from serving.wal import WriteAheadError, WriteAheadLog, fsync_directory, part_tag, recover

log = logging.getLogger(__name__)

OUTCOME_LEDGER = TableSpec(
    name="outcome_ledger",
    required=False,
    columns=(
        Column("decision_id", ID, required=True, nullable=False),
        Column("outcome_type", ID, required=True, nullable=False),
        Column("order_id", ID, required=False),
        Column("decision_ts", TS, required=True, nullable=False),
        Column("offer_id", ID, required=False),
        Column("buyer_id", ID, required=True, nullable=False),
        Column("seller_id", ID, required=False),
        Column("ts", TS, required=True, nullable=False),
        Column("amount", FLOAT, required=False, min_value=0.0),
    ),
)
"""Every outcome the service accepted, once: (decision_id, outcome_type, order_id) is its
idempotency key, `decision_ts` when its decision was made. Rows with an `offer_id` also
have their `redemptions` row; a purchase without an offer has only this one."""

TABLES: tuple[TableSpec, ...] = (EXPOSURES, REDEMPTIONS, OUTCOME_LEDGER)
"""The tables the log writes, one subdirectory each (the first two are the contract's).
The order is the write-ahead log's table numbering: new tables go at the end."""

PART_GLOB = "part-*.parquet"
"""Names of finished parts; temporary files start with a dot and end in `.tmp`."""

MAX_RETRY_SECONDS = 30.0
"""Longest wait between automatic retries of a failing write (the wait doubles each time)."""

_SEQUENCE = itertools.count(1)
_SEQUENCE_LOCK = threading.Lock()


@dataclass(frozen=True)
class LogStats:
    """Counters of a `DecisionLog`, for metrics; rows are summed over both tables."""

    rows_accepted: int
    """Rows that passed validation and were taken into the buffer."""
    rows_written: int
    """Rows written to finished parts."""
    flushes: int
    """Flush passes that wrote at least one part and failed nowhere."""
    failed_flushes: int
    """Flush passes in which at least one table could not be written."""
    buffered_rows: int
    """Rows accepted and not yet written."""
    rows_recovered: int = 0
    """Rows of stopped processes' write-ahead logs written into parts by `start()`."""


class DecisionLogError(RuntimeError):
    """Rows could not be made durable (or written); the request is not acknowledged."""


class NotDurableError(DecisionLogError):
    """Rows were taken into the buffer (the next flush writes them) but could not be
    synced to the write-ahead log, so they are not acknowledged as durable."""


class DecisionLog:
    """Buffered, thread-safe writer of decision (`exposures`) and outcome (`redemptions`) rows.

    Parameters
    ----------
    directory
        Where the `exposures/` and `redemptions/` parts go; created on the first write.
    max_rows
        The background thread writes as soon as this many rows are buffered.
    max_seconds
        ... or as soon as the oldest buffered row has waited this long.
    durable
        Once started, every append is in the write-ahead log (`serving.wal`) and on disk
        before it returns, so a killed process loses nothing that was acknowledged; the
        next `start()` on the directory writes such rows into parts. False: appends wait
        for no disk, and a killed process loses what was buffered (at most `max_rows`
        rows or `max_seconds` of them).

    Call `start()` (or use the log as a context manager) to recover, log ahead and flush
    in the background; without it, rows are written only by `flush()` and `close()`.
    """

    def __init__(
        self,
        directory: str | Path,
        max_rows: int = 5000,
        max_seconds: float = 1.0,
        durable: bool = True,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1 (got {max_rows})")
        if not max_seconds > 0:
            raise ValueError(
                f"max_seconds must be a positive number of seconds (got {max_seconds})"
            )
        self.directory = Path(directory)
        self.max_rows = max_rows
        self.max_seconds = float(max_seconds)
        self.last_error: Exception | None = None
        """The most recent write failure (kept after later successes; see `stats()`)."""
        self._cond = threading.Condition()  # guards everything below
        self._flush_lock = threading.Lock()  # one flush pass at a time
        self._buffers: dict[str, list[pl.DataFrame]] = {spec.name: [] for spec in TABLES}
        self._buffered = 0
        self._oldest: float | None = None  # monotonic time the oldest buffered row arrived
        self._retry_at = 0.0
        self._retry_delay = 0.0
        self._accepted = 0
        self._written = 0
        self._flushes = 0
        self._failed_flushes = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self.durable = durable
        self._wal: WriteAheadLog | None = None
        self._recovered = 0

    # ----------------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Recover what stopped processes logged ahead, open this process's write-ahead
        log (`durable`) and start the background flushing thread (a daemon); calling it
        again does nothing."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the decision log is closed; create a new DecisionLog")
            if self._thread is None:
                if self.durable:
                    self._recover()
                self._thread = threading.Thread(
                    target=self._run, name=f"decision-log:{self.directory}", daemon=True
                )
                self._thread.start()
                _close_at_exit(self)
        return self

    def close(self) -> None:
        """Stop the background thread and write every buffered row.

        Safe to call more than once; a later call retries rows an earlier one could not
        write. Raises `DecisionLogError` if rows remain unwritten, since they would be
        lost when the process ends.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._flush_lock:
            self._flush_pass()
        with self._cond:
            left = self._buffered
            done = self._wal if left == 0 else None
            if done is not None:
                self._wal = None
        if done is not None:
            done.close(remove=True)  # every row is in a part
        if left:
            kept = (
                f"; they are kept in the write-ahead log {self._wal.directory} and written "
                "by the next start() on this directory"
                if self._wal is not None
                else ", or the rows are lost when the process ends"
            )
            raise DecisionLogError(
                f"{left} decision-log rows could not be written to {self.directory} "
                f"({self.last_error!r}); free space or fix the permissions there and call "
                f"close() again{kept}"
            ) from self.last_error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------------- request path

    def append_exposures(self, rows: pl.DataFrame) -> None:
        """Validate decision rows against the contract's `exposures` table and buffer them."""
        self._append(EXPOSURES, rows)

    def append_decisions(self, rows: pl.DataFrame) -> None:
        """Buffer decision rows the service built itself in the contract's exact
        `exposures` schema (`EXPOSURES.schema`, its column order).

        The rows are not checked one by one against the contract (the full check costs
        milliseconds per append, most of a request): their schema is compared with the
        contract's, checked once when this module loads; a frame of another schema is
        validated as `append_exposures` would. Logged ahead and acknowledged as
        `append_exposures`.
        """
        if rows.schema != _EXPOSURES_SCHEMA:
            self._append(EXPOSURES, rows)
            return
        self._append_many([(EXPOSURES, rows)], checked=True)

    def append_redemptions(self, rows: pl.DataFrame) -> None:
        """Validate outcome rows against the contract's `redemptions` table and buffer them."""
        self._append(REDEMPTIONS, rows)

    def append_outcomes(self, redemptions: pl.DataFrame, ledger: pl.DataFrame) -> None:
        """Accepted outcomes: their `redemptions` rows and their `OUTCOME_LEDGER` rows, in
        one write-ahead record, so a crash keeps both or neither (see `_append`)."""
        self._append_many([(REDEMPTIONS, redemptions), (OUTCOME_LEDGER, ledger)])

    @property
    def owner(self) -> str | None:
        """The id of this process's write-ahead segments (`.wal/<owner>/`), once opened."""
        wal = self._wal
        return None if wal is None else wal.owner

    def _append(self, spec: TableSpec, rows: pl.DataFrame) -> None:
        """All rows or none: `ContractError` before anything is buffered.

        Durable and started: returns once the rows are in the write-ahead log on disk
        (`DecisionLogError` if they cannot be written there: then they were not taken).
        """
        self._append_many([(spec, rows)])

    def _append_many(
        self, items: list[tuple[TableSpec, pl.DataFrame]], checked: bool = False
    ) -> None:
        """`_append` for the rows of several tables, kept or lost together (`checked`: the
        rows are in their table's exact schema already, see `append_decisions`)."""
        if self._closed:
            raise _closed_error()
        frames = items if checked else [(spec, conform_rows(rows, spec)) for spec, rows in items]
        frames = [(spec, frame) for spec, frame in frames if frame.height]
        if not frames:
            return
        with self._cond:
            if self._closed:
                raise _closed_error()
            if self.durable and self._thread is not None and self._wal is None:
                self._wal = self._open_wal()  # on the first rows: nothing on disk before
            wal = self._wal
            seq = self._log_ahead(wal, frames) if wal is not None else 0
            first = self._buffered == 0
            rows = sum(frame.height for _, frame in frames)
            for spec, frame in frames:
                self._buffers[spec.name].append(frame)
            self._buffered += rows
            self._accepted += rows
            if self._oldest is None:
                self._oldest = time.monotonic()
            if first or self._buffered >= self.max_rows:
                self._cond.notify_all()
        if wal is not None:
            # Outside the lock, so concurrent appends share one fsync. If it fails the rows
            # stay buffered (written as parts by the next flush), but the caller is told
            # they were not made durable.
            try:
                wal.sync(seq)
            except WriteAheadError as exc:
                raise NotDurableError(
                    f"decision-log rows could not be made durable in {wal.directory} ({exc}); "
                    "free space or fix the permissions there"
                ) from exc

    def _log_ahead(self, wal: WriteAheadLog, frames: list[tuple[TableSpec, pl.DataFrame]]) -> int:
        """Append `frames` to the write-ahead log as one record (caller holds `_cond`);
        its sequence."""
        try:
            if len(frames) == 1:
                ((spec, frame),) = frames
                return wal.append(spec.name, frame)
            return wal.append_group([(spec.name, frame) for spec, frame in frames])
        except WriteAheadError as exc:
            raise DecisionLogError(
                f"decision-log rows could not be written to {wal.directory} ({exc}); they "
                "were not accepted. Free space or fix the permissions there"
            ) from exc

    def _recover(self) -> None:
        """Write the logged-ahead rows of stopped processes as parts (see `serving.wal`)."""

        def write(table: str, rows: pl.DataFrame, tag: str) -> None:
            _write_part(rows, self.directory / table, tag)

        for done in recover(self.directory, [spec.name for spec in TABLES], write):
            self._recovered += sum(done.rows.values())

    def _open_wal(self) -> WriteAheadLog:
        """This process's write-ahead log, open (caller holds `_cond`)."""
        wal = WriteAheadLog(self.directory, [spec.name for spec in TABLES])
        try:
            wal.open()
        except OSError as exc:
            raise DecisionLogError(
                f"cannot open the write-ahead log in {wal.directory} ({exc}); the rows were "
                "not accepted. Free space or fix the permissions there"
            ) from exc
        return wal

    # ----------------------------------------------------------------------- writing

    def flush(self) -> int:
        """Write every row accepted so far, now; returns the number of rows written.

        Raises `DecisionLogError` if a table could not be written; its rows stay
        buffered for the next flush.
        """
        with self._flush_lock:
            written, error = self._flush_pass()
        if error is not None:
            raise DecisionLogError(
                f"could not write decision-log rows to {self.directory} ({error!r}); they "
                "are kept and written by the next flush"
            ) from error
        return written

    def stats(self) -> LogStats:
        """A consistent snapshot of the counters."""
        with self._cond:
            return LogStats(
                rows_accepted=self._accepted,
                rows_written=self._written,
                flushes=self._flushes,
                failed_flushes=self._failed_flushes,
                buffered_rows=self._buffered,
                rows_recovered=self._recovered,
            )

    def _flush_pass(self) -> tuple[int, Exception | None]:
        """Take the buffers, write one part per table, put back what failed.

        Caller holds `_flush_lock`. Appends continue meanwhile into fresh buffers; rows
        that failed go back in front of them, so order within a table is kept.
        """
        with self._cond:
            taken = self._buffers
            self._buffers = {spec.name: [] for spec in TABLES}
            oldest = self._oldest
            self._oldest = None
            wal = self._wal
            # Under the lock appends hold: every row taken is in a segment up to `through`.
            has_rows = any(taken.values())
            through = wal.rotate() if wal is not None and has_rows else None
        tag = part_tag(wal.owner, through) if wal is not None and through is not None else None
        written = 0
        error: Exception | None = None
        failed: dict[str, list[pl.DataFrame]] = {}
        for spec in TABLES:
            frames = taken[spec.name]
            if not frames:
                continue
            frame = pl.concat(frames, how="vertical")
            try:
                _write_part(frame, self.directory / spec.name, tag)
            except Exception as exc:  # any failure: keep the rows, never lose them
                log.warning(
                    "could not write %d %s rows to %s (kept for the next flush): %r",
                    frame.height,
                    spec.name,
                    self.directory,
                    exc,
                )
                error = exc
                failed[spec.name] = frames
            else:
                written += frame.height
        with self._cond:
            self._written += written
            self._buffered -= written
            for name, frames in failed.items():
                self._buffers[name] = frames + self._buffers[name]
            if failed:
                self._failed_flushes += 1
                self.last_error = error
                if oldest is not None:
                    self._oldest = oldest if self._oldest is None else min(oldest, self._oldest)
                self._retry_delay = min(
                    max(2 * self._retry_delay, self.max_seconds), MAX_RETRY_SECONDS
                )
                self._retry_at = time.monotonic() + self._retry_delay
            elif written:
                self._flushes += 1
                self._retry_delay = 0.0
                self._retry_at = 0.0
        if not failed and wal is not None and through is not None:
            wal.drop_through(through)  # their rows are all in parts now
        return written, error

    def _run(self) -> None:
        """Background loop: wait until a flush is due (or the log closes), then flush."""
        while True:
            with self._cond:
                while not self._closed:
                    due = self._next_flush_at()
                    now = time.monotonic()
                    if due is not None and due <= now:
                        break
                    self._cond.wait(None if due is None else due - now)
                if self._closed:
                    return  # close() writes what is left
            with self._flush_lock:
                self._flush_pass()

    def _next_flush_at(self) -> float | None:
        """Monotonic time of the next automatic flush; None while nothing is buffered."""
        if self._oldest is None or self._buffered == 0:
            return None
        due = 0.0 if self._buffered >= self.max_rows else self._oldest + self.max_seconds
        return max(due, self._retry_at)


def _closed_error() -> DecisionLogError:
    # A replica shutting down closes its log: the request is answered 503 + Retry-After.
    return DecisionLogError(
        "the decision log is closed (this replica is shutting down), so nothing more can "
        "be made durable here; retry: another replica answers"
    )


# --------------------------------------------------------------------------- validation

_EXPOSURES_SCHEMA = pl.Schema(EXPOSURES.schema)
"""The exact schema of trusted decision rows (`DecisionLog.append_decisions`)."""


def conform_rows(rows: pl.DataFrame, spec: TableSpec) -> pl.DataFrame:
    """`rows` cast to the contract columns of `spec`, in contract order; `ContractError` if bad.

    Absent optional columns become nulls. Columns outside the contract are refused
    rather than dropped, so the log holds exactly what the service meant to record.
    """
    source = f"decision log {spec.name}"
    extra = [c for c in rows.columns if c not in spec.schema]
    if extra:
        raise ContractError(
            source,
            f"has columns outside the contract: {', '.join(extra)}",
            hint=f"the log keeps only the {spec.name} columns "
            f"{', '.join(spec.schema)}; drop the others",
        )
    return conform_table(rows, spec, source).select(list(spec.schema))


# --------------------------------------------------------------------------- files


def _write_part(frame: pl.DataFrame, directory: Path, tag: str | None = None) -> Path:
    """Write `frame` as a new part in `directory` atomically; the part's path.

    Temporary file in the same directory, fsync, rename: a crash leaves at most a hidden
    `.tmp` file, which readers ignore. A name that exists already is never reused. `tag`
    (see `serving.wal.part_tag`) ends the name: which logged-ahead rows the part holds.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / _part_name(tag)
    while final.exists():
        final = directory / _part_name(tag)
    tmp = directory / f".{final.name}.tmp"
    try:
        frame.write_parquet(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    return final


def _part_name(tag: str | None = None) -> str:
    """`part-<UTC time to the microsecond>-<pid>-<sequence>[-<tag>].parquet`, unique per host.

    The sequence is shared by every log of the process, so two logs writing to one
    directory never pick the same name; the pid separates processes. Names sort by time.
    """
    with _SEQUENCE_LOCK:
        seq = next(_SEQUENCE)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    suffix = f"-{tag}" if tag else ""
    return f"part-{stamp}-{os.getpid()}-{seq:06d}{suffix}.parquet"


def read_log(directory: str | Path) -> dict[str, pl.DataFrame]:
    """Every finished part of each table under `directory`, with the contract's dtypes.

    Keys are `exposures` and `redemptions`; a table with no parts is an empty frame with
    the contract's columns. Rows come in part-name order (time of writing).
    """
    out: dict[str, pl.DataFrame] = {}
    for spec in TABLES:
        parts = sorted((Path(directory) / spec.name).glob(PART_GLOB))
        if not parts:
            out[spec.name] = pl.DataFrame(schema=spec.schema)
            continue
        out[spec.name] = pl.scan_parquet(
            parts, schema=spec.schema, missing_columns="insert", extra_columns="ignore"
        ).collect()
    return out


# --------------------------------------------------------------------------- interpreter exit

_OPEN_LOGS: weakref.WeakSet[DecisionLog] = weakref.WeakSet()
_EXIT_HOOK_LOCK = threading.Lock()
_exit_hook_registered = False


def _close_at_exit(decision_log: DecisionLog) -> None:
    """Have a normal interpreter exit close `decision_log` (held weakly)."""
    global _exit_hook_registered
    with _EXIT_HOOK_LOCK:
        _OPEN_LOGS.add(decision_log)
        if not _exit_hook_registered:
            atexit.register(_close_open_logs)
            _exit_hook_registered = True


def _close_open_logs() -> None:
    """atexit: write what every started log still buffers; failures are logged."""
    for decision_log in list(_OPEN_LOGS):
        try:
            decision_log.close()
        except Exception:
            log.exception("decision log %s lost rows at exit", decision_log.directory)
