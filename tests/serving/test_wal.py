"""The decision log's write-ahead log: a killed process loses nothing it acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import polars as pl
import pytest

from serving import wal as wal_module
from serving.decision_log import DecisionLog, DecisionLogError, read_log
from serving.wal import WAL_DIR, WriteAheadError, WriteAheadLog, recover, tag_of
from tests.serving.test_decision_log import exposures, redemptions

TABLES = ("exposures", "redemptions")

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from serving.decision_log import DecisionLog
    from serving.wal import WriteAheadLog
    from tests.serving.test_decision_log import exposures

    directory, durable, mode = sys.argv[1], sys.argv[2] == "1", sys.argv[4]
    kill_after = int(sys.argv[3])
    # Thresholds that never flush on their own: whatever survives, the write-ahead log kept.
    log = DecisionLog(directory, max_rows=10**7, max_seconds=3600, durable=durable).start()
    if mode == "flushed-then-killed":
        # A flush wrote its part, then the process died before deleting the segments.
        WriteAheadLog.drop_through = lambda self, segment: None
        log.append_exposures(exposures(range(0, 5)))
        log.flush()
        log.append_exposures(exposures(range(5, 8)))
        print("acknowledged 7", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    for i in range(10**6):
        log.append_exposures(exposures([i]))
        print(f"acknowledged {i}", flush=True)  # after append returned: the caller's answer
        if i + 1 == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_and_kill(directory: Path, durable: bool, kill_after: int, mode: str = "stream") -> set[str]:
    """Run the child until it kills itself; the decision ids it acknowledged."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(directory),
            "1" if durable else "0",
            str(kill_after),
            mode,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    last = [int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("ack")]
    assert last, done.stderr
    return {f"d{i}" for i in range(max(last) + 1)}


def restart_and_read(directory: Path) -> tuple[pl.DataFrame, int]:
    """Start a new log on the directory (recovering), close it; the exposures and the
    number of rows recovered."""
    log = DecisionLog(directory).start()
    recovered = log.stats().rows_recovered
    log.close()
    return read_log(directory)["exposures"], recovered


def test_every_acknowledged_decision_survives_sigkill_exactly_once(tmp_path: Path) -> None:
    acknowledged = run_and_kill(tmp_path, durable=True, kill_after=300)
    logged, recovered = restart_and_read(tmp_path)
    ids = logged["exposure_id"]
    assert set(ids.to_list()) >= acknowledged
    assert ids.n_unique() == ids.len()  # nothing written twice
    assert recovered == len(acknowledged)  # the log never flushed: all of it came back
    assert not (tmp_path / WAL_DIR).exists()  # recovered and cleaned up
    # A second restart finds nothing more to recover.
    again, recovered_again = restart_and_read(tmp_path)
    assert recovered_again == 0 and again.height == logged.height


def test_without_the_write_ahead_log_a_killed_process_loses_its_buffer(tmp_path: Path) -> None:
    # The control: the same run, not durable, shows what the write-ahead log prevents.
    acknowledged = run_and_kill(tmp_path, durable=False, kill_after=50)
    logged, _ = restart_and_read(tmp_path)
    assert len(acknowledged) == 50 and logged.height == 0


def test_a_part_written_before_the_kill_is_not_replayed_again(tmp_path: Path) -> None:
    acknowledged = run_and_kill(tmp_path, durable=True, kill_after=0, mode="flushed-then-killed")
    logged, recovered = restart_and_read(tmp_path)
    assert sorted(logged["exposure_id"].to_list()) == sorted(acknowledged)
    assert recovered == 3  # only the rows after the flush
    tags = [tag_of(p) for p in (tmp_path / "exposures").glob("part-*.parquet")]
    assert all(t is not None for t in tags) and len({t[0] for t in tags if t}) == 1


# --------------------------------------------------------------------------- segments


def dead_owner(directory: Path, batches: list[pl.DataFrame]) -> Path:
    """A write-ahead log that logged `batches` of exposures and whose process is gone."""
    wal = WriteAheadLog(directory, TABLES)
    wal.open()
    for frame in batches:
        wal.sync(wal.append("exposures", frame))
    wal.close(remove=False)  # releases the lock, as a dead process's would be
    (segment,) = list(wal.directory.glob("seg-*.wal"))
    return segment


def recover_into(directory: Path) -> tuple[list[wal_module.Recovered], dict[str, pl.DataFrame]]:
    written: dict[str, pl.DataFrame] = {}

    def write(table: str, rows: pl.DataFrame, tag: str) -> None:
        written[table] = rows

    return recover(directory, TABLES, write), written


def test_a_torn_last_record_is_dropped_and_the_whole_ones_recovered(tmp_path: Path) -> None:
    segment = dead_owner(tmp_path, [exposures([1]), exposures([2]), exposures([3])])
    with segment.open("r+b") as handle:
        handle.truncate(segment.stat().st_size - 5)  # died while writing the third
    (done,), written = recover_into(tmp_path)
    assert done.torn and done.rows == {"exposures": 2, "redemptions": 0}
    assert written["exposures"]["exposure_id"].to_list() == ["d1", "d2"]


def test_a_corrupt_record_ends_the_segment(tmp_path: Path) -> None:
    segment = dead_owner(tmp_path, [exposures([1]), exposures([2])])
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # a flipped byte in the second record's payload
    segment.write_bytes(bytes(data))
    (done,), written = recover_into(tmp_path)
    assert done.torn and written["exposures"]["exposure_id"].to_list() == ["d1"]


def test_a_live_owner_is_never_recovered(tmp_path: Path) -> None:
    live = WriteAheadLog(tmp_path, TABLES)
    live.open()
    live.sync(live.append("exposures", exposures([1])))
    done, written = recover_into(tmp_path)
    assert done == [] and written == {}
    assert list(live.directory.glob("seg-*.wal"))  # untouched
    live.close(remove=True)
    assert not (tmp_path / WAL_DIR).exists()


def test_both_tables_are_replayed(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, TABLES)
    wal.open()
    wal.append("exposures", exposures([1, 2]))
    wal.sync(wal.append("redemptions", redemptions(3)))
    wal.close(remove=False)
    (done,), written = recover_into(tmp_path)
    assert done.rows == {"exposures": 2, "redemptions": 3} and not done.torn
    assert written["redemptions"]["amount"].to_list() == [10.0, 11.0, 12.0]


def test_a_group_record_is_recovered_whole_or_not_at_all(tmp_path: Path) -> None:
    """An outcome's redemption and its ledger entry are one record: a crash while it is
    written loses both (it was never acknowledged), never one of them."""
    for torn in (False, True):
        directory = tmp_path / ("torn" if torn else "whole")
        wal = WriteAheadLog(directory, TABLES)
        wal.open()
        wal.sync(wal.append("exposures", exposures([1])))
        wal.sync(wal.append_group([("exposures", exposures([2])), ("redemptions", redemptions(2))]))
        wal.close(remove=False)
        (segment,) = list(wal.directory.glob("seg-*.wal"))
        if torn:
            with segment.open("r+b") as handle:
                handle.truncate(segment.stat().st_size - 1)
        (done,), _ = recover_into(directory)
        expected = (
            {"exposures": 1, "redemptions": 0} if torn else {"exposures": 2, "redemptions": 2}
        )
        assert done.rows == expected and done.torn == torn


def test_a_reader_follows_a_live_segment_record_by_record(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, TABLES)
    wal.open()
    wal.sync(wal.append("exposures", exposures([1])))
    ((owner, segment, number),) = wal_module.segment_files(tmp_path)
    assert (owner, number) == (wal.owner, 1)
    records, offset = wal_module.read_records(segment, 0, len(TABLES))
    assert [t for t, _ in records] == [0] and offset == segment.stat().st_size
    wal.sync(wal.append_group([("exposures", exposures([2])), ("redemptions", redemptions(1))]))
    with segment.open("ab") as handle:  # a record being written: not read yet
        handle.write(b"\x05\x00\x00")
    more, after = wal_module.read_records(segment, offset, len(TABLES))
    assert [t for t, _ in more] == [0, 1] and after == segment.stat().st_size - 3
    assert wal_module.read_records(segment, after, len(TABLES)) == ([], after)
    wal.close(remove=True)
    assert wal_module.read_records(segment, 0, len(TABLES)) == ([], 0)  # gone: in parts


# --------------------------------------------------------------------------- the request path


def test_concurrent_appends_share_fsyncs_and_all_are_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fsync
    calls: list[int] = []

    def slow_fsync(fd: int) -> None:
        calls.append(fd)
        threading.Event().wait(0.005)  # a disk's sync takes time: others queue behind it
        real(fd)

    monkeypatch.setattr(wal_module.os, "fsync", slow_fsync)
    log = DecisionLog(tmp_path, max_rows=10**7, max_seconds=3600).start()

    def worker(start: int) -> None:
        for i in range(start, start + 25):
            log.append_exposures(exposures([i]))

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) < 200  # group commit: fewer syncs than the 200 appends
    wal = log._wal
    assert wal is not None
    (segment,) = list(wal.directory.glob("seg-*.wal"))
    records, torn = wal_module._read_segment(segment, len(TABLES))
    assert len(records) == 200 and not torn  # every acknowledged row is on disk
    log.close()
    assert read_log(tmp_path)["exposures"].height == 200


def test_rows_the_write_ahead_log_refuses_are_not_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = DecisionLog(tmp_path).start()
    log.append_exposures(exposures([1]))

    def full(self: WriteAheadLog, table: str, frame: pl.DataFrame) -> int:
        raise WriteAheadError("cannot write seg-1.wal: [Errno 28] No space left on device")

    monkeypatch.setattr(WriteAheadLog, "append", full)
    with pytest.raises(DecisionLogError, match=r"No space left.*they were not accepted"):
        log.append_exposures(exposures([2]))
    monkeypatch.undo()
    log.append_exposures(exposures([3]))
    assert log.stats().rows_accepted == 2
    log.close()
    assert read_log(tmp_path)["exposures"]["exposure_id"].to_list() == ["d1", "d3"]


def test_a_flush_deletes_the_segments_its_parts_hold(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, max_rows=10**7, max_seconds=3600).start()
    log.append_exposures(exposures([1, 2]))
    wal = log._wal
    assert wal is not None
    log.flush()
    log.append_exposures(exposures([3]))
    segments = sorted(p.name for p in wal.directory.glob("seg-*.wal"))
    assert segments == ["seg-00000002.wal"]  # the first one's rows are in a part
    (part,) = list((tmp_path / "exposures").glob("part-*.parquet"))
    assert tag_of(part) == (wal.owner, 1)
    log.close()
    assert not (tmp_path / WAL_DIR).exists()
