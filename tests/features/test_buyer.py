"""Known-answer tests of `buyer_features` and `time_scale_days` on hand-made events."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from recsys.features.buyer import (
    BUYER_FEATURES,
    DEFAULT_TIME_SCALE_DAYS,
    buyer_features,
    time_scale_days,
)

T = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "buyer_id": pl.String(),
    "item_id": pl.String(),
    "event_type": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "session_id": pl.String(),
    "order_id": pl.String(),
    "quantity": pl.Int64(),
    "amount": pl.Float64(),
}


def ev(
    buyer: str,
    kind: str,
    when: timedelta,
    item: str | None = None,
    session: str | None = None,
    order: str | None = None,
    quantity: int | None = None,
    amount: float | None = None,
) -> dict[str, Any]:
    """One events row at ``T + when`` (``when`` is negative for the past)."""
    return {
        "buyer_id": buyer,
        "item_id": item,
        "event_type": kind,
        "ts": T + when,
        "session_id": session,
        "order_id": order,
        "quantity": quantity,
        "amount": amount,
    }


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=EVENT_SCHEMA)


ITEMS = pl.DataFrame(
    {
        "item_id": ["i1", "i2"],
        "seller_id": ["s1", "s1"],
        "category": ["c1", "c2"],
        "price": [4.0, 2.5],
    }
)
BUYERS = pl.DataFrame(
    {
        "buyer_id": ["A", "B", "C", "D"],
        "first_seen": [None, T - 50 * DAY, T + 5 * DAY, T - 9 * DAY],
    },
    schema={"buyer_id": pl.String, "first_seen": pl.Datetime("us", "UTC")},
)


def three_buyers() -> pl.DataFrame:
    """A: a shopper with sessions and order ids; B: a till log (no order or session ids);
    C: a browser who never bought. D is in `BUYERS` only (no events)."""
    return frame(
        [
            # A
            ev("A", "view", -100 * DAY, "i1", "s1"),
            ev("A", "checkout", -40 * DAY - HOUR, None, "s2"),  # converted an hour later
            ev("A", "purchase", -40 * DAY, "i1", "s2", "o1", 1, 20.0),
            ev("A", "view", -20 * DAY, "i2", "s3"),
            ev("A", "purchase", -10 * DAY, "i1", "s4", "o2", 1, 10.0),
            ev("A", "purchase", -10 * DAY, "i2", "s4", "o2", 2, None),  # 2 x 2.5 with items
            ev("A", "view", -3 * DAY, "i1", "s5"),
            ev("A", "add_to_cart", -1 * DAY, "i2", "s5"),
            ev("A", "checkout", -1 * DAY + HOUR, None, "s5"),  # abandoned
            # B: one order = two rows at the same time, another three days later
            ev("B", "purchase", -5 * DAY, "i1", quantity=3),  # 3 x 4.0 with items
            ev("B", "purchase", -5 * DAY, "i2", amount=1.5),
            ev("B", "purchase", -2 * DAY, "i1", amount=6.0),
            # C
            ev("C", "add_to_cart", -20 * DAY, "i2", "s8"),
            ev("C", "search", -8 * DAY, None, "s9"),
            ev("C", "view", -8 * DAY, "i2", "s9"),
        ]
    )


EXPECTED: dict[str, dict[str, float | int | None]] = {
    "A": {
        "days_since_last_event": 1 - 1 / 24,
        "days_since_last_purchase": 10.0,
        "days_since_last_cart_add": 1.0,
        "days_since_last_abandoned_checkout": 1 - 1 / 24,
        "orders_30d": 1,
        "orders_90d": 2,
        "orders_total": 2,
        "revenue_total": 35.0,
        "mean_order_value": 17.5,
        "tenure_days": 100.0,
        "sessions_7d": 1,
        "sessions_30d": 3,
        "views_7d": 1,
        "views_30d": 2,
        "open_cart_adds_14d": 1,
        "abandoned_checkouts": 1,
        "distinct_items_bought": 2,
        "distinct_categories_bought": 2,
        "mean_inter_order_gap_days": 30.0,
    },
    "B": {
        "days_since_last_event": 2.0,
        "days_since_last_purchase": 2.0,
        "days_since_last_cart_add": None,
        "days_since_last_abandoned_checkout": None,
        "orders_30d": 2,
        "orders_90d": 2,
        "orders_total": 2,
        "revenue_total": 19.5,
        "mean_order_value": 9.75,
        "tenure_days": 50.0,  # buyers.first_seen is earlier than the first event
        "sessions_7d": 2,  # no session ids: one session per active day
        "sessions_30d": 2,
        "views_7d": 0,
        "views_30d": 0,
        "open_cart_adds_14d": 0,
        "abandoned_checkouts": 0,
        "distinct_items_bought": 2,
        "distinct_categories_bought": 2,
        "mean_inter_order_gap_days": 3.0,
    },
    "C": {
        "days_since_last_event": 8.0,
        "days_since_last_purchase": None,
        "days_since_last_cart_add": 20.0,
        "days_since_last_abandoned_checkout": None,
        "orders_30d": 0,
        "orders_90d": 0,
        "orders_total": 0,
        "revenue_total": 0.0,
        "mean_order_value": None,
        "tenure_days": 20.0,  # first_seen after as_of is ignored
        "sessions_7d": 0,
        "sessions_30d": 2,
        "views_7d": 0,
        "views_30d": 1,
        "open_cart_adds_14d": 0,  # the cart add is older than 14 days
        "abandoned_checkouts": 0,
        "distinct_items_bought": 0,
        "distinct_categories_bought": 0,
        "mean_inter_order_gap_days": None,
    },
}


def assert_row(features: pl.DataFrame, buyer: str, expected: dict[str, Any]) -> None:
    row = features.filter(pl.col("buyer_id") == buyer).row(0, named=True)
    for name, want in expected.items():
        got = row[name]
        if want is None:
            assert got is None, f"{buyer}.{name}: expected null, got {got}"
        else:
            assert got is not None, f"{buyer}.{name}: expected {want}, got null"
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (
                f"{buyer}.{name}: expected {want}, got {got}"
            )


def test_exact_values_on_three_buyers() -> None:
    features = buyer_features(three_buyers(), T, buyers=BUYERS, items=ITEMS)
    assert features.columns == ["buyer_id", *BUYER_FEATURES]
    assert features["buyer_id"].to_list() == ["A", "B", "C"]  # D has no events: no row
    for buyer, expected in EXPECTED.items():
        assert_row(features, buyer, expected)


def test_dtypes_counts_int_days_float() -> None:
    features = buyer_features(three_buyers(), T, items=ITEMS)
    assert features.schema["orders_total"] == pl.Int64
    assert features.schema["sessions_30d"] == pl.Int64
    assert features.schema["days_since_last_event"] == pl.Float64
    assert features.schema["revenue_total"] == pl.Float64


def test_without_items_unknown_amounts_stay_unknown() -> None:
    features = buyer_features(three_buyers(), T)
    # A's second order has one row of 10.0 and one without amount or price.
    assert_row(features, "A", {"revenue_total": 30.0, "mean_order_value": 15.0})
    # B: the first order only has the 1.5 row valued.
    assert_row(features, "B", {"revenue_total": 7.5, "mean_order_value": 3.75})
    assert features["distinct_categories_bought"].null_count() == 3
    assert_row(features, "B", {"tenure_days": 5.0})  # no buyers table: first event


def test_orders_without_any_known_value_have_null_money() -> None:
    events = frame([ev("X", "purchase", -2 * DAY, "i9", order="o")])
    features = buyer_features(events, T)
    assert_row(features, "X", {"orders_total": 1, "revenue_total": None, "mean_order_value": None})


def test_no_leakage_events_at_or_after_as_of_are_ignored() -> None:
    base = three_buyers()
    future = frame(
        [
            ev("A", "purchase", timedelta(0), "i1", "s9", "o9", 1, 99.0),  # exactly at as_of
            ev("C", "purchase", HOUR, "i1", "s9", "o8", 1, 5.0),
            ev("C", "view", 3 * DAY, "i1", "s9"),
            ev("Z", "view", DAY, "i1", "s7"),  # a buyer who only appears later
            ev("B", "view", 10 * DAY, "i2"),
        ]
    )
    before = buyer_features(base, T, buyers=BUYERS, items=ITEMS)
    after = buyer_features(pl.concat([base, future]), T, buyers=BUYERS, items=ITEMS)
    assert before.equals(after)


def test_a_purchase_after_as_of_does_not_close_an_abandoned_checkout() -> None:
    events = frame(
        [
            ev("A", "checkout", -HOUR, None, "s1"),
            ev("A", "purchase", HOUR, "i1", "s1", "o1", 1, 3.0),
        ]
    )
    features = buyer_features(events, T)
    assert_row(features, "A", {"abandoned_checkouts": 1, "orders_total": 0})
    later = buyer_features(events, T + DAY)
    assert_row(later, "A", {"abandoned_checkouts": 0, "orders_total": 1})


def test_minimal_contract_columns_are_enough() -> None:
    events = three_buyers().select("buyer_id", "event_type", "ts")
    features = buyer_features(events, T)
    assert features.height == 3
    # Without order ids, B's two same-time rows are still one order; A's are one per time.
    assert_row(features, "B", {"orders_total": 2})
    assert_row(features, "A", {"orders_total": 2, "revenue_total": None})


def test_missing_required_column_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"lacks required column\(s\) \['ts'\]"):
        buyer_features(three_buyers().drop("ts"), T)


def test_naive_as_of_is_utc_and_lazy_input_is_accepted() -> None:
    events = three_buyers()
    aware = buyer_features(events, T, items=ITEMS)
    naive = buyer_features(events.lazy(), T.replace(tzinfo=None), items=ITEMS)
    assert aware.equals(naive)


def test_no_events_before_as_of_gives_an_empty_frame() -> None:
    features = buyer_features(three_buyers(), T - 1000 * DAY)
    assert features.height == 0
    assert features.columns == ["buyer_id", *BUYER_FEATURES]


def purchases_every(gap_days: float, buyers: int, orders: int = 3) -> pl.DataFrame:
    return frame(
        [
            ev(f"b{b}", "purchase", -timedelta(days=gap_days * k) - b * HOUR, "i1", order=None)
            for b in range(buyers)
            for k in range(orders)
        ]
    )


def test_time_scale_is_the_median_gap() -> None:
    weekly = purchases_every(7.0, buyers=30)
    monthly = purchases_every(30.0, buyers=11)
    assert time_scale_days(weekly) == pytest.approx(7.0)
    assert time_scale_days(pl.concat([weekly, monthly])) == pytest.approx(7.0)
    # One-order buyers do not count.
    singles = frame([ev(f"s{b}", "purchase", -b * DAY, "i1") for b in range(100)])
    assert time_scale_days(pl.concat([monthly, purchases_every(30.0, 20, 3), singles])) == (
        pytest.approx(30.0)
    )


def test_time_scale_is_clamped_and_defaults_when_too_few_buyers() -> None:
    assert time_scale_days(purchases_every(1.0, buyers=25)) == 3.0
    assert time_scale_days(purchases_every(200.0, buyers=25)) == 90.0
    assert time_scale_days(purchases_every(7.0, buyers=5)) == DEFAULT_TIME_SCALE_DAYS
    assert time_scale_days(purchases_every(7.0, buyers=5), min_buyers=5) == pytest.approx(7.0)


def test_time_scale_ignores_purchases_at_or_after_as_of() -> None:
    events = purchases_every(7.0, buyers=25)
    assert time_scale_days(events, T - 8 * DAY) == DEFAULT_TIME_SCALE_DAYS  # one order each


# ---------------------------------------------------------------- buyers' own attributes


def test_buyer_attributes_keep_every_usable_column() -> None:
    from recsys.features.buyer import buyer_attributes

    buyers = pl.DataFrame(
        {
            "buyer_id": ["a", "b", "c", "d"],
            "first_seen": [datetime(2026, 1, 1, tzinfo=UTC)] * 4,
            "region": ["south", "north", None, "north"],
            "age": [30, 41, None, 55],
            "member": [True, False, True, True],
            "email": ["a@x", "b@x", "c@x", "d@x"],
            "plan": ["gold"] * 4,
            "empty": pl.Series([None] * 4, dtype=pl.String),
            "since": [datetime(2025, 1, k + 1) for k in range(4)],
        }
    )
    frame, notes = buyer_attributes(buyers, max_categories=3)
    assert frame is not None
    assert frame.columns == ["buyer_id", "attr_region", "attr_age", "attr_member"]
    # Text with few values stays text (a category); missing stays missing.
    assert frame["attr_region"].to_list() == ["south", "north", None, "north"]
    assert frame["attr_age"].to_list() == [30.0, 41.0, None, 55.0]
    assert frame["attr_member"].to_list() == [1.0, 0.0, 1.0, 1.0]
    joined = " | ".join(notes)
    assert "email left out (4 distinct values, more than 3" in joined
    assert "plan left out (no variance" in joined and "empty left out (no variance" in joined
    assert "since left out (type" in joined
    assert buyer_attributes(None) == (None, [])
    only_ids = buyers.select("buyer_id", "first_seen", "plan")
    assert buyer_attributes(only_ids)[0] is None
    # Some buyers' rows, the columns chosen on the whole table.
    some, _ = buyer_attributes(buyers, pl.Series(["b"]), max_categories=3)
    assert some is not None and some.row(0) == ("b", "north", 41.0, 0.0)
