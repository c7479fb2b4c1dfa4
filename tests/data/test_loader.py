"""`load_dataset` casts every source to the contract and rejects every broken rule clearly."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recsys.data import ContractError, load_dataset, load_pairs, load_table
from recsys.data.schema import EVENTS, ITEMS, TABLES, TABLES_BY_NAME

Frames = dict[str, pl.DataFrame]


def _ts(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


def valid_frames() -> Frames:
    """A tiny dataset with all seven tables, every contract column and one extra column."""
    data: dict[str, dict[str, list[object]]] = {
        "items": {
            "item_id": ["i1", "i2", "i3"],
            "seller_id": ["s1", "s1", "s2"],
            "category": ["shoes", "shoes", "hats"],
            "price": [10.0, 20.0, 5.5],
        },
        "events": {
            "buyer_id": ["b1", "b1", "b2", "b2", "b3"],
            "item_id": ["i1", None, "i2", "i2", "i3"],
            "event_type": ["view", "search", "add_to_cart", "purchase", "purchase"],
            "ts": [_ts(1, 9), _ts(1, 10), _ts(2), _ts(3), _ts(5, 12)],
            "session_id": ["x1", "x1", "x2", "x3", "x4"],
            "order_id": [None, None, None, "o1", "o2"],
            "quantity": [1, 1, 1, 2, 1],
            "amount": [None, None, None, 40.0, 5.5],
        },
        "buyers": {
            "buyer_id": ["b1", "b2", "b3", "b4"],
            "first_seen": [_ts(1), _ts(1), _ts(2), None],
        },
        "offers": {
            "offer_id": ["of1", "of2"],
            "tool": ["percent_off", "amount_off"],
            "seller_id": ["s1", None],
            "campaign_id": ["c1", "c1"],
            "value": [0.1, 5.0],
            "min_spend": [None, 20.0],
            "cost": [None, 5.0],
            "start_ts": [_ts(1), _ts(1)],
            "end_ts": [_ts(8), None],
        },
        "offer_items": {"offer_id": ["of1", "of1"], "item_id": ["i1", "i2"]},
        "exposures": {
            "exposure_id": ["e1", "e2", "e3"],
            "buyer_id": ["b1", "b2", "b3"],
            "offer_id": ["of1", "of2", None],
            "ts": [_ts(1), _ts(2), _ts(2)],
            "propensity": [0.5, 0.25, None],
            "policy": ["p1", "p1", "p1"],
            "seller_id": ["s1", "s1", None],
            "arm": [None, None, None],
        },
        "redemptions": {
            "buyer_id": ["b2"],
            "offer_id": ["of2"],
            "ts": [_ts(3)],
            "exposure_id": ["e2"],
            "order_id": ["o1"],
            "amount": [40.0],
        },
    }
    frames = {
        name: pl.DataFrame(cols, schema=TABLES_BY_NAME[name].schema) for name, cols in data.items()
    }
    frames["buyers"] = frames["buyers"].with_columns(country=pl.Series(["DE", "FR", "DE", None]))
    return frames


def write_dataset(root: Path, frames: Frames | None = None, fmt: str = "parquet") -> Path:
    """Write `frames` (default: the valid dataset) as `<table>.<fmt>` files into `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name, frame in (valid_frames() if frames is None else frames).items():
        if fmt == "parquet":
            frame.write_parquet(root / f"{name}.parquet")
        else:
            frame.write_csv(root / f"{name}.csv")
    return root


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds")


def _error(root: Path) -> ContractError:
    with pytest.raises(ContractError) as info:
        load_dataset(root)
    return info.value


def _edit(table: str, change: Callable[[pl.DataFrame], pl.DataFrame]) -> Frames:
    frames = valid_frames()
    frames[table] = change(frames[table])
    return frames


# --------------------------------------------------------------------------- valid input


def test_valid_dataset_loads_with_contract_dtypes_and_extra_columns(dataset_dir: Path) -> None:
    ds = load_dataset(dataset_dir)
    expected = valid_frames()
    for spec in TABLES:
        frame = ds.table(spec.name)
        assert frame is not None
        assert dict(frame.select(list(spec.schema)).schema) == spec.schema
        assert_frame_equal(frame, expected[spec.name])
    assert ds.buyers is not None and ds.buyers.columns[-1] == "country"
    assert ds.source == dataset_dir


def test_csv_and_parquet_give_equal_frames(tmp_path: Path) -> None:
    from_parquet = load_dataset(write_dataset(tmp_path / "p"))
    from_csv = load_dataset(write_dataset(tmp_path / "c", fmt="csv"))
    for spec in TABLES:
        left, right = from_parquet.table(spec.name), from_csv.table(spec.name)
        assert left is not None and right is not None
        assert_frame_equal(left, right)


def test_integer_ids_become_strings(tmp_path: Path) -> None:
    frames = valid_frames()
    frames["items"] = frames["items"].with_columns(item_id=pl.Series([1, 2, 3]))
    frames["events"] = frames["events"].with_columns(
        item_id=pl.Series([1, None, 2, 2, 3]), buyer_id=pl.Series([7, 7, 8, 8, 9])
    )
    frames["offer_items"] = frames["offer_items"].with_columns(item_id=pl.Series([1, 2]))
    ds = load_dataset(write_dataset(tmp_path / "d", frames))
    assert ds.items["item_id"].to_list() == ["1", "2", "3"]
    assert ds.events["item_id"].to_list() == ["1", None, "2", "2", "3"]
    assert ds.events["buyer_id"].dtype == pl.String


def test_whole_float_ids_become_integer_strings(tmp_path: Path) -> None:
    # pandas writes integer ids with nulls as floats: 123.0 must become "123".
    frames = valid_frames()
    frames["items"] = frames["items"].with_columns(item_id=pl.Series([1.0, 2.0, 123.0]))
    frames["events"] = frames["events"].with_columns(
        item_id=pl.Series([1.0, None, 2.0, 2.0, 123.0])
    )
    frames["offer_items"] = frames["offer_items"].with_columns(item_id=pl.Series([1.0, 2.0]))
    ds = load_dataset(write_dataset(tmp_path / "d", frames))
    assert ds.items["item_id"].to_list() == ["1", "2", "123"]
    assert ds.events["item_id"].to_list() == ["1", None, "2", "2", "123"]


def test_timestamps_are_read_as_utc(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "buyer_id,event_type,ts\n"
        "b1,view,2024-01-01 10:00:00\n"  # naive: UTC
        "b1,view,2024-01-01T12:00:00+02:00\n"  # offset: converted
        "b1,view,2024-01-01T10:00:00.5Z\n"
        "b1,view,2024-01-01\n"  # a date: midnight UTC
    )
    ts = load_table(path, EVENTS)["ts"]
    assert ts.dtype == pl.Datetime("us", "UTC")
    expected = [_ts(1, 10), _ts(1, 10), _ts(1, 10).replace(microsecond=500_000), _ts(1)]
    assert ts.to_list() == expected


def test_naive_aware_and_date_columns_are_converted_to_utc(tmp_path: Path) -> None:
    naive = pl.Series([datetime(2024, 1, 1, 10)], dtype=pl.Datetime("ns"))
    berlin = pl.Series([_ts(1, 10)]).dt.convert_time_zone("Europe/Berlin")
    for i, column in enumerate([naive, berlin, pl.Series([date(2024, 1, 1)])]):
        path = tmp_path / f"events{i}.parquet"
        pl.DataFrame({"buyer_id": ["b1"], "event_type": ["view"], "ts": column}).write_parquet(path)
        ts = load_table(path, EVENTS)["ts"]
        assert ts.dtype == pl.Datetime("us", "UTC")
        assert ts.to_list() == [_ts(1) if i == 2 else _ts(1, 10)]


def test_absent_optional_columns_are_added_typed_and_quantity_defaults_to_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.parquet"
    pl.DataFrame(
        {"ts": [_ts(1), _ts(2)], "buyer_id": ["b1", "b2"], "event_type": ["view", "purchase"]}
    ).with_columns(extra=pl.lit(3)).write_parquet(path)
    frame = load_table(path, EVENTS)
    assert frame.columns == [*EVENTS.schema, "extra"]
    assert dict(frame.drop("extra").schema) == EVENTS.schema
    assert frame["quantity"].to_list() == [1, 1]
    assert frame["item_id"].null_count() == 2


def test_null_quantity_defaults_to_one_and_numeric_text_parses(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "buyer_id,event_type,ts,quantity,amount\n"
        "b1,purchase,2024-01-01,,\n"
        "b1,purchase,2024-01-01,3, 12.5\n"
    )
    frame = load_table(path, EVENTS)
    assert frame["quantity"].to_list() == [1, 3]
    assert frame["amount"].to_list() == [None, 12.5]


def test_ids_in_csv_keep_leading_zeros(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id,seller_id\n007,1\n008,1\n")
    assert load_table(path, ITEMS)["item_id"].to_list() == ["007", "008"]


def test_unknown_files_are_ignored(dataset_dir: Path) -> None:
    pl.DataFrame({"x": [1]}).write_parquet(dataset_dir / "ground_truth.parquet")
    (dataset_dir / "README").write_text("not a table")
    assert load_dataset(dataset_dir).items.height == 3


def test_missing_optional_table_is_none_and_capabilities_say_why(tmp_path: Path) -> None:
    frames = valid_frames()
    del frames["redemptions"]
    ds = load_dataset(write_dataset(tmp_path / "d", frames))
    assert ds.redemptions is None
    response = {c.name: c for c in ds.capabilities()}["response"]
    assert not response.supported
    assert "redemptions" in response.reason


# --------------------------------------------------------------------------- broken input


VIOLATIONS: list[tuple[str, str, Callable[[pl.DataFrame], pl.DataFrame], str, int, str]] = [
    # (table, column, change, file, n_bad, text in the message)
    (
        "events",
        "event_type",
        lambda f: f.with_columns(event_type=pl.Series(["click", "view", "buy", "view", "view"])),
        "events.parquet",
        2,
        "unknown event type",
    ),
    (
        "events",
        "buyer_id",
        lambda f: f.with_columns(buyer_id=pl.Series(["b1", None, "", "b2", "b3"])),
        "events.parquet",
        2,
        "no value",
    ),
    (
        "items",
        "price",
        lambda f: f.with_columns(price=pl.Series([10.0, -1.0, 5.5])),
        "items.parquet",
        1,
        "price below 0",
    ),
    (
        "events",
        "quantity",
        lambda f: f.with_columns(quantity=pl.Series([1, 0, 1, 2, 1])),
        "events.parquet",
        1,
        "quantity below 1",
    ),
    (
        "offers",
        "min_spend",
        lambda f: f.with_columns(min_spend=pl.Series([-5.0, -1.0])),
        "offers.parquet",
        2,
        "min_spend below 0",
    ),
    (
        "offers",
        "offer_id",
        lambda f: pl.concat([f, f.tail(1)]),
        "offers.parquet",
        2,
        "duplicate offer_id",
    ),
    (
        "offer_items",
        "offer_id, item_id",
        lambda f: pl.concat([f, f.head(1)]),
        "offer_items.parquet",
        2,
        "duplicate key",
    ),
    (
        "events",
        "item_id",
        lambda f: f.with_columns(item_id=pl.Series(["i1", None, "i9", "i2", "i3"])),
        "events.parquet",
        1,
        "no match in items.parquet",
    ),
    (
        "offers",
        "seller_id",
        lambda f: f.with_columns(seller_id=pl.Series(["s9", None])),
        "offers.parquet",
        1,
        "no match in items.parquet",
    ),
    (
        "exposures",
        "offer_id",
        lambda f: f.with_columns(offer_id=pl.Series(["of1", "of2", "of9"])),
        "exposures.parquet",
        1,
        "no match in offers.parquet",
    ),
    (
        "redemptions",
        "exposure_id",
        lambda f: f.with_columns(exposure_id=pl.Series(["e9"])),
        "redemptions.parquet",
        1,
        "no match in exposures.parquet",
    ),
    (
        "exposures",
        "propensity",
        lambda f: f.with_columns(propensity=pl.Series([0.0, 1.5, None])),
        "exposures.parquet",
        2,
        "propensity outside (0, 1]",
    ),
    (
        "offers",
        "value",
        lambda f: f.with_columns(value=pl.Series([10.0, 5.0])),
        "offers.parquet",
        1,
        "10 % is 0.1",
    ),
    (
        "offers",
        "start_ts",
        lambda f: f.with_columns(start_ts=pl.Series([_ts(9), _ts(1)])),
        "offers.parquet",
        1,
        "start_ts after their end_ts",
    ),
    (
        "redemptions",
        "exposure_id",
        lambda f: f.with_columns(buyer_id=pl.Series(["b1"])),
        "redemptions.parquet",
        1,
        "different buyer or offer",
    ),
    (
        "events",
        "quantity",
        lambda f: f.with_columns(quantity=pl.Series([1.0, 1.5, 1.0, 2.0, 1.0])),
        "events.parquet",
        1,
        "cannot be read as a whole number",
    ),
    (
        "items",
        "price",
        lambda f: f.with_columns(price=pl.Series(["10", "ten", "5.5"])),
        "items.parquet",
        1,
        "cannot be read as a number",
    ),
]


@pytest.mark.parametrize(
    ("table", "column", "change", "file", "n_bad", "text"),
    VIOLATIONS,
    ids=[f"{v[0]}.{v[1]}:{v[5]}" for v in VIOLATIONS],
)
def test_each_violation_names_file_column_and_count(
    tmp_path: Path,
    table: str,
    column: str,
    change: Callable[[pl.DataFrame], pl.DataFrame],
    file: str,
    n_bad: int,
    text: str,
) -> None:
    err = _error(write_dataset(tmp_path / "d", _edit(table, change)))
    assert len(err.violations) == 1, str(err)
    assert (err.file, err.column, err.n_bad) == (file, column, n_bad)
    message = str(err)
    assert message.startswith(f"{file}: column '{column}': {n_bad} row")
    assert text in message
    assert "first rows: [row " in message and "Fix: " in message


def test_unparseable_timestamp_is_reported_not_nulled(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("buyer_id,event_type,ts\nb1,view,2024-01-01\nb1,view,yesterday\n")
    with pytest.raises(ContractError) as info:
        load_table(path, EVENTS)
    assert (info.value.column, info.value.n_bad) == ("ts", 1)
    assert info.value.examples == ["row 1: 'yesterday'"]
    assert "cannot be read as a timestamp" in str(info.value)


def test_missing_required_column_lists_the_columns_found(tmp_path: Path) -> None:
    err = _error(write_dataset(tmp_path / "d", _edit("events", lambda f: f.drop("ts"))))
    assert (err.file, err.column) == ("events.parquet", "ts")
    assert "required column missing" in str(err) and "buyer_id, item_id, event_type" in str(err)


def test_unsupported_column_type_is_reported(tmp_path: Path) -> None:
    frames = _edit("events", lambda f: f.with_columns(ts=pl.Series([1, 2, 3, 4, 5])))
    err = _error(write_dataset(tmp_path / "d", frames))
    assert err.column == "ts" and "cannot be read as a timestamp" in str(err)


def test_all_violations_of_a_dataset_are_reported_at_once(tmp_path: Path) -> None:
    frames = _edit(
        "events",
        lambda f: f.with_columns(
            event_type=pl.Series(["click"] * 5), amount=pl.Series([None, None, None, -1.0, 1.0])
        ),
    )
    frames["items"] = frames["items"].with_columns(price=pl.Series([-1.0, -2.0, 0.0]))
    err = _error(write_dataset(tmp_path / "d", frames))
    found = {(v.file, v.column, v.n_bad) for v in err.violations}
    assert found == {
        ("items.parquet", "price", 2),
        ("events.parquet", "event_type", 5),
        ("events.parquet", "amount", 1),
    }
    assert str(err).startswith("3 data contract violations:")


def test_reference_to_an_absent_table_names_that_table(tmp_path: Path) -> None:
    frames = valid_frames()
    del frames["exposures"]
    err = _error(write_dataset(tmp_path / "d", frames))
    assert (err.file, err.column, err.n_bad) == ("redemptions.parquet", "exposure_id", 1)
    assert "no exposures table" in str(err)


def test_truncated_parquet_names_the_file(dataset_dir: Path) -> None:
    path = dataset_dir / "events.parquet"
    path.write_bytes(path.read_bytes()[:-40])
    err = _error(dataset_dir)
    assert err.file == "events.parquet"
    assert "cannot be read as Parquet" in str(err)


def test_unreadable_csv_names_the_file(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", fmt="csv")
    (root / "items.csv").write_bytes(b"item_id,seller_id\ni1,s1,extra,fields\n\xff\xfe,s1\n")
    err = _error(root)
    assert err.file == "items.csv" and "cannot be read as CSV" in str(err)


def test_missing_required_table_names_the_expected_files(dataset_dir: Path) -> None:
    (dataset_dir / "items.parquet").unlink()
    err = _error(dataset_dir)
    assert "items.parquet or items.csv" in str(err)
    # events still load, but their item ids cannot be checked against a missing table
    assert any(v.column == "item_id" and "no items table" in v.rule for v in err.violations)


def test_both_parquet_and_csv_of_a_table_is_an_error(dataset_dir: Path) -> None:
    valid_frames()["offers"].write_csv(dataset_dir / "offers.csv")
    err = _error(dataset_dir)
    assert "offers.parquet and offers.csv" in str(err)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    err = _error(tmp_path / "nowhere")
    assert "does not exist" in str(err) and "nowhere" in err.file


def test_contract_error_reads_well_and_survives_pickling() -> None:
    err = ContractError(
        "events.parquet",
        "an unknown event type (allowed: view, search)",
        column="event_type",
        n_bad=3,
        examples=["row 4: 'click'", "row 9: 'buy'"],
        hint="map your source's event names to the contract's.",
    )
    assert str(err) == (
        "events.parquet: column 'event_type': 3 rows have an unknown event type "
        "(allowed: view, search); first rows: [row 4: 'click', row 9: 'buy', ...]. "
        "Fix: map your source's event names to the contract's."
    )
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.n_bad == 3
    assert isinstance(err, ValueError)


# --------------------------------------------------------------------------- target lists


def test_load_pairs_keeps_order_and_casts_ids(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("buyer_id,offer_id,note\n3,of2,a\n1,of1,b\n2,of2,c\n")
    pairs = load_pairs(path)
    assert pairs["buyer_id"].to_list() == ["3", "1", "2"]
    assert pairs.columns == ["buyer_id", "offer_id", "note"]
    parquet = tmp_path / "pairs.parquet"
    pl.DataFrame({"buyer_id": [3, 1, 2], "offer_id": ["of2", "of1", "of2"]}).write_parquet(parquet)
    assert_frame_equal(load_pairs(parquet), pairs.drop("note"))


def test_load_pairs_rejects_null_ids(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("buyer_id,offer_id\nb1,of1\nb2,\n")
    with pytest.raises(ContractError) as info:
        load_pairs(path)
    assert (info.value.file, info.value.column, info.value.n_bad) == ("pairs.csv", "offer_id", 1)


def test_load_pairs_rejects_other_file_types(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("buyer_id,offer_id\nb1,of1\n")
    with pytest.raises(ContractError, match=r"pairs.txt: unsupported file type '.txt'"):
        load_pairs(path)
