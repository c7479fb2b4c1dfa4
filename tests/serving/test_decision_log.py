"""The decision log: contract rows in, Parquet parts out, nothing accepted ever lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recsys.data import ContractError, load_dataset
from recsys.data.schema import EXPOSURES, REDEMPTIONS
from serving import decision_log
from serving.decision_log import DecisionLog, DecisionLogError, LogStats, read_log
from tests.data.test_loader import write_dataset

DEADLINE = 2.0
"""Longest a test waits for the background thread (it normally needs ~0.1 s)."""


def _ts(minute: int) -> datetime:
    return datetime(2024, 5, 1, 12, minute, tzinfo=UTC)


def exposures(ids: range | list[int], prefix: str = "d") -> pl.DataFrame:
    """Decision rows as the service makes them: a decision id, exact propensity, version."""
    n = len(ids)
    return pl.DataFrame(
        {
            "exposure_id": [f"{prefix}{i}" for i in ids],
            "buyer_id": [f"b{i % 7}" for i in ids],
            "offer_id": [None if i % 5 == 0 else f"o{i % 3}" for i in ids],
            "ts": [_ts(i % 60) for i in ids],
            "propensity": [0.25 + 0.5 * (i % 2) for i in ids],
            "policy": ["promo-ranker/3"] * n,
            "seller_id": [f"s{i % 2}" for i in ids],
            "arm": ["control" if i % 5 == 0 else "treated" for i in ids],
        },
        schema=EXPOSURES.schema,
    )


def redemptions(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "buyer_id": [f"b{i}" for i in range(n)],
            "offer_id": ["o1"] * n,
            "ts": [_ts(i) for i in range(n)],
            "exposure_id": [f"d{i}" for i in range(n)],
            "order_id": [None] * n,
            "amount": [10.0 + i for i in range(n)],
        },
        schema=REDEMPTIONS.schema,
    )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until true, failing after `DEADLINE` seconds."""
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {DEADLINE} s waiting for {what}")
        time.sleep(0.01)


def parts(directory: Path, table: str = "exposures") -> list[Path]:
    return sorted((directory / table).glob("*"))


def sort_ids(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("exposure_id")


# --------------------------------------------------------------------------- round trip


def test_rows_flushed_are_read_back_equal_with_the_contract_types(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    log.append_exposures(exposures(range(5)))
    log.append_exposures(exposures(range(5, 8)))
    log.append_redemptions(redemptions(3))
    assert log.flush() == 11
    back = read_log(tmp_path)
    assert_frame_equal(back["exposures"], exposures(range(8)))
    assert_frame_equal(back["redemptions"], redemptions(3))
    assert back["exposures"].schema == EXPOSURES.schema
    assert len(parts(tmp_path)) == 1 and len(parts(tmp_path, "redemptions")) == 1
    assert log.stats() == LogStats(
        rows_accepted=11, rows_written=11, flushes=1, failed_flushes=0, buffered_rows=0
    )
    log.close()


def test_rows_are_cast_to_the_contract_and_absent_optional_columns_are_null(
    tmp_path: Path,
) -> None:
    raw = pl.DataFrame(
        {
            "exposure_id": [1, 2],  # integer ids become strings
            "buyer_id": ["b1", "b2"],
            "ts": ["2024-05-01T12:00:00", "2024-05-01T14:00:00+02:00"],  # text, read as UTC
            "propensity": [1.0, 0.5],
        }
    )
    with DecisionLog(tmp_path) as log:
        log.append_exposures(raw)
    back = read_log(tmp_path)["exposures"]
    assert back.schema == EXPOSURES.schema
    assert back["exposure_id"].to_list() == ["1", "2"]
    assert back["ts"].to_list() == [_ts(0), _ts(0)]
    assert back["offer_id"].null_count() == 2 and back["seller_id"].null_count() == 2


def test_read_log_of_an_empty_directory_gives_empty_contract_frames(tmp_path: Path) -> None:
    back = read_log(tmp_path / "nothing-yet")
    assert back["exposures"].shape == (0, len(EXPOSURES.columns))
    assert back["exposures"].schema == EXPOSURES.schema
    assert back["redemptions"].schema == REDEMPTIONS.schema


def test_nothing_touches_the_disk_before_rows_are_written(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    log = DecisionLog(directory).start()
    assert log.flush() == 0
    log.append_exposures(exposures([]))  # an empty frame is accepted and ignored
    log.close()
    assert not directory.exists()
    assert log.stats().flushes == 0


# --------------------------------------------------------------------------- flushing


def test_the_background_thread_flushes_when_max_rows_are_buffered(tmp_path: Path) -> None:
    with DecisionLog(tmp_path, max_rows=5, max_seconds=60) as log:
        log.append_exposures(exposures(range(3)))
        assert log.stats().buffered_rows == 3
        log.append_exposures(exposures(range(3, 6)))
        wait_for(lambda: log.stats().rows_written == 6, "a flush by size")
        assert_frame_equal(sort_ids(read_log(tmp_path)["exposures"]), exposures(range(6)))


def test_the_background_thread_flushes_when_max_seconds_have_passed(tmp_path: Path) -> None:
    with DecisionLog(tmp_path, max_rows=10_000, max_seconds=0.1) as log:
        log.append_redemptions(redemptions(2))
        wait_for(lambda: log.stats().rows_written == 2, "a flush by time")
        log.append_redemptions(redemptions(1))  # a second batch gets its own timer
        wait_for(lambda: log.stats().rows_written == 3, "a second flush by time")
        assert log.stats().flushes == 2
    assert read_log(tmp_path)["redemptions"].height == 3


def test_close_flushes_everything_and_is_idempotent(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, max_rows=10_000, max_seconds=60).start()
    log.append_exposures(exposures(range(4)))
    log.close()
    log.close()
    assert read_log(tmp_path)["exposures"].height == 4
    with pytest.raises(RuntimeError, match="closed"):
        log.append_exposures(exposures(range(4, 5)))
    with pytest.raises(RuntimeError, match="closed"):
        log.start()


def test_close_without_start_still_writes(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    log.append_redemptions(redemptions(2))
    log.close()
    assert read_log(tmp_path)["redemptions"].height == 2


def test_an_interpreter_exit_without_close_still_writes(tmp_path: Path) -> None:
    script = (
        "import polars as pl, sys\n"
        "from serving.decision_log import DecisionLog\n"
        "log = DecisionLog(sys.argv[1], max_rows=10_000, max_seconds=60).start()\n"
        "log.append_redemptions(pl.DataFrame({'buyer_id': ['b'], 'offer_id': ['o'],"
        " 'ts': ['2024-05-01']}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=root)
    assert read_log(tmp_path)["redemptions"]["buyer_id"].to_list() == ["b"]


# --------------------------------------------------------------------------- bad rows


@pytest.mark.parametrize(
    ("change", "column"),
    [
        (lambda f: f.with_columns(propensity=pl.lit(1.5)), "propensity"),
        (lambda f: f.drop("buyer_id"), "buyer_id"),
        (lambda f: f.with_columns(ts=pl.lit("yesterday")), "ts"),
        (lambda f: f.with_columns(exposure_id=pl.lit("same")), "exposure_id"),
        (lambda f: f.with_columns(score=pl.lit(0.3)), None),
    ],
)
def test_bad_rows_are_rejected_whole_and_do_not_poison_the_buffer(
    tmp_path: Path, change: Callable[[pl.DataFrame], pl.DataFrame], column: str | None
) -> None:
    log = DecisionLog(tmp_path)
    log.append_exposures(exposures(range(2)))
    with pytest.raises(ContractError) as info:
        log.append_exposures(change(exposures(range(2, 4))))
    assert info.value.column == column
    assert "decision log exposures" in str(info.value)
    log.append_exposures(exposures(range(4, 6)))
    assert log.stats().rows_accepted == 4
    log.close()
    assert_frame_equal(read_log(tmp_path)["exposures"], exposures([0, 1, 4, 5]))


def test_extra_columns_are_refused_with_the_columns_the_log_keeps(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="outside the contract: score") as info:
        DecisionLog(tmp_path).append_exposures(exposures(range(1)).with_columns(score=0.1))
    assert "propensity" in info.value.hint


def test_the_services_own_rows_skip_the_row_checks_but_not_the_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    conform = decision_log.conform_rows

    def counting(rows: pl.DataFrame, spec: object) -> pl.DataFrame:
        checked.append(getattr(spec, "name", "?"))
        return conform(rows, spec)  # type: ignore[arg-type]

    monkeypatch.setattr(decision_log, "conform_rows", counting)
    with DecisionLog(tmp_path) as log:
        log.append_decisions(exposures(range(3)))  # the exact schema: no row checks
        assert checked == []
        # Another schema (absent optional column, columns out of order) is checked whole.
        log.append_decisions(exposures(range(3, 5)).drop("seller_id"))
        assert checked == ["exposures"]
        with pytest.raises(ContractError):
            log.append_decisions(exposures(range(5, 6)).with_columns(propensity=pl.lit("?")))
    expected = pl.concat(
        [
            exposures(range(3)),
            exposures(range(3, 5)).with_columns(pl.lit(None, pl.String).alias("seller_id")),
        ]
    )
    assert_frame_equal(read_log(tmp_path)["exposures"], expected)


@pytest.mark.parametrize(("rows", "seconds"), [(0, 1.0), (10, 0.0), (10, -1.0)])
def test_thresholds_must_be_positive(tmp_path: Path, rows: int, seconds: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        DecisionLog(tmp_path, max_rows=rows, max_seconds=seconds)


# --------------------------------------------------------------------------- failed writes


def _fail_once(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[int]:
    """Make the next part write raise `error`; returns a list counting the calls."""
    real = decision_log._write_part
    calls: list[int] = []

    def flaky(frame: pl.DataFrame, directory: Path, tag: str | None = None) -> Path:
        calls.append(frame.height)
        if len(calls) == 1:
            raise error
        return real(frame, directory, tag)

    monkeypatch.setattr(decision_log, "_write_part", flaky)
    return calls


def test_a_failed_write_keeps_the_rows_for_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_once(monkeypatch, OSError(28, "No space left on device"))
    log = DecisionLog(tmp_path)
    log.append_exposures(exposures(range(3)))
    log.append_redemptions(redemptions(2))
    with pytest.raises(DecisionLogError, match="kept and written by the next flush"):
        log.flush()
    stats = log.stats()
    assert (stats.buffered_rows, stats.rows_written, stats.failed_flushes) == (3, 2, 1)
    assert isinstance(log.last_error, OSError)
    assert parts(tmp_path) == []  # the failed table wrote nothing; the other one did
    assert read_log(tmp_path)["redemptions"].height == 2
    log.append_exposures(exposures(range(3, 5)))
    assert log.flush() == 5
    log.close()
    assert_frame_equal(read_log(tmp_path)["exposures"], exposures(range(5)))
    assert log.stats().buffered_rows == 0


def test_a_background_write_failure_is_recorded_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fail_once(monkeypatch, PermissionError(13, "Permission denied"))
    with DecisionLog(tmp_path, max_rows=10_000, max_seconds=0.05) as log:
        log.append_exposures(exposures(range(3)))  # never raises into the caller
        wait_for(lambda: log.stats().rows_written == 3, "the retried flush")
        assert calls == [3, 3]
        assert log.stats().failed_flushes == 1
        assert isinstance(log.last_error, PermissionError)
    assert read_log(tmp_path)["exposures"].height == 3


def test_a_real_filesystem_error_keeps_rows_and_close_raises_until_they_are_written(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "exposures"
    blocker.write_text("a file where the exposures directory should be")
    log = DecisionLog(tmp_path)
    log.append_exposures(exposures(range(3)))
    with pytest.raises(DecisionLogError) as info:
        log.close()
    assert "3 decision-log rows could not be written" in str(info.value)
    assert "call close() again" in str(info.value)
    assert log.stats().buffered_rows == 3
    blocker.unlink()
    log.close()
    assert read_log(tmp_path)["exposures"].height == 3


def test_a_write_failing_before_the_rename_leaves_no_part_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = DecisionLog(tmp_path)
    log.append_exposures(exposures(range(2)))

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as patch:
        patch.setattr(decision_log.os, "replace", broken_replace)
        with pytest.raises(DecisionLogError):
            log.flush()
    assert parts(tmp_path) == []  # no part, and no hidden .tmp either
    log.close()
    assert [p.suffix for p in parts(tmp_path)] == [".parquet"]


# --------------------------------------------------------------------------- concurrency


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    n_threads, batches, size = 6, 15, 4
    errors: list[BaseException] = []

    def producer(t: int) -> None:
        try:
            for b in range(batches):
                start = (t * batches + b) * size
                log.append_exposures(exposures(range(start, start + size)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    log = DecisionLog(tmp_path, max_rows=25, max_seconds=0.01).start()
    threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert errors == []
    total = n_threads * batches * size
    back = read_log(tmp_path)["exposures"]
    assert_frame_equal(sort_ids(back), sort_ids(exposures(range(total))))
    stats = log.stats()
    assert (stats.rows_accepted, stats.rows_written, stats.buffered_rows) == (total, total, 0)
    assert stats.flushes == len(parts(tmp_path)) > 1


def test_two_logs_in_one_directory_never_clobber_each_others_parts(tmp_path: Path) -> None:
    first, second = DecisionLog(tmp_path), DecisionLog(tmp_path)
    for i in range(10):
        first.append_exposures(exposures([i], prefix="a"))
        second.append_exposures(exposures([i], prefix="b"))
        first.flush()
        second.flush()
    first.close()
    second.close()
    names = [p.name for p in parts(tmp_path)]
    assert len(names) == 20 and len(set(names)) == 20
    assert all(f"-{os.getpid()}-" in name for name in names)
    assert read_log(tmp_path)["exposures"]["exposure_id"].n_unique() == 20


def test_an_existing_part_name_is_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = iter(["part-x-1.parquet", "part-x-1.parquet", "part-x-2.parquet"])
    monkeypatch.setattr(decision_log, "_part_name", lambda tag=None: next(names))
    log = DecisionLog(tmp_path)
    log.append_exposures(exposures([0]))
    log.flush()
    log.append_exposures(exposures([1]))
    log.flush()
    assert [p.name for p in parts(tmp_path)] == ["part-x-1.parquet", "part-x-2.parquet"]
    assert_frame_equal(read_log(tmp_path)["exposures"], exposures([0, 1]))


# --------------------------------------------------------------------------- training input


def _decisions(ids: list[str]) -> pl.DataFrame:
    """Two decisions of seller s1 as the service logs them: of1 to b1 with propensity 0.5,
    and "nothing" for b2, with the exact propensity (0.8) of choosing nothing."""
    return pl.DataFrame(
        {
            "exposure_id": ids,
            "buyer_id": ["b1", "b2"],
            "offer_id": ["of1", None],
            "ts": [datetime(2024, 1, 4, tzinfo=UTC)] * 2,
            "propensity": [0.5, 0.8],
            "policy": ["promo-ranker/1"] * 2,
            "seller_id": ["s1", "s1"],
            "arm": [None, None],
        },
        schema=EXPOSURES.schema,
    )


def _redemption(exposure_id: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "buyer_id": ["b1"],
            "offer_id": ["of1"],
            "ts": [datetime(2024, 1, 5, tzinfo=UTC)],
            "exposure_id": [exposure_id],
            "order_id": ["o9"],
            "amount": [25.0],
        },
        schema=REDEMPTIONS.schema,
    )


def test_a_log_written_into_the_dataset_directory_is_training_data(tmp_path: Path) -> None:
    # decision_log_dir = the dataset: exposures/ and redemptions/ parts next to the files.
    root = write_dataset(tmp_path / "ds")
    log = DecisionLog(root)
    log.append_exposures(_decisions(["d1", "d2"]))
    log.flush()
    log.append_redemptions(_redemption("d1"))
    log.close()
    ds = load_dataset(root)
    assert ds.exposures is not None and ds.redemptions is not None
    assert ds.exposures["exposure_id"].to_list() == ["e1", "e2", "e3", "d1", "d2"]
    nothing = ds.exposures.row(4, named=True)
    assert (nothing["offer_id"], nothing["propensity"], nothing["seller_id"]) == (None, 0.8, "s1")
    assert ds.redemptions["exposure_id"].to_list() == ["e2", "d1"]
    summary = ds.summary()
    assert summary.control_size == 2  # e3 of the dataset and the logged "nothing"
    assert summary.propensity_share == 4 / 5  # e3 has none; both decisions have theirs


def test_a_log_kept_elsewhere_is_added_and_a_decision_read_twice_is_refused(
    tmp_path: Path,
) -> None:
    root = write_dataset(tmp_path / "ds")
    with DecisionLog(tmp_path / "log") as log:
        log.append_exposures(_decisions(["d1", "d2"]))
        log.append_redemptions(_redemption("d1"))
    ds = load_dataset(root, [tmp_path / "log"])
    assert ds.exposures is not None and ds.redemptions is not None
    assert ds.exposures.height == 5 and ds.redemptions.height == 2
    # The same log copied into the dataset as well: every decision twice, an error.
    shutil.copytree(tmp_path / "log" / "exposures", root / "exposures")
    with pytest.raises(ContractError) as info:
        load_dataset(root, [tmp_path / "log"])
    files = {v.file.split("/part-")[0] for v in info.value.violations}
    assert files == {"exposures", f"{tmp_path}/log/exposures"}
    assert all(v.column == "exposure_id" and v.n_bad == 2 for v in info.value.violations)
