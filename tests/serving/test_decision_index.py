"""The decision index's compact frame: merging new decisions keeps exactly what a
`unique` over everything would (the last row of an id wins, order kept), without hashing
the whole frame on every fold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.decision_index import _DECISION_SCHEMA, _merged

START = datetime(2026, 5, 1, tzinfo=UTC)
CUTOFF = START + timedelta(days=3)


def rows(draw: st.DrawFn, ids: list[int], tag: str) -> pl.DataFrame:
    days = draw(st.lists(st.integers(0, 6), min_size=len(ids), max_size=len(ids)))
    return pl.DataFrame(
        {
            "exposure_id": [f"d{i}" for i in ids],
            "buyer_id": [f"b{i % 3}" for i in ids],
            "offer_id": [tag] * len(ids),
            "seller_id": ["s"] * len(ids),
            "ts": [START + timedelta(days=d) for d in days],
        },
        schema=_DECISION_SCHEMA,
    )


@st.composite
def frames(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    old_ids = draw(st.lists(st.integers(0, 30), unique=True, max_size=25))
    new_ids = draw(st.lists(st.integers(0, 30), max_size=25))  # repeats: last one wins
    return rows(draw, old_ids, "old"), rows(draw, new_ids, "new"), draw(st.integers(1, 40))


@settings(max_examples=300, deadline=None)
@given(frames())
def test_merging_equals_a_unique_over_everything(
    case: tuple[pl.DataFrame, pl.DataFrame, int],
) -> None:
    frame, new, max_rows = case
    expected = (
        pl.concat([frame, new], how="vertical")
        .filter(pl.col("ts") >= CUTOFF)
        .unique("exposure_id", keep="last", maintain_order=True)
    )
    if expected.height > max_rows:
        expected = expected.sort("ts", maintain_order=True).tail(max_rows)
    merged = _merged(frame, new, CUTOFF, max_rows)
    assert merged.equals(expected)
    assert merged["exposure_id"].n_unique() == merged.height


def test_a_new_row_replaces_the_old_one_of_its_id() -> None:
    at = CUTOFF + timedelta(hours=1)
    old = pl.DataFrame(
        {"exposure_id": ["a", "b"], "buyer_id": ["x", "y"], "offer_id": ["o1", "o2"],
         "seller_id": ["s", "s"], "ts": [at, at]},
        schema=_DECISION_SCHEMA,
    )  # fmt: skip
    new = old.head(1).with_columns(pl.lit("o9").alias("offer_id"))
    merged = _merged(old, new, CUTOFF, 10)
    assert merged.select("exposure_id", "offer_id").rows() == [("b", "o2"), ("a", "o9")]
