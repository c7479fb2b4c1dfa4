"""Known-answer tests of the pair features and exposure outcomes on a hand-built marketplace.

The dataset (all times March 2024, UTC; ``AS_OF`` = March 20, 00:00):

items      seller  category  price         offers  seller  tool         scope     start..end
i1         s1      food      10.0          o1      s1      percent_off  store     1..31
i2         s1      food      20.0          o2      s2      amount_off   store     1..13
i3         s1      toys       5.0          o3      s1      points       i1, i2    1..31
i4         s2      toys       8.0
i5         s2      toys      12.0
i6         s2      food       4.0

events                                                   before AS_OF?
b1  purchase i1 + i2, order A, 1st 10:00, 10.0 + 20.0    yes (s1, order value 30)
b1  view i1, Feb 10                                      yes, but more than 30 days before
b1  view i1, 5th                                         yes (s1)
b1  purchase i3, order B, 10th 12:00, 5.0                yes (s1, order value 5)
b1  purchase i4 + i6, order C, 15th, 8.0 + 4.0           yes (s2, order value 12)
b1  view i4 18th, view i5 19th, add_to_cart i5 19th      yes (s2)
b1  purchase i5, order D, 20th 00:00 (exactly AS_OF)     no
b1  view i2, 25th                                        no
b2  purchase i6 x2 + i4, no order_id, no amount,         yes (s2; one order keyed by its
    12th 06:00 (same timestamp)                                time; 2 x 4.0 + 8.0 = 16)
b2  purchase i1, order E, 16th, 9.0                      yes (s1)
b2  add_to_cart i2 17th, search (no item) 17th           yes (s1 cart)
b3  view i3, 19th                                        yes (s1)
b3  purchase i1, order F, 22nd, 9.0                      no
b4  nothing (appears only in target lists)

exposures: e1 b1 o1 8th; e2 b2 o3 16th; e3 b1 o2 10th; e4 b2 control 13th (propensity
0.2); e5 b3 o1 21st; e6 b2 o2 5th; e7 b1 o3 18th.
redemptions: r1 b1 o1 10th 12:00 linked to e1; r2 b3 o1 22nd unlinked; r3 b2 o2 12th 06:00
unlinked.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recsys.data.dataset import Dataset
from recsys.data.schema import TABLES_BY_NAME
from recsys.features.pairs import (
    PLATFORM,
    PRIOR_REDEMPTION_RATE,
    FeatureStore,
    buyer_category_shares,
    buyer_seller_features,
    exposure_outcomes,
    offer_attributes,
    purchase_lines,
    redemption_history,
    scoped_purchases,
)


def _ts(day: int, hour: int = 0, month: int = 3) -> datetime:
    return datetime(2024, month, day, hour, tzinfo=UTC)


AS_OF = _ts(20)
HORIZON = 7.0


def _frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A frame with every contract column of `table`; columns a row does not give are null."""
    schema = TABLES_BY_NAME[table].schema
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


def _ev(
    buyer: str,
    kind: str,
    when: datetime,
    item: str | None = None,
    order: str | None = None,
    amount: float | None = None,
    quantity: int = 1,
) -> dict[str, Any]:
    return {
        "buyer_id": buyer,
        "item_id": item,
        "event_type": kind,
        "ts": when,
        "order_id": order,
        "quantity": quantity,
        "amount": amount,
    }


def _exp(eid: str, buyer: str, offer: str | None, when: datetime, p: float) -> dict[str, Any]:
    return {
        "exposure_id": eid,
        "buyer_id": buyer,
        "offer_id": offer,
        "ts": when,
        "propensity": p,
        "policy": "hand",
    }


def _dataset() -> Dataset:
    items = _frame(
        "items",
        [
            {"item_id": "i1", "seller_id": "s1", "category": "food", "price": 10.0},
            {"item_id": "i2", "seller_id": "s1", "category": "food", "price": 20.0},
            {"item_id": "i3", "seller_id": "s1", "category": "toys", "price": 5.0},
            {"item_id": "i4", "seller_id": "s2", "category": "toys", "price": 8.0},
            {"item_id": "i5", "seller_id": "s2", "category": "toys", "price": 12.0},
            {"item_id": "i6", "seller_id": "s2", "category": "food", "price": 4.0},
        ],
    )
    events = _frame(
        "events",
        [
            _ev("b1", "purchase", _ts(1, 10), "i1", "A", 10.0),
            _ev("b1", "purchase", _ts(1, 10), "i2", "A", 20.0),
            _ev("b1", "view", _ts(10, month=2), "i1"),
            _ev("b1", "view", _ts(5), "i1"),
            _ev("b1", "purchase", _ts(10, 12), "i3", "B", 5.0),
            _ev("b1", "purchase", _ts(15), "i4", "C", 8.0),
            _ev("b1", "purchase", _ts(15), "i6", "C", 4.0),
            _ev("b1", "view", _ts(18), "i4"),
            _ev("b1", "view", _ts(19), "i5"),
            _ev("b1", "add_to_cart", _ts(19), "i5"),
            _ev("b1", "purchase", AS_OF, "i5", "D", 12.0),
            _ev("b1", "view", _ts(25), "i2"),
            _ev("b2", "purchase", _ts(12, 6), "i6", quantity=2),
            _ev("b2", "purchase", _ts(12, 6), "i4"),
            _ev("b2", "purchase", _ts(16), "i1", "E", 9.0),
            _ev("b2", "add_to_cart", _ts(17), "i2"),
            _ev("b2", "search", _ts(17)),
            _ev("b3", "view", _ts(19), "i3"),
            _ev("b3", "purchase", _ts(22), "i1", "F", 9.0),
        ],
    )
    offers = _frame(
        "offers",
        [
            {
                "offer_id": "o1",
                "tool": "percent_off",
                "seller_id": "s1",
                "value": 0.1,
                "start_ts": _ts(1),
                "end_ts": _ts(31),
            },
            {
                "offer_id": "o2",
                "tool": "amount_off",
                "seller_id": "s2",
                "value": 5.0,
                "min_spend": 20.0,
                "cost": 5.0,
                "start_ts": _ts(1),
                "end_ts": _ts(13),
            },
            {
                "offer_id": "o3",
                "tool": "points",
                "seller_id": "s1",
                "value": 0.05,
                "start_ts": _ts(1),
                "end_ts": _ts(31),
            },
        ],
    )
    offer_items = _frame(
        "offer_items", [{"offer_id": "o3", "item_id": "i1"}, {"offer_id": "o3", "item_id": "i2"}]
    )
    exposures = _frame(
        "exposures",
        [
            _exp("e1", "b1", "o1", _ts(8), 0.5),
            _exp("e2", "b2", "o3", _ts(16), 0.25),
            _exp("e3", "b1", "o2", _ts(10), 0.5),
            _exp("e4", "b2", None, _ts(13), 0.2),
            _exp("e5", "b3", "o1", _ts(21), 0.5),
            _exp("e6", "b2", "o2", _ts(5), 0.5),
            _exp("e7", "b1", "o3", _ts(18), 0.5),
        ],
    )
    redemptions = _frame(
        "redemptions",
        [
            {"buyer_id": "b1", "offer_id": "o1", "ts": _ts(10, 12), "exposure_id": "e1"},
            {"buyer_id": "b3", "offer_id": "o1", "ts": _ts(22)},
            {"buyer_id": "b2", "offer_id": "o2", "ts": _ts(12, 6)},
        ],
    )
    return Dataset(
        items=items,
        events=events,
        offers=offers,
        offer_items=offer_items,
        exposures=exposures,
        redemptions=redemptions,
    )


def _by_key(frame: pl.DataFrame, *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows of `frame` keyed by the values of `keys` (asserting the keys are unique)."""
    out = {tuple(row[k] for k in keys): row for row in frame.iter_rows(named=True)}
    assert len(out) == frame.height, f"{keys} is not a key of the frame"
    return out


def _assert_row(row: dict[str, Any], expected: dict[str, Any]) -> None:
    for column, value in expected.items():
        got = row[column]
        if value is None or isinstance(value, bool | str):
            assert got == value, f"{column}: got {got!r}, expected {value!r}"
        else:
            assert got == pytest.approx(value), f"{column}: got {got!r}, expected {value!r}"


# ---------------------------------------------------------------------------- tables


def test_offer_attributes_scope_and_seller() -> None:
    offers = _by_key(offer_attributes(_dataset()), "offer_id")
    assert set(offers) == {("o1",), ("o2",), ("o3",)}
    _assert_row(
        offers[("o1",)],
        {"seller_key": "s1", "tool": "percent_off", "offer_scoped": 0.0, "offer_scope_size": 0.0},
    )
    assert offers[("o1",)]["scope_category"] is None
    _assert_row(offers[("o2",)], {"offer_value": 5.0, "offer_min_spend": 20.0, "offer_cost": 5.0})
    _assert_row(
        offers[("o3",)],
        {
            "seller_key": "s1",
            "offer_scoped": 1.0,
            "offer_scope_size": 2.0,
            "scope_category": "food",
        },
    )


def test_offer_attributes_platform_offer_and_missing_offers_table() -> None:
    ds = _dataset()
    assert ds.offers is not None
    platform = ds.offers.head(1).with_columns(
        pl.lit("o9").alias("offer_id"), pl.lit(None, pl.String).alias("seller_id")
    )
    offers = _by_key(
        offer_attributes(replace(ds, offers=pl.concat([ds.offers, platform]))), "offer_id"
    )
    assert offers[("o9",)]["seller_key"] == PLATFORM
    with pytest.raises(ValueError, match="no offers table"):
        offer_attributes(replace(ds, offers=None))


def test_purchase_lines_values_order_keys_and_cut() -> None:
    ds = _dataset()
    lines = purchase_lines(ds)
    assert lines.height == 10  # b1 6, b2 3, b3 1 purchase rows; views and searches dropped
    before = purchase_lines(ds, before=AS_OF)
    assert before.height == 8  # b1's order D (at AS_OF) and b3's order F (22nd) cut
    b2 = before.filter(pl.col("buyer_id") == "b2").sort("item_id")
    # No amount: quantity x price (2 x 4.0 for i6, 1 x 8.0 for i4). No order_id: both
    # rows share their timestamp, hence one order key.
    assert b2["item_id"].to_list() == ["i1", "i4", "i6"]
    assert b2["line_value"].to_list() == pytest.approx([9.0, 8.0, 8.0])
    assert b2["order_key"][0] == "E"
    assert b2["order_key"][1] == b2["order_key"][2] is not None
    assert b2["seller_key"].to_list() == ["s1", "s2", "s2"]
    assert b2["category"].to_list() == ["food", "toys", "food"]


def test_buyer_seller_features_known_answers() -> None:
    bs = _by_key(buyer_seller_features(_dataset(), AS_OF), "buyer_id", "seller_key")
    sellers = {("b1", "s1"), ("b1", "s2"), ("b2", "s1"), ("b2", "s2"), ("b3", "s1")}
    platform = {(b, PLATFORM) for b in ("b1", "b2", "b3")}
    assert set(bs) == sellers | platform
    # The platform row sums the buyer's sellers (a platform-wide offer's "seller").
    one, two = bs[("b1", "s1")], bs[("b1", "s2")]
    _assert_row(
        bs[("b1", PLATFORM)],
        {
            "bs_orders": one["bs_orders"] + two["bs_orders"],
            "bs_lines": one["bs_lines"] + two["bs_lines"],
            "bs_order_share": 1.0,
            "bs_days_since_purchase": min(
                one["bs_days_since_purchase"], two["bs_days_since_purchase"]
            ),
            "bs_views_30d": one["bs_views_30d"] + two["bs_views_30d"],
            "bs_mean_order_value": (
                one["bs_mean_order_value"] * one["bs_orders"]
                + two["bs_mean_order_value"] * two["bs_orders"]
            )
            / (one["bs_orders"] + two["bs_orders"]),
        },
    )
    # b1 at s1: orders A (30.0) and B (5.0), 3 lines, last 10th 12:00 = 9.5 days before;
    # one view in 30 days (the Feb 10 view is older).
    _assert_row(
        bs[("b1", "s1")],
        {
            "bs_orders": 2.0,
            "bs_lines": 3.0,
            "bs_order_share": 2 / 3,
            "bs_days_since_purchase": 9.5,
            "bs_views_30d": 1.0,
            "bs_carts_30d": 0.0,
            "bs_mean_order_value": 17.5,
        },
    )
    # b1 at s2: order C (12.0) on the 15th; order D at AS_OF does not count.
    _assert_row(
        bs[("b1", "s2")],
        {
            "bs_orders": 1.0,
            "bs_lines": 2.0,
            "bs_order_share": 1 / 3,
            "bs_days_since_purchase": 5.0,
            "bs_views_30d": 2.0,
            "bs_carts_30d": 1.0,
            "bs_mean_order_value": 12.0,
        },
    )
    _assert_row(
        bs[("b2", "s1")],
        {
            "bs_orders": 1.0,
            "bs_order_share": 0.5,
            "bs_days_since_purchase": 4.0,
            "bs_views_30d": 0.0,
            "bs_carts_30d": 1.0,
            "bs_mean_order_value": 9.0,
        },
    )
    # b2 at s2: two rows without order_id at one time are one order worth 16.0, 7.75 days ago.
    _assert_row(
        bs[("b2", "s2")],
        {
            "bs_orders": 1.0,
            "bs_lines": 2.0,
            "bs_order_share": 0.5,
            "bs_days_since_purchase": 7.75,
            "bs_mean_order_value": 16.0,
        },
    )
    # b3 only browsed: zero orders and share (not NaN), no recency or order value.
    _assert_row(
        bs[("b3", "s1")],
        {
            "bs_orders": 0.0,
            "bs_lines": 0.0,
            "bs_order_share": 0.0,
            "bs_days_since_purchase": None,
            "bs_views_30d": 1.0,
            "bs_mean_order_value": None,
        },
    )


def test_nothing_at_or_after_as_of_is_counted() -> None:
    ds = _dataset()
    later = _frame(
        "events",
        [
            _ev("b2", "purchase", AS_OF, "i2", "G", 20.0),
            _ev("b2", "view", AS_OF, "i5"),
            _ev("b3", "add_to_cart", _ts(21), "i4"),
            _ev("b4", "purchase", _ts(23), "i3", "H", 5.0),
        ],
    )
    assert ds.exposures is not None and ds.redemptions is not None
    more = replace(
        ds,
        events=pl.concat([ds.events, later]),
        exposures=pl.concat(
            [ds.exposures, _frame("exposures", [_exp("e8", "b2", "o1", AS_OF, 0.5)])]
        ),
        redemptions=pl.concat(
            [
                ds.redemptions,
                _frame("redemptions", [{"buyer_id": "b2", "offer_id": "o1", "ts": AS_OF}]),
            ]
        ),
    )
    reference = FeatureStore.build(ds.before(AS_OF), AS_OF)
    for dataset in (ds, more):
        store = FeatureStore.build(dataset, AS_OF)
        for name, keys in [
            ("buyer_seller", ["buyer_id", "seller_key"]),
            ("buyer_category", ["buyer_id", "scope_category"]),
            ("scoped", ["buyer_id", "offer_id"]),
            ("history_buyer", ["buyer_id"]),
            ("history_tool", ["buyer_id", "tool"]),
        ]:
            assert_frame_equal(
                getattr(store, name).sort(keys),
                getattr(reference, name).sort(keys),
                check_column_order=False,
            )
    # The cut is exact: one microsecond later, b1's order D at AS_OF counts.
    just_after = buyer_seller_features(ds, AS_OF + timedelta(microseconds=1))
    b1_s2 = just_after.filter((pl.col("buyer_id") == "b1") & (pl.col("seller_key") == "s2"))
    assert b1_s2["bs_orders"].item() == 2.0
    assert b1_s2["bs_days_since_purchase"].item() == pytest.approx(0.0, abs=1e-6)


def test_buyer_category_shares_known_answers() -> None:
    shares = buyer_category_shares(purchase_lines(_dataset(), before=AS_OF))
    got = {
        k: r["scope_category_share"]
        for k, r in _by_key(shares, "buyer_id", "scope_category").items()
    }
    # b1: food i1, i2, i6 / toys i3, i4; b2: food i6, i1 / toys i4; b3 bought nothing yet.
    assert got == pytest.approx(
        {("b1", "food"): 0.6, ("b1", "toys"): 0.4, ("b2", "food"): 2 / 3, ("b2", "toys"): 1 / 3}
    )


def test_scoped_purchases_counts_lines_of_the_offers_items() -> None:
    ds = _dataset()
    scoped = scoped_purchases(ds, purchase_lines(ds, before=AS_OF))
    # o3 covers i1 and i2: b1 bought both (order A), b2 bought i1; store-wide offers absent.
    assert sorted(scoped.rows()) == [("b1", "o3", 2.0), ("b2", "o3", 1.0)]
    everything = scoped_purchases(ds, purchase_lines(ds))
    assert sorted(everything.rows()) == [("b1", "o3", 2.0), ("b2", "o3", 1.0), ("b3", "o3", 1.0)]


def test_redemption_history_before_as_of() -> None:
    per_buyer, per_tool = redemption_history(_dataset(), AS_OF)
    # Issued before AS_OF: b1 e1 (percent_off), e3 (amount_off), e7 (points); b2 e6
    # (amount_off), e2 (points). Redeemed before AS_OF: r1 (b1 percent_off, linked),
    # r3 (b2 amount_off, unlinked). e5 and r2 (b3, 21st-22nd) are later; e4 is control.
    assert sorted(
        per_tool.select("buyer_id", "tool", "past_tool_offers", "past_tool_redemptions").rows()
    ) == [
        ("b1", "amount_off", 1.0, 0.0),
        ("b1", "percent_off", 1.0, 1.0),
        ("b1", "points", 1.0, 0.0),
        ("b2", "amount_off", 1.0, 1.0),
        ("b2", "points", 1.0, 0.0),
    ]
    rows = _by_key(per_buyer, "buyer_id")
    assert set(rows) == {("b1",), ("b2",)}
    _assert_row(
        rows[("b1",)],
        {"past_offers": 3.0, "past_redemptions": 1.0, "past_redemption_rate": 1.1 / 8},
    )
    _assert_row(
        rows[("b2",)],
        {"past_offers": 2.0, "past_redemptions": 1.0, "past_redemption_rate": 1.1 / 7},
    )
    # Without exposures there is no history, but the tables keep their schema.
    empty_buyer, empty_tool = redemption_history(replace(_dataset(), exposures=None), AS_OF)
    assert empty_buyer.height == empty_tool.height == 0
    assert "past_redemption_rate" in empty_buyer.columns


# ---------------------------------------------------------------------------- pair features

PAIRS = pl.DataFrame(
    {
        "buyer_id": ["b1", "b2", "b4", "b1", "b1", "b3", "b2"],
        "offer_id": ["o3", "o1", "o2", "o404", "o3", "o1", "o2"],
        "tag": ["r0", "r1", "r2", "r3", "r4", "r5", "r6"],
    }
)

ZERO_HISTORY = {"past_offers": 0.0, "past_redemptions": 0.0, "past_redemption_rate": 0.02}

EXPECTED_PAIRS: list[dict[str, Any]] = [
    {  # b1 x item-scoped o3 (s1, food)
        "offer_known": True,
        "seller_key": "s1",
        "tool": "points",
        "offer_scoped": 1.0,
        "offer_scope_size": 2.0,
        "bs_orders": 2.0,
        "bs_order_share": 2 / 3,
        "bs_days_since_purchase": 9.5,
        "bs_views_30d": 1.0,
        "bs_mean_order_value": 17.5,
        "scope_purchases": 2.0,  # i1 and i2 in order A
        "scope_category_share": 0.6,
        "past_offers": 3.0,
        "past_redemptions": 1.0,
        "past_redemption_rate": 1.1 / 8,
        "past_tool_offers": 1.0,  # e7, points
        "past_tool_redemptions": 0.0,
    },
    {  # b2 x store-wide o1 (s1)
        "offer_known": True,
        "seller_key": "s1",
        "offer_scoped": 0.0,
        "bs_orders": 1.0,
        "bs_order_share": 0.5,
        "bs_days_since_purchase": 4.0,
        "bs_carts_30d": 1.0,
        "bs_mean_order_value": 9.0,
        "scope_purchases": 1.0,  # store-wide: every line at s1 (i1 on the 16th)
        "scope_category_share": 1.0,
        "past_offers": 2.0,
        "past_redemptions": 1.0,
        "past_redemption_rate": 1.1 / 7,
        "past_tool_offers": 0.0,  # b2 was never sent percent_off
        "past_tool_redemptions": 0.0,
    },
    {  # unknown buyer b4 x o2: zero counts, null recency
        "offer_known": True,
        "seller_key": "s2",
        "bs_orders": 0.0,
        "bs_order_share": 0.0,
        "bs_views_30d": 0.0,
        "bs_carts_30d": 0.0,
        "bs_days_since_purchase": None,
        "bs_mean_order_value": None,
        "scope_purchases": 0.0,
        "scope_category_share": 1.0,
        "past_tool_offers": 0.0,
        "past_tool_redemptions": 0.0,
        **ZERO_HISTORY,
    },
    {  # b1 x unknown offer: null offer columns, the buyer's own history still there
        "offer_known": False,
        "seller_key": None,
        "tool": None,
        "offer_value": None,
        "offer_scope_size": None,
        "bs_orders": 0.0,
        "past_offers": 3.0,
        "past_redemptions": 1.0,
        "past_tool_offers": 0.0,
    },
    {},  # duplicate of row 0, checked against it
    {  # b3 x o1: browsed s1 only
        "bs_orders": 0.0,
        "bs_order_share": 0.0,
        "bs_views_30d": 1.0,
        "bs_days_since_purchase": None,
        "scope_purchases": 0.0,
        "scope_category_share": 1.0,
        **ZERO_HISTORY,
    },
    {  # b2 x o2 (s2, amount_off, redeemed once before via r3)
        "bs_orders": 1.0,
        "bs_days_since_purchase": 7.75,
        "bs_mean_order_value": 16.0,
        "scope_purchases": 2.0,  # both lines of the time-keyed order
        "scope_category_share": 1.0,
        "past_tool_offers": 1.0,
        "past_tool_redemptions": 1.0,
    },
]


@pytest.fixture(scope="module")
def store() -> FeatureStore:
    return FeatureStore.build(_dataset(), AS_OF)


def test_prior_redemption_rate_is_the_smoothing_of_no_history() -> None:
    assert pytest.approx(0.02) == PRIOR_REDEMPTION_RATE


def test_pair_features_known_answers_in_input_order(store: FeatureStore) -> None:
    out = store.pair_features(PAIRS)
    assert out.height == PAIRS.height
    assert out["tag"].to_list() == PAIRS["tag"].to_list()  # input columns kept, in order
    assert out.select("buyer_id", "offer_id").rows() == PAIRS.select("buyer_id", "offer_id").rows()
    rows = out.to_dicts()
    for i, expected in enumerate(EXPECTED_PAIRS):
        _assert_row(rows[i], expected)
    assert {k: v for k, v in rows[4].items() if k != "tag"} == {
        k: v for k, v in rows[0].items() if k != "tag"
    }


def test_pair_features_order_does_not_depend_on_input_order(store: FeatureStore) -> None:
    out = store.pair_features(PAIRS)
    reversed_out = store.pair_features(PAIRS.reverse())
    assert_frame_equal(reversed_out, out.reverse())


def test_pair_features_of_a_single_repeated_pair(store: FeatureStore) -> None:
    pairs = pl.DataFrame({"buyer_id": ["b2"] * 3, "offer_id": ["o3"] * 3})
    out = store.pair_features(pairs)
    assert out.height == 3
    assert out.unique().height == 1
    # b2 bought i1 (one line in scope), food is 2/3 of b2's lines; o3 was sent once (e2).
    _assert_row(
        out.row(0, named=True),
        {"scope_purchases": 1.0, "scope_category_share": 2 / 3, "past_tool_offers": 1.0},
    )


def test_pair_features_with_buyer_table(store: FeatureStore) -> None:
    buyers = pl.DataFrame({"buyer_id": ["b1", "b3"], "rfm_score": [0.9, 0.1]})
    out = replace(store, buyers=buyers).pair_features(PAIRS)
    assert out.height == PAIRS.height
    assert out["rfm_score"].to_list() == [0.9, None, None, 0.9, 0.9, 0.1, None]


def test_feature_store_save_load_round_trip(store: FeatureStore, tmp_path: Path) -> None:
    buyers = pl.DataFrame({"buyer_id": ["b1", "b2"], "rfm_score": [0.9, 0.5]})
    for name, original in [("plain", store), ("with_buyers", replace(store, buyers=buyers))]:
        original.save(tmp_path / name)
        loaded = FeatureStore.load(tmp_path / name)
        assert loaded.as_of == AS_OF
        assert (loaded.buyers is None) == (original.buyers is None)
        assert_frame_equal(loaded.pair_features(PAIRS), original.pair_features(PAIRS))


# ---------------------------------------------------------------------------- outcomes


def test_exposure_outcomes_known_answers() -> None:
    out = _by_key(exposure_outcomes(_dataset(), HORIZON), "exposure_id")
    assert len(out) == 7  # one row per exposure, control included
    expected = {
        # window [8th, 15th): b1 bought at s1 on the 10th; r1 links to e1
        "e1": (_ts(15), 1.0, 1.0),
        # window [16th, 23rd): b2's s1 order E at exactly the 16th counts
        "e2": (_ts(23), 0.0, 1.0),
        # o2 ends the 13th: window [10th, 13th). b1's s1 order on the 10th is another
        # seller; its s2 order C on the 15th is after the offer's end
        "e3": (_ts(13), 0.0, 0.0),
        # control: no seller, so no purchase flag here (see control_outcomes)
        "e4": (_ts(20), 0.0, 0.0),
        # window [21st, 28th): unlinked r2 (22nd) and order F at s1 (22nd)
        "e5": (_ts(28), 1.0, 1.0),
        # window [5th, 12th) (horizon before the offer's end): r3 and b2's s2 order at
        # the 12th 06:00 are both just after it
        "e6": (_ts(12), 0.0, 0.0),
        # window [18th, 25th): b1 only bought at s2 (order D) in it
        "e7": (_ts(25), 0.0, 0.0),
    }
    for (eid,), row in out.items():
        window_end, redeemed, purchased = expected[eid]
        assert (row["window_end"], row["redeemed"], row["purchased"]) == (
            window_end,
            redeemed,
            purchased,
        ), eid
    assert out[("e4",)]["seller_key"] is None
    assert out[("e4",)]["propensity"] == pytest.approx(0.2)


def test_exposure_outcomes_longer_horizon_reaches_later_outcomes() -> None:
    out = _by_key(exposure_outcomes(_dataset(), 10.0), "exposure_id")
    # e6: window [5th, 13th) now (the offer's end): r3 and the s2 order on the 12th count.
    assert (out[("e6",)]["redeemed"], out[("e6",)]["purchased"]) == (1.0, 1.0)
    # e3 is still capped by the offer's end.
    assert out[("e3",)]["purchased"] == 0.0


def test_exposure_outcomes_platform_offer_counts_any_seller() -> None:
    ds = _dataset()
    assert ds.offers is not None and ds.exposures is not None
    platform = _frame("offers", [{"offer_id": "o9", "tool": "reminder", "end_ts": _ts(31)}])
    ds = replace(
        ds,
        offers=pl.concat([ds.offers, platform]),
        exposures=pl.concat(
            [ds.exposures, _frame("exposures", [_exp("e9", "b2", "o9", _ts(11), 0.5)])]
        ),
    )
    out = _by_key(exposure_outcomes(ds, HORIZON), "exposure_id")
    # window [11th, 18th): b2's order at s2 (12th) and at s1 (16th) both count
    assert out[("e9",)]["seller_key"] == PLATFORM
    assert (out[("e9",)]["purchased"], out[("e9",)]["redeemed"]) == (1.0, 0.0)


def test_exposure_outcomes_without_redemptions_or_exposures() -> None:
    out = exposure_outcomes(replace(_dataset(), redemptions=None), HORIZON)
    assert out["redeemed"].sum() == 0.0
    assert out["purchased"].sum() == 3.0  # e1, e2, e5
    with pytest.raises(ValueError, match="no exposures table"):
        exposure_outcomes(replace(_dataset(), exposures=None), HORIZON)


# ---------------------------------------------------------------------------- fixed bugs


def test_scope_category_of_an_offer_with_tied_categories_is_deterministic() -> None:
    ds = _dataset()
    mixed = _frame(
        "offer_items", [{"offer_id": "o3", "item_id": "i1"}, {"offer_id": "o3", "item_id": "i3"}]
    )  # one food item, one toys item
    ds = replace(ds, offer_items=mixed)
    picks = {
        offer_attributes(ds).filter(pl.col("offer_id") == "o3")["scope_category"].item()
        for _ in range(100)
    }
    assert len(picks) == 1


def test_save_over_an_older_store_leaves_no_stale_table(
    store: FeatureStore, tmp_path: Path
) -> None:
    replace(store, buyers=pl.DataFrame({"buyer_id": ["b1"], "rfm_score": [0.9]})).save(tmp_path)
    store.save(tmp_path)
    assert FeatureStore.load(tmp_path).buyers is None


# ---------------------------------------------------------------- issue 17: data shapes


def test_purchases_without_an_item_count_for_the_platform_row_only() -> None:
    """An item-less purchase has no seller: it adds to the buyer's platform history, and
    the platform row stays one per buyer (two rows doubled every platform offer's pair)."""
    ds = _dataset()
    extra = _frame("events", [_ev("b1", "purchase", _ts(11), None, "Z", 7.0)])
    with_total = replace(ds, events=pl.concat([ds.events, extra]))
    bs = buyer_seller_features(with_total, AS_OF)
    assert bs.filter(pl.col("buyer_id") == "b1")["seller_key"].sort().to_list() == [
        PLATFORM,
        "s1",
        "s2",
    ]
    platform = bs.filter((pl.col("buyer_id") == "b1") & (pl.col("seller_key") == PLATFORM))
    before = buyer_seller_features(ds, AS_OF).filter(
        (pl.col("buyer_id") == "b1") & (pl.col("seller_key") == PLATFORM)
    )
    assert platform["bs_orders"].item() == before["bs_orders"].item() + 1
    offers = with_total.offers.with_columns(  # type: ignore[union-attr]
        pl.lit(None, pl.String).alias("seller_id")
    )
    store = FeatureStore.build(replace(with_total, offers=offers), AS_OF)
    pairs = pl.DataFrame({"buyer_id": ["b1", "b2"], "offer_id": ["o1", "o1"]})
    assert store.pair_features(pairs).height == 2
