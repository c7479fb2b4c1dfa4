"""`Dataset` says what the data supports and what it holds, with known answers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from recsys.data import Capability, Dataset
from recsys.data.schema import TABLES_BY_NAME


def _ts(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, tzinfo=UTC)


def _frame(table: str, **columns: list[Any]) -> pl.DataFrame:
    """A frame with every contract column of `table`; columns not given are null."""
    schema = TABLES_BY_NAME[table].schema
    height = len(next(iter(columns.values())))
    data = {name: columns.get(name, [None] * height) for name in schema}
    return pl.DataFrame(data, schema=schema)


def _items() -> pl.DataFrame:
    return _frame("items", item_id=["i1", "i2", "i3"], seller_id=["s1", "s1", "s2"])


def _events(item_ids: list[str | None] | None = None) -> pl.DataFrame:
    return _frame(
        "events",
        buyer_id=["b1", "b1", "b2", "b3"],
        item_id=item_ids or ["i1", None, "i2", "i3"],
        event_type=["view", "search", "purchase", "purchase"],
        ts=[_ts(2, 9), _ts(1, 8), _ts(5, 12), _ts(3)],
        quantity=[1, 1, 2, 1],
    )


def _exposures(offer_ids: list[str | None], propensities: list[float | None]) -> pl.DataFrame:
    n = len(offer_ids)
    return _frame(
        "exposures",
        exposure_id=[f"e{i}" for i in range(n)],
        buyer_id=["b1"] * n,
        offer_id=offer_ids,
        ts=[_ts(1)] * n,
        propensity=propensities,
    )


def _full(**overrides: Any) -> Dataset:
    """A dataset with all tables; `overrides` replace tables (None removes one)."""
    tables: dict[str, Any] = {
        "items": _items(),
        "events": _events(),
        "buyers": _frame("buyers", buyer_id=["b1", "b4"]),
        "offers": _frame("offers", offer_id=["of1", "of2"], tool=["points", "reminder"]),
        "offer_items": _frame("offer_items", offer_id=["of1"], item_id=["i1"]),
        "exposures": _exposures(["of1", "of2", None, None], [0.5, None, None, None]),
        "redemptions": _frame("redemptions", buyer_id=["b1"], offer_id=["of1"], ts=[_ts(2)]),
    }
    tables.update(overrides)
    return Dataset(**tables, source=Path("/data/shop"))


def _capability(ds: Dataset, name: str) -> Capability:
    return {c.name: c for c in ds.capabilities()}[name]


def test_full_dataset_supports_every_model() -> None:
    caps = _full().capabilities()
    assert [c.name for c in caps] == ["matrix_factorization", "journey", "response", "uplift"]
    assert all(c.supported for c in caps)


def test_matrix_factorization_needs_events_with_items() -> None:
    cap = _capability(_full(events=_events([None, None, None, None])), "matrix_factorization")
    assert not cap.supported
    assert "item_id" in cap.reason
    assert _capability(_full(), "matrix_factorization").reason.startswith("events has 3 rows")


def test_journey_needs_events() -> None:
    assert _capability(_full(), "journey").supported
    assert not _capability(_full(events=_events().clear()), "journey").supported


@pytest.mark.parametrize("absent", ["offers", "exposures", "redemptions"])
def test_response_names_the_missing_table(absent: str) -> None:
    cap = _capability(_full(**{absent: None}), "response")
    assert not cap.supported
    assert f"{absent}.parquet" in cap.reason


@pytest.mark.parametrize(
    ("offer_ids", "propensities", "supported", "said"),
    [
        (["of1", None], [None, None], True, "control group of 1 exposure"),
        (["of1", "of2"], [0.5, None], True, "1 exposure with a logged propensity"),
        (["of1", "of2"], [None, None], False, "no control group"),
    ],
)
def test_uplift_needs_a_control_group_or_logged_propensities(
    offer_ids: list[str | None], propensities: list[float | None], supported: bool, said: str
) -> None:
    cap = _capability(_full(exposures=_exposures(offer_ids, propensities)), "uplift")
    assert cap.supported is supported
    assert said in cap.reason


def test_uplift_without_exposures_says_which_table_enables_it() -> None:
    cap = _capability(_full(exposures=None), "uplift")
    assert not cap.supported
    assert "exposures.parquet" in cap.reason and "propensity" in cap.reason


def test_summary_has_known_values() -> None:
    summary = _full().summary()
    assert summary.rows == {
        "items": 3,
        "events": 4,
        "buyers": 2,
        "offers": 2,
        "offer_items": 1,
        "exposures": 4,
        "redemptions": 1,
    }
    assert (summary.first_event, summary.last_event) == (_ts(1, 8), _ts(5, 12))
    assert (summary.n_buyers, summary.n_items, summary.n_sellers) == (4, 3, 2)  # b4: buyers only
    assert summary.event_counts == {
        "view": 1,
        "search": 1,
        "add_to_cart": 0,
        "remove_from_cart": 0,
        "checkout": 0,
        "purchase": 2,
    }
    assert summary.propensity_share == pytest.approx(0.25)
    assert summary.control_size == 2
    assert len(summary.capabilities) == 4


def test_summary_of_minimal_dataset_marks_absent_tables() -> None:
    ds = Dataset(items=_items(), events=_events())
    summary = ds.summary()
    assert summary.rows["offers"] is None and summary.rows["events"] == 4
    assert summary.propensity_share is None and summary.control_size is None
    text = str(summary)
    assert "offers       absent" in text
    assert "[no ] response" in text


def test_summary_text_is_readable() -> None:
    text = _full().summary().format()
    assert text.splitlines()[0] == "dataset /data/shop"
    assert "events       4 rows" in text
    assert "2024-03-01 08:00:00 UTC .. 2024-03-05 12:00:00 UTC" in text
    assert "exposures with a logged propensity: 25.0%" in text
    assert "control group (exposures with no offer): 2 rows" in text
    assert "[yes] uplift" in text


def test_table_by_name() -> None:
    ds = _full(offer_items=None)
    assert ds.table("items") is ds.items
    assert ds.table("offer_items") is None
    with pytest.raises(KeyError, match="unknown table 'clicks'"):
        ds.table("clicks")


def test_repr_is_short() -> None:
    assert repr(_full(buyers=None)) == (
        "Dataset(items=3, events=4, offers=2, offer_items=1, exposures=4, redemptions=1, "
        "source=/data/shop)"
    )
