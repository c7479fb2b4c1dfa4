"""Eligibility: dates, seller scope, minimum spend and frequency caps, each with its reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from recsys.policy import PolicyConfig, RequestContext, filter_eligible, validate_candidates
from recsys.policy.eligibility import REQUEST_CART, REQUEST_SELLER

AS_OF = datetime(2024, 6, 1, 12, tzinfo=UTC)
BASE: dict[str, Any] = {
    "buyer_id": "b1",
    "seller_id": "s1",
    "tool": "percent_off",
    "p_redeem": 0.3,
    "uplift": 0.05,
    "p_purchase": 0.2,
    "order_value": 50.0,
    "offer_value": 0.1,
    "min_spend": None,
    "start_ts": None,
    "end_ts": None,
}


def candidates(*rows: dict[str, Any]) -> pl.DataFrame:
    data = [{**BASE, **row} for row in rows]
    return validate_candidates(pl.DataFrame(data, infer_schema_length=None))


def reasons(result_rejected: pl.DataFrame) -> dict[str, str]:
    return dict(result_rejected.select("offer_id", "reason_code").iter_rows())


def test_validity_window_is_half_open() -> None:
    day = timedelta(days=1)
    frame = candidates(
        {"offer_id": "expired", "end_ts": AS_OF - day},
        {"offer_id": "ends_now", "end_ts": AS_OF},
        {"offer_id": "future", "start_ts": AS_OF + day},
        {"offer_id": "starts_now", "start_ts": AS_OF, "end_ts": AS_OF + day},
        {"offer_id": "open"},
    )
    result = filter_eligible(frame, AS_OF, PolicyConfig())
    assert sorted(result.eligible["offer_id"]) == ["open", "starts_now"]
    assert reasons(result.rejected) == {
        "expired": "OUTSIDE_VALIDITY",
        "ends_now": "OUTSIDE_VALIDITY",
        "future": "OUTSIDE_VALIDITY",
    }
    text = result.rejected.filter(pl.col("offer_id") == "expired")["reason_text"][0]
    assert "2024-05-31 12:00" in text and "2024-06-01 12:00" in text


def test_naive_as_of_is_utc() -> None:
    frame = candidates({"offer_id": "o", "end_ts": AS_OF})
    naive = datetime(2024, 6, 1, 11, 59)
    assert filter_eligible(frame, naive, PolicyConfig()).eligible.height == 1


def test_seller_scope_keeps_own_and_platform_offers() -> None:
    frame = candidates(
        {"offer_id": "own", "seller_id": "s1"},
        {"offer_id": "other", "seller_id": "s2"},
        {"offer_id": "platform", "seller_id": None},
    )
    result = filter_eligible(frame, AS_OF, PolicyConfig(), context={"seller_id": "s1"})
    assert sorted(result.eligible["offer_id"]) == ["own", "platform"]
    assert reasons(result.rejected) == {"other": "OUT_OF_SELLER_SCOPE"}
    # Without a seller scope every seller's offers are in.
    assert filter_eligible(frame, AS_OF, PolicyConfig()).eligible.height == 3


def test_minimum_spend_with_known_and_unknown_cart() -> None:
    frame = candidates(
        {"offer_id": "min40", "min_spend": 40.0},
        {"offer_id": "min20", "min_spend": 20.0},
        {"offer_id": "none"},
    )
    known = filter_eligible(frame, AS_OF, PolicyConfig(), context=RequestContext(cart_value=30.0))
    assert sorted(known.eligible["offer_id"]) == ["min20", "none"]
    assert reasons(known.rejected) == {"min40": "NOT_ELIGIBLE_MIN_SPEND"}
    assert "30.0" in known.rejected["reason_text"][0] and "40.0" in known.rejected["reason_text"][0]

    unknown = filter_eligible(frame, AS_OF, PolicyConfig())
    flags = dict(unknown.eligible.select("offer_id", "min_spend_unverified").iter_rows())
    assert flags == {"min40": True, "min20": True, "none": False}


def test_each_row_can_carry_its_own_requests_scope_and_cart() -> None:
    """Many requests decided in one call: the request columns win over the call's context."""
    frame = candidates(
        {"buyer_id": "r1", "offer_id": "own", "seller_id": "s1", "min_spend": 40.0},
        {"buyer_id": "r1", "offer_id": "other", "seller_id": "s2"},
        {"buyer_id": "r2", "offer_id": "own", "seller_id": "s1", "min_spend": 40.0},
        {"buyer_id": "r2", "offer_id": "other", "seller_id": "s2"},
        {"buyer_id": "r3", "offer_id": "own", "seller_id": "s1", "min_spend": 40.0},
    ).with_columns(
        pl.Series(REQUEST_SELLER, ["s1", "s1", None, None, "s2"]),
        pl.Series(REQUEST_CART, [30.0, 30.0, 50.0, 50.0, None]),
    )
    result = filter_eligible(frame, AS_OF, PolicyConfig())
    rejected = {
        (b, o): (code, text)
        for b, o, code, text in result.rejected.select(
            "buyer_id", "offer_id", "reason_code", "reason_text"
        ).iter_rows()
    }
    assert set(rejected) == {("r1", "own"), ("r1", "other"), ("r3", "own")}
    assert rejected[("r1", "own")] == (
        "NOT_ELIGIBLE_MIN_SPEND",
        "the cart of 30.0 is below the offer's minimum spend of 40.0",
    )
    assert rejected[("r1", "other")] == (
        "OUT_OF_SELLER_SCOPE",
        "the offer belongs to seller s2, the request is for seller s1",
    )
    assert rejected[("r3", "own")][0] == "OUT_OF_SELLER_SCOPE"
    eligible = result.eligible.select("buyer_id", "offer_id", "min_spend_unverified").rows()
    assert eligible == [("r2", "own", False), ("r2", "other", False)]  # r2's cart is known
    assert REQUEST_SELLER not in result.eligible.columns
    assert REQUEST_CART not in result.rejected.columns
    # A row without a request value falls back to the call's context.
    fallback = filter_eligible(frame, AS_OF, PolicyConfig(), context={"seller_id": "s2"})
    assert ("r2", "own") in set(fallback.rejected.select("buyer_id", "offer_id").rows())


def test_frequency_caps_per_buyer_and_per_tool() -> None:
    frame = candidates(
        {"buyer_id": "capped", "offer_id": "a"},
        {"buyer_id": "capped", "offer_id": "b", "tool": "amount_off", "offer_value": 5.0},
        {"buyer_id": "tool_capped", "offer_id": "c"},
        {"buyer_id": "tool_capped", "offer_id": "d", "tool": "amount_off", "offer_value": 5.0},
        {"buyer_id": "fresh", "offer_id": "e"},
    )
    hour = timedelta(hours=1)
    history = pl.DataFrame(
        {
            "buyer_id": ["capped"] * 3 + ["tool_capped"] * 2 + ["fresh"] * 4,
            "offer_id": ["x", "y", "z", "x", "y", "x", "y", None, "z"],
            "tool": ["reminder"] * 3 + ["percent_off"] * 2 + ["percent_off"] * 4,
            # fresh: two exposures are older than the window, one is a control row,
            # one is after as_of; none of them count.
            "ts": [AS_OF - hour] * 5
            + [AS_OF - timedelta(days=8), AS_OF - timedelta(days=9), AS_OF - hour, AS_OF + hour],
        }
    )
    config = PolicyConfig(max_offers_per_buyer=3, max_per_tool=2, cap_window_days=7)
    result = filter_eligible(frame, AS_OF, config, history=history)
    assert sorted(result.eligible["offer_id"]) == ["d", "e"]
    assert reasons(result.rejected) == {
        "a": "FREQUENCY_CAP",
        "b": "FREQUENCY_CAP",
        "c": "FREQUENCY_CAP",
    }
    texts = dict(result.rejected.select("offer_id", "reason_text").iter_rows())
    assert "3 offers in the last 7 days (cap 3)" in texts["a"]
    assert "2 percent_off offers" in texts["c"]
    left = dict(result.eligible.select("offer_id", "offers_left").iter_rows())
    assert left == {"d": 1, "e": 3}


def test_history_without_tool_takes_it_from_the_offers() -> None:
    frame = candidates({"offer_id": "a"}, {"offer_id": "b", "tool": "reminder"})
    history = pl.DataFrame(
        {"buyer_id": ["b1"], "offer_id": ["a"], "ts": [datetime(2024, 6, 1, 10)]}  # naive: UTC
    )
    config = PolicyConfig(max_offers_per_buyer=None, max_per_tool=1)
    result = filter_eligible(frame, AS_OF, config, history=history)
    assert result.eligible["offer_id"].to_list() == ["b"]
    assert reasons(result.rejected) == {"a": "FREQUENCY_CAP"}


def test_first_failed_check_is_the_reason() -> None:
    frame = candidates({"offer_id": "o", "seller_id": "s2", "end_ts": AS_OF})
    result = filter_eligible(frame, AS_OF, PolicyConfig(), context={"seller_id": "s1"})
    assert reasons(result.rejected) == {"o": "OUTSIDE_VALIDITY"}


def test_bad_context_and_history_are_explained() -> None:
    frame = candidates({"offer_id": "o"})
    with pytest.raises(ValueError, match="unknown keys \\['cart'\\]"):
        filter_eligible(frame, AS_OF, PolicyConfig(), context={"cart": 3.0})
    with pytest.raises(ValueError, match="missing columns \\['ts'\\]"):
        filter_eligible(
            frame,
            AS_OF,
            PolicyConfig(),
            history=pl.DataFrame({"buyer_id": ["b1"], "offer_id": ["o"]}),
        )
