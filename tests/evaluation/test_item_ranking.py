"""Item ranking (MF against popularity and personal frequency) on the data shapes of
issue 17: till lines without an item, test windows with nobody to rank."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl

from recsys.data import Dataset
from recsys.evaluation.item_ranking import evaluate_item_ranking
from recsys.models.mf import MFConfig


def test_item_ranking_ignores_purchases_without_an_item() -> None:
    """A till line recorded without its item has nothing to rank; a test window without
    any ranked buyer gives NaN figures, not an error (issue 17's shapes)."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [
        ("b1", "i1", 0), ("b1", "i2", 2), ("b2", "i1", 1), ("b2", "i2", 3),
        ("b1", None, 20), ("b1", "i2", 21), ("b2", None, 22),
    ]  # fmt: skip
    events = pl.DataFrame(
        {
            "buyer_id": [b for b, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "event_type": ["purchase"] * len(rows),
            "ts": [t0 + timedelta(days=d) for _, _, d in rows],
        }
    )
    items = pl.DataFrame({"item_id": ["i1", "i2"], "seller_id": ["s", "s"]})
    dataset = Dataset(items=items, events=events)
    report = evaluate_item_ranking(dataset, MFConfig(factors=2, iterations=2), test_days=5, k=2)
    assert report.n_buyers == 1  # b1: its i2; b2 bought only an item-less line
    assert report.recall["personal_frequency"] == 1.0
    only_itemless = Dataset(
        items=items,
        events=events.filter(pl.col("ts") < t0 + timedelta(days=21)).vstack(events.tail(1)),
    )
    empty = evaluate_item_ranking(only_itemless, MFConfig(factors=2, iterations=2), test_days=1.5)
    assert empty.n_buyers == 0 and all(math.isnan(v) for v in empty.recall.values())
