"""Tables stored as directories of Parquet parts, and decision logs added to a dataset.

The dataset is the tiny hand-built one of `test_loader` (exposures e1, e2, e3 where e3 is
a control row; one redemption of e2); parts add exposures whose ids and order are known.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recsys.data import ContractError, load_dataset
from recsys.data.schema import EXPOSURES, REDEMPTIONS
from recsys.data.sources import data_files
from tests.data.test_loader import valid_frames, write_dataset


def _ts(day: int) -> datetime:
    return datetime(2024, 1, day, tzinfo=UTC)


def exposure_rows(ids: list[str], offers: list[str | None] | None = None) -> pl.DataFrame:
    """Decision rows: buyer b1, offer of1 (or `offers`), propensity 0.5, seller s1."""
    n = len(ids)
    return pl.DataFrame(
        {
            "exposure_id": ids,
            "buyer_id": ["b1"] * n,
            "offer_id": offers if offers is not None else ["of1"] * n,
            "ts": [_ts(4)] * n,
            "propensity": [0.5] * n,
            "policy": ["promo-ranker/1"] * n,
            "seller_id": ["s1"] * n,
            "arm": ["treated"] * n,
        },
        schema=EXPOSURES.schema,
    )


def write_parts(directory: Path, *frames: pl.DataFrame, first: int = 1) -> list[Path]:
    """Write `frames` as `part-<n>.parquet` in `directory` (created), numbered from `first`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, frame in enumerate(frames, start=first):
        path = directory / f"part-{n:03d}.parquet"
        frame.write_parquet(path)
        paths.append(path)
    return paths


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds")


def _error(root: Path, logs: list[Path] | None = None) -> ContractError:
    with pytest.raises(ContractError) as info:
        load_dataset(root, logs or [])
    return info.value


# --------------------------------------------------------------------------- valid input


def test_parts_next_to_the_table_file_are_appended_in_name_order(dataset_dir: Path) -> None:
    # Written out of order: the name decides, so part-001 (d1, d2) comes before part-002 (d3).
    write_parts(dataset_dir / "exposures", exposure_rows(["d3"]), first=2)
    write_parts(dataset_dir / "exposures", exposure_rows(["d1", "d2"]))
    ds = load_dataset(dataset_dir)
    assert ds.exposures is not None
    assert ds.exposures["exposure_id"].to_list() == ["e1", "e2", "e3", "d1", "d2", "d3"]
    assert ds.exposures.schema == EXPOSURES.schema  # the parts' rows are cast alike
    assert ds.summary().rows["exposures"] == 6


def test_a_table_may_be_parts_alone_even_a_required_one(tmp_path: Path) -> None:
    frames = valid_frames()
    events = frames.pop("events")
    root = write_dataset(tmp_path / "d", frames)
    write_parts(root / "events", events.head(2), events.slice(2, 0), events.tail(3))
    ds = load_dataset(root)
    assert ds.events.equals(load_dataset(write_dataset(tmp_path / "plain")).events)


def test_control_rows_keep_their_null_offer_and_exact_propensity(dataset_dir: Path) -> None:
    # A "nothing" decision: no offer, and the probability that the policy chose nothing.
    write_parts(
        dataset_dir / "exposures",
        exposure_rows(["n1"], offers=[None]).with_columns(propensity=pl.lit(0.8)),
    )
    ds = load_dataset(dataset_dir)
    assert ds.exposures is not None
    control = ds.exposures.filter(pl.col("exposure_id") == "n1").row(0, named=True)
    assert control["offer_id"] is None and control["propensity"] == 0.8
    assert ds.summary().control_size == 2  # e3 of the file and n1 of the part


def test_hidden_files_and_empty_part_directories_are_ignored(tmp_path: Path) -> None:
    frames = valid_frames()
    del frames["redemptions"]
    root = write_dataset(tmp_path / "d", frames)
    (root / "exposures").mkdir()
    (root / "redemptions").mkdir()  # empty, and no redemptions.parquet: still absent
    (root / "exposures" / ".part-009.parquet.tmp").write_bytes(b"half a part")
    (root / "exposures" / "_SUCCESS").write_text("")
    ds = load_dataset(root)
    assert ds.redemptions is None
    assert ds.exposures is not None and ds.exposures.height == 3


def test_parts_with_different_columns_are_read_one_by_one(dataset_dir: Path) -> None:
    with_channel = exposure_rows(["d1"]).with_columns(channel=pl.lit("app"))
    write_parts(dataset_dir / "exposures", with_channel, exposure_rows(["d2"]))
    exposures = load_dataset(dataset_dir).exposures
    assert exposures is not None
    assert exposures["channel"].to_list() == [None, None, None, "app", None]


def test_data_files_lists_what_the_loader_reads_in_order(dataset_dir: Path, tmp_path: Path) -> None:
    write_parts(dataset_dir / "exposures", exposure_rows(["d1"]))
    log = tmp_path / "log"
    write_parts(log / "exposures", exposure_rows(["l1"]))
    keys = [p.key for p in data_files(dataset_dir, [log])]
    assert keys[:2] == ["items.parquet", "events.parquet"]
    i = keys.index("exposures.parquet")
    assert keys[i : i + 4] == [
        "exposures.parquet",
        "exposures/part-001.parquet",
        "decision log/exposures/part-001.parquet",
        "redemptions.parquet",
    ]


# --------------------------------------------------------------------------- logs kept elsewhere


def test_decision_logs_are_added_after_the_datasets_rows(dataset_dir: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "log-a", tmp_path / "log-b"
    write_parts(first / "exposures", exposure_rows(["a1", "a2"]))
    redeemed = pl.DataFrame(
        {"buyer_id": ["b1"], "offer_id": ["of1"], "ts": [_ts(5)], "exposure_id": ["a2"]}
    )
    write_parts(first / "redemptions", redeemed)
    write_parts(second / "exposures", exposure_rows(["b1"]))
    ds = load_dataset(dataset_dir, [first, str(second)])
    assert ds.exposures is not None and ds.redemptions is not None
    assert ds.exposures["exposure_id"].to_list() == ["e1", "e2", "e3", "a1", "a2", "b1"]
    assert ds.redemptions["exposure_id"].to_list() == ["e2", "a2"]
    assert ds.redemptions.schema == REDEMPTIONS.schema  # absent optional columns added


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda root, tmp: tmp / "nowhere", "the decision log directory does not exist"),
        (lambda root, tmp: root, "is the dataset directory itself"),
        (lambda root, tmp: root / "exposures", "holds no exposures/ or redemptions/"),
    ],
    ids=["missing", "the dataset itself", "a table directory"],
)
def test_a_wrong_decision_log_path_is_named(
    dataset_dir: Path, tmp_path: Path, make: Callable[[Path, Path], Path], said: str
) -> None:
    write_parts(dataset_dir / "exposures", exposure_rows(["d1"]))
    log = make(dataset_dir, tmp_path)
    err = _error(dataset_dir, [log])
    assert len(err.violations) == 1, str(err)
    assert err.file == str(log) and said in str(err)


def test_a_decision_log_given_twice_is_named(dataset_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    write_parts(log / "exposures", exposure_rows(["l1"]))
    err = _error(dataset_dir, [log, tmp_path / "." / "log"])
    assert len(err.violations) == 1, str(err)
    assert "given twice (also as" in str(err)


# --------------------------------------------------------------------------- broken input


def test_a_duplicate_exposure_id_across_files_names_both_files(
    dataset_dir: Path, tmp_path: Path
) -> None:
    write_parts(dataset_dir / "exposures", exposure_rows(["d1", "e2"]))
    log = tmp_path / "log"
    write_parts(log / "exposures", exposure_rows(["d1"]))
    err = _error(dataset_dir, [log])
    found = {(v.file, v.column, v.n_bad, v.examples) for v in err.violations}
    log_part = f"{log}/exposures/part-001.parquet"
    assert found == {
        (
            "exposures.parquet",
            "exposure_id",
            1,
            ("row 1: exposure_id='e2', also_in='exposures/part-001.parquet'",),
        ),
        (
            "exposures/part-001.parquet",
            "exposure_id",
            2,
            (
                f"row 0: exposure_id='d1', also_in='{log_part}'",
                "row 1: exposure_id='e2', also_in='exposures.parquet'",
            ),
        ),
        (
            log_part,
            "exposure_id",
            1,
            ("row 0: exposure_id='d1', also_in='exposures/part-001.parquet'",),
        ),
    }
    assert "duplicate exposure_id across the exposures files" in str(err)
    assert "a decision log read twice" in str(err)


def test_a_duplicate_within_one_part_is_reported_in_that_part(dataset_dir: Path) -> None:
    write_parts(dataset_dir / "exposures", exposure_rows(["d1"]), exposure_rows(["d2", "d2"]))
    err = _error(dataset_dir)
    assert (err.file, err.n_bad) == ("exposures/part-002.parquet", 2)
    assert err.examples == [
        "row 0: exposure_id='d2', also_in='exposures/part-002.parquet'",
        "row 1: exposure_id='d2', also_in='exposures/part-002.parquet'",
    ]


def test_a_truncated_part_is_named_and_nothing_else_is_blamed(dataset_dir: Path) -> None:
    paths = write_parts(
        dataset_dir / "exposures",
        exposure_rows(["d1"]),
        exposure_rows(["d2"]),
        exposure_rows(["d3"]),
    )
    # A redemption of d2, whose part is the broken one: not reported as a dangling id.
    redeemed = pl.DataFrame(
        {"buyer_id": ["b1"], "offer_id": ["of1"], "ts": [_ts(5)], "exposure_id": ["d2"]}
    )
    pl.concat([valid_frames()["redemptions"], redeemed], how="diagonal").write_parquet(
        dataset_dir / "redemptions.parquet"
    )
    paths[1].write_bytes(paths[1].read_bytes()[:-40])
    err = _error(dataset_dir)
    assert len(err.violations) == 1, str(err)
    assert err.file == "exposures/part-002.parquet"
    assert "cannot be read as Parquet" in str(err) and "write it again" in str(err)


def test_a_bad_row_in_a_part_is_named_by_part_and_row(dataset_dir: Path) -> None:
    bad = exposure_rows(["d2", "d3"], offers=["of1", "of9"]).with_columns(
        propensity=pl.Series([1.5, 0.5])
    )
    write_parts(dataset_dir / "exposures", exposure_rows(["d1"]), bad)
    err = _error(dataset_dir)
    found = {(v.file, v.column, v.n_bad, v.examples) for v in err.violations}
    assert found == {
        ("exposures/part-002.parquet", "propensity", 1, ("row 0: 1.5",)),
        ("exposures/part-002.parquet", "offer_id", 1, ("row 1: 'of9'",)),
    }
    assert "no match in offers.parquet column 'offer_id'" in str(err)


def test_a_reference_into_a_table_of_parts_names_all_its_files(dataset_dir: Path) -> None:
    write_parts(dataset_dir / "exposures", exposure_rows(["d1"]))
    frames = valid_frames()
    frames["redemptions"].with_columns(exposure_id=pl.lit("zz")).write_parquet(
        dataset_dir / "redemptions.parquet"
    )
    err = _error(dataset_dir)
    assert err.file == "redemptions.parquet"
    assert "no match in exposures.parquet + exposures/*.parquet (1 part)" in str(err)


def test_bad_rows_in_many_parts_are_counted_past_the_first_files(dataset_dir: Path) -> None:
    parts = [exposure_rows([f"d{i}"], offers=["of9"]) for i in range(8)]
    write_parts(dataset_dir / "exposures", *parts)
    err = _error(dataset_dir)
    assert [v.file for v in err.violations[:5]] == [
        f"exposures/part-{n:03d}.parquet" for n in range(1, 6)
    ]
    rest = err.violations[5]
    assert (rest.n_bad, len(err.violations)) == (3, 6)
    assert rest.file == "exposures.parquet + exposures/*.parquet (8 parts)"
    assert "(in 3 more of its files)" in str(rest)


def test_an_extra_column_of_clashing_types_is_named(dataset_dir: Path) -> None:
    write_parts(
        dataset_dir / "exposures",
        exposure_rows(["d1"]).with_columns(channel=pl.lit(1)),
        exposure_rows(["d2"]).with_columns(channel=pl.lit(datetime(2024, 1, 1))),
    )
    err = _error(dataset_dir)
    assert err.column == "channel" and "different types in different files" in str(err)
    assert "exposures/part-001.parquet" in str(err) and "exposures/part-002.parquet" in str(err)


@pytest.mark.parametrize("stray", ["notes.txt", "part-003.csv", "2024-01-01"])
def test_a_stray_entry_in_a_part_directory_is_named(dataset_dir: Path, stray: str) -> None:
    write_parts(dataset_dir / "exposures", exposure_rows(["d1"]))
    target = dataset_dir / "exposures" / stray
    if "." in stray:
        target.write_text("x")
    else:
        target.mkdir()
    err = _error(dataset_dir)
    assert len(err.violations) == 1, str(err)
    assert err.file == f"exposures/{stray}" and "may hold only Parquet parts" in str(err)
