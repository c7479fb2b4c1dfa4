"""The served state: offers indexed once, options valued once per buyer, kept, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from recsys.policy.config import PolicyConfig
from serving.served_state import (
    EXPECTED_VALUE,
    SCORE,
    OfferCatalog,
    OptionStore,
    micros,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)

OFFERS = pl.DataFrame(
    {
        "offer_id": ["o3", "o1", "o2", "o4"],
        "seller_id": ["s1", "s1", None, "s2"],
        "tool": ["reminder", "amount_off", "reminder", "reminder"],
        "start_ts": [T0, T0, None, T0 + timedelta(days=5)],
        "end_ts": [T0 + timedelta(days=2), None, None, None],
    },
    schema_overrides={"start_ts": pl.Datetime("us", "UTC"), "end_ts": pl.Datetime("us", "UTC")},
)


class CountingModel:
    """Candidates whose p_redeem is offer number / 10; amount_off of 2 on an order of 10;
    counts the pairs it scores."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, pairs: pl.DataFrame) -> pl.DataFrame:
        self.calls.append(pairs.height)
        number = pl.col("offer_id").str.slice(1).cast(pl.Float64)
        return pairs.join(OFFERS.select("offer_id", "tool"), on="offer_id").with_columns(
            (number / 10).alias("p_redeem"),
            pl.lit(None, pl.Float64).alias("uplift"),
            pl.lit(0.1).alias("p_purchase"),
            pl.lit(10.0).alias("order_value"),
            pl.lit(1.0).alias("margin"),
            pl.lit(2.0).alias("offer_value"),
        )


def test_the_catalog_sorts_offers_and_knows_what_is_valid() -> None:
    catalog = OfferCatalog(OFFERS)
    assert catalog.ids == ["o1", "o2", "o3", "o4"]
    assert catalog.seller_code.tolist() == [0, -1, 0, 1]
    valid = catalog.valid(micros(T0 + timedelta(days=1)))
    assert [catalog.ids[i] for i in valid] == ["o1", "o2", "o3"]
    assert [catalog.ids[i] for i in catalog.valid(micros(T0 + timedelta(days=6)))] == [
        "o1",
        "o2",
        "o4",
    ]
    # The set is kept between validity bounds; going back in time recomputes it.
    assert catalog.valid(micros(T0 + timedelta(days=1, hours=1))).tolist() == valid.tolist()
    assert [catalog.ids[i] for i in catalog.valid(micros(T0 + timedelta(days=2)))] == ["o1", "o2"]
    assert catalog.valid(micros(T0)).tolist() == valid.tolist()  # o3 starts at T0
    assert catalog.valid(micros(T0 - timedelta(seconds=1))).tolist() == [1]  # o2: always
    assert catalog.scope_code(None) == -1 and catalog.scope_code("nobody") == -2


def test_options_are_valued_once_and_kept() -> None:
    model = CountingModel()
    config = PolicyConfig(assumed_incremental_share=0.5)
    store = OptionStore(model, OfferCatalog(OFFERS), config, max_rows=100)
    valid = store.catalog.valid(micros(T0 + timedelta(days=1)))
    first = store.for_buyers(["b1", "b2"], valid)
    assert model.calls == [6]  # one call for both buyers' 3 offers
    b1 = first["b1"]
    assert b1.offer.tolist() == [0, 1, 2]
    # margin x (share x p_redeem) x order - p_redeem x cost: o1 (amount_off 2 on 10)
    # 1 x 0.05 x 10 - 0.1 x 2 = 0.3; the reminders cost nothing: 1.0 and 1.5
    assert b1.num[:, EXPECTED_VALUE].tolist() == pytest.approx([0.3, 1.0, 1.5])
    assert b1.num[:, SCORE].tolist() == pytest.approx([0.3, 1.0, 1.5])

    again = store.for_buyers(["b2", "b3"], valid)
    assert model.calls == [6, 3]  # only b3 was scored
    assert (store.hits, store.misses) == (1, 3)
    assert again["b2"] is first["b2"]  # the kept arrays themselves


def test_new_valid_offers_make_a_new_entry_and_old_ones_age_out() -> None:
    model = CountingModel()
    store = OptionStore(model, OfferCatalog(OFFERS), PolicyConfig(), max_rows=6)
    early = store.catalog.valid(micros(T0 + timedelta(days=1)))
    late = store.catalog.valid(micros(T0 + timedelta(days=6)))
    store.for_buyers(["b1"], early)
    store.for_buyers(["b1"], late)
    assert model.calls == [3, 3] and store.rows == 6
    store.for_buyers(["b2"], late)  # the least recently used entry goes
    assert store.rows == 6
    store.for_buyers(["b1"], late)
    assert model.calls == [3, 3, 3]
    store.for_buyers(["b1"], early)
    assert model.calls == [3, 3, 3, 3]


def test_size_zero_scores_every_call_and_negative_is_refused() -> None:
    model = CountingModel()
    store = OptionStore(model, OfferCatalog(OFFERS), PolicyConfig(), max_rows=0)
    valid = store.catalog.valid(micros(T0 + timedelta(days=1)))
    store.for_buyers(["b1"], valid)
    store.for_buyers(["b1"], valid)
    assert model.calls == [3, 3] and store.rows == 0
    assert store.warm(["b1"], valid) == 0
    with pytest.raises(ValueError, match="max_rows"):
        OptionStore(model, OfferCatalog(OFFERS), PolicyConfig(), max_rows=-1)


def test_warm_scores_ahead_until_full() -> None:
    model = CountingModel()
    store = OptionStore(model, OfferCatalog(OFFERS), PolicyConfig(), max_rows=7)
    valid = store.catalog.valid(micros(T0 + timedelta(days=1)))
    assert store.warm(["b1", "b2", "b3"], valid, chunk_rows=3) == 2  # room for 2 of 3 offers
    assert model.calls == [3, 3]
    store.for_buyers(["b1", "b2"], valid)
    assert model.calls == [3, 3] and store.hits == 2
