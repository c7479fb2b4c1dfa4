"""Known-answer tests of the buyer x item confidence matrix and the id index."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from recsys.config import ConfigError
from recsys.features import (
    EventWeights,
    IdIndex,
    Interactions,
    build_interactions,
    build_offer_items,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "buyer_id": pl.String(),
    "item_id": pl.String(),
    "event_type": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "quantity": pl.Int64(),
}


def events(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    """Contract events from (buyer, item, type[, days_before_T0[, quantity]]) tuples."""
    full = []
    for row in rows:
        buyer, item, kind, *rest = row
        days = float(rest[0]) if rest else 0.0
        qty = rest[1] if len(rest) > 1 else None
        full.append((buyer, item, kind, T0 - timedelta(days=days), qty))
    return pl.DataFrame(full, schema=EVENT_SCHEMA, orient="row")


def dense(inter: Interactions) -> dict[tuple[str, str], float]:
    """Matrix as {(buyer, item): value} for readable assertions."""
    m = inter.matrix.tocoo()
    buyers = inter.buyer_index.lookup(m.row)
    items = inter.item_index.lookup(m.col)
    return {(b, i): float(v) for b, i, v in zip(buyers, items, m.data, strict=True)}


FIVE_ROWS: list[tuple[Any, ...]] = [
    ("b1", "i1", "view"),
    ("b1", "i1", "purchase", 0, 2),
    ("b1", "i2", "add_to_cart"),
    ("b2", "i1", "checkout"),
    ("b2", "i2", "remove_from_cart"),
]


def test_log_confidence_known_answer() -> None:
    inter = build_interactions(events(FIVE_ROWS), EventWeights(), alpha=2.0)
    # b1,i1: view 1 + purchase 8 x quantity 2 = 17; b1,i2: cart 3; b2,i1: checkout 4;
    # b2,i2: remove_from_cart weighs 0 and is not a preference.
    expected = {
        ("b1", "i1"): 1 + 2 * math.log1p(17.0),
        ("b1", "i2"): 1 + 2 * math.log1p(3.0),
        ("b2", "i1"): 1 + 2 * math.log1p(4.0),
    }
    got = dense(inter)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6)
    assert inter.matrix.dtype == np.float32
    assert inter.matrix.shape == (2, 2)
    assert inter.stats.n_zero_weight == 1
    assert inter.stats.n_used == 4


def test_linear_confidence_and_quantity_switch() -> None:
    weights = EventWeights(scaling="linear", purchase_by_quantity=False)
    got = dense(build_interactions(events(FIVE_ROWS), weights, alpha=0.5))
    assert got[("b1", "i1")] == pytest.approx(1 + 0.5 * (1 + 8))
    assert got[("b1", "i2")] == pytest.approx(1 + 0.5 * 3)


def test_log_epsilon_scales_the_count() -> None:
    weights = EventWeights(epsilon=0.5)
    got = dense(build_interactions(events([("b", "i", "view")]), weights, alpha=1.0))
    assert got[("b", "i")] == pytest.approx(1 + math.log1p(1 / 0.5))


def test_null_and_unknown_items_are_skipped_and_counted() -> None:
    ev = events(
        [
            ("b1", "i1", "view"),
            ("b1", None, "search"),
            ("b2", None, "view"),
            ("b2", "ghost", "purchase"),
            ("b3", "ghost", "view"),
        ]
    )
    inter = build_interactions(ev, item_index=IdIndex(["i1", "i2"]))
    s = inter.stats
    assert (s.n_events, s.n_used, s.n_null_item, s.n_unknown_item) == (5, 1, 2, 2)
    # Buyers whose events all were skipped get no row: they are cold, not "likes nothing".
    assert inter.buyer_index.ids.to_list() == ["b1"]
    # Items from a fixed index keep their columns even without events.
    assert inter.matrix.shape == (1, 2)
    assert inter.matrix[:, 1].nnz == 0


def test_fixed_buyer_index_skips_other_buyers() -> None:
    ev = events([("b1", "i1", "view"), ("b9", "i1", "view"), ("b9", "i1", "purchase")])
    inter = build_interactions(ev, buyer_index=IdIndex(["b0", "b1"]))
    assert inter.matrix.shape == (2, 1)
    assert inter.matrix[0].nnz == 0 and inter.matrix[1].nnz == 1
    assert inter.stats.n_unknown_buyer == 2


def test_time_decay_halves_weight_at_one_half_life() -> None:
    ev = events([("b", "new", "view", 0), ("b", "old", "view", 7), ("b", "older", "view", 14)])
    weights = EventWeights(half_life_days=7, scaling="linear")
    got = dense(build_interactions(ev, weights, alpha=1.0, as_of=T0))
    assert got[("b", "new")] == pytest.approx(1 + 1.0)
    assert got[("b", "old")] == pytest.approx(1 + 0.5)
    assert got[("b", "older")] == pytest.approx(1 + 0.25)


def test_events_after_as_of_are_excluded_and_as_of_defaults_to_latest() -> None:
    ev = events([("b", "i1", "view", 2), ("b", "i2", "view", 0)])
    cut = T0 - timedelta(days=1)
    inter = build_interactions(ev, as_of=cut.replace(tzinfo=None))  # naive is read as UTC
    assert inter.stats.n_after_as_of == 1
    assert set(dense(inter)) == {("b", "i1")}
    assert inter.as_of == cut
    assert build_interactions(ev).as_of == T0


def test_lazy_events_give_the_same_matrix_and_counts() -> None:
    ev = events([*FIVE_ROWS, ("b3", "i2", "view", 3), ("b3", None, "search", 1)])
    cut = T0 - timedelta(days=2)
    for as_of in (None, cut):
        eager, lazy = (
            build_interactions(ev, as_of=as_of),
            build_interactions(ev.lazy(), as_of=as_of),
        )
        assert (eager.matrix != lazy.matrix).nnz == 0
        assert eager.stats == lazy.stats and eager.as_of == lazy.as_of
        assert eager.buyer_index == lazy.buyer_index
    with pytest.raises(ValueError, match="click"):
        build_interactions(ev.lazy().with_columns(event_type=pl.lit("click")))


def test_negative_weight_clamps_the_pair_to_nothing() -> None:
    ev = events([("b", "i", "view"), ("b", "i", "remove_from_cart"), ("b", "j", "view")])
    inter = build_interactions(ev, EventWeights(remove_from_cart=-2.0))
    assert set(dense(inter)) == {("b", "j")}
    assert inter.stats.n_dropped_pairs == 1


def test_bad_input_is_rejected_with_a_readable_error() -> None:
    ev = events([("b", "i", "view")]).with_columns(event_type=pl.lit("click"))
    with pytest.raises(ValueError, match="click"):
        build_interactions(ev)
    with pytest.raises(ValueError, match="buyer_id"):
        build_interactions(events([("b", "i", "view")]).drop("buyer_id"))


def test_events_without_item_column_or_rows() -> None:
    inter = build_interactions(events([("b", "i", "view")]).drop("item_id"))
    assert inter.matrix.shape == (0, 0) and inter.stats.n_null_item == 1
    empty = build_interactions(events([]), item_index=IdIndex(["i"]))
    assert empty.matrix.shape == (0, 1) and empty.as_of is None


def test_id_index_maps_vectorized_with_minus_one_for_unknown() -> None:
    index = IdIndex(["x", "a", "m"])
    values = pl.Series(["m", "zz", None, "x", "a", "m"])
    np.testing.assert_array_equal(index.codes(values), [2, -1, -1, 0, 1, 2])
    np.testing.assert_array_equal(index.codes(np.array(["a"])), [1])
    assert index.lookup(np.array([[2, 0]])).tolist() == [["m", "x"]]
    assert IdIndex.from_values(["b", None, "a", "b"]).ids.to_list() == ["a", "b"]
    grown = index.extend(["a", "new", "new"])
    assert grown.ids.to_list() == ["x", "a", "m", "new"]
    assert index.codes(["new"]).tolist() == [-1]  # the original is unchanged
    with pytest.raises(ValueError, match="unique"):
        IdIndex(["a", "a"])
    with pytest.raises(IndexError):
        index.lookup([3])


def test_event_weights_config_round_trip_and_strictness() -> None:
    weights = EventWeights(view=0.5, half_life_days=30, scaling="linear")
    assert EventWeights.from_dict(weights.to_dict()) == weights
    with pytest.raises(ConfigError, match="purchse"):
        EventWeights.from_dict({"purchse": 3})
    with pytest.raises(ConfigError):
        EventWeights.from_dict({"half_life_days": 0})


def test_offer_items_expand_store_and_platform_scopes() -> None:
    item_index = IdIndex(["i1", "i2", "i3", "i4"])
    items = pl.DataFrame(
        {"item_id": ["i1", "i2", "i3", "i4"], "seller_id": ["s1", "s1", "s2", "s2"]}
    )
    offers = pl.DataFrame(
        {"offer_id": ["listed", "store", "platform"], "seller_id": ["s1", "s2", None]}
    )
    offer_items = pl.DataFrame({"offer_id": ["listed", "listed"], "item_id": ["i2", "gone"]})
    result = build_offer_items(offer_items, item_index, offers=offers, items=items)
    assert result.matrix.toarray().tolist() == [[0, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]]
    assert result.scope.tolist() == ["items", "store", "platform"]
    assert result.n_unknown_items == 1
    # Without the offers/items tables an offer without listed items covers nothing.
    bare = build_offer_items(offer_items, item_index)
    assert bare.offer_index.ids.to_list() == ["listed"]
    assert bare.matrix.toarray().tolist() == [[0, 1, 0, 0]]


def test_store_wide_offers_of_a_seller_share_one_scope_row() -> None:
    """A thousand store-wide coupons of one seller are one row of the membership matrix
    (its size does not grow with offers x items); each offer still maps to its items."""
    item_index = IdIndex([f"i{k}" for k in range(6)])
    items = pl.DataFrame(
        {"item_id": [f"i{k}" for k in range(6)], "seller_id": ["s1"] * 4 + ["s2"] * 2}
    )
    offers = pl.DataFrame(
        {
            "offer_id": [f"s1-{k}" for k in range(1000)] + ["s2-a", "scoped", "all", "all2"],
            "seller_id": ["s1"] * 1000 + ["s2", "s2", None, None],
        }
    )
    offer_items = pl.DataFrame({"offer_id": ["scoped"], "item_id": ["i5"]})
    result = build_offer_items(offer_items, item_index, offers=offers, items=items)
    # Rows: the scoped offer's, s1's store, s2's store, the platform.
    assert result.matrix.shape == (4, 6) and result.matrix.nnz == 1 + 4 + 2 + 6
    per_offer = result.offer_matrix().toarray()
    assert per_offer.shape == (1004, 6)
    assert per_offer[0].tolist() == per_offer[999].tolist() == [1, 1, 1, 1, 0, 0]
    assert per_offer[1000].tolist() == [0, 0, 0, 0, 1, 1]
    assert per_offer[1001].tolist() == [0, 0, 0, 0, 0, 1]
    assert per_offer[1002].tolist() == per_offer[1003].tolist() == [1] * 6
    assert result.row_of(np.array([0, 999, -1])).tolist() == [1, 1, -1]
