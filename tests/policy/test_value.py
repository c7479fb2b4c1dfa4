"""Known answers for redemption cost, expected incremental profit and the schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl
import pytest

from recsys.policy import (
    CandidatesError,
    PolicyConfig,
    expected_incremental_profit,
    redemption_cost,
    validate_candidates,
    with_spend,
)

BASE: dict[str, Any] = {
    "buyer_id": "b1",
    "seller_id": "s1",
    "tool": "percent_off",
    "p_redeem": 0.3,
    "uplift": 0.05,
    "p_purchase": 0.2,
    "order_value": 50.0,
    "margin": 0.4,
    "offer_value": 0.1,
    "offer_cost": None,
}


def candidates(*rows: dict[str, Any]) -> pl.DataFrame:
    """Validated candidates: BASE overridden per row, offer ids o0, o1, ..."""
    data = [{**BASE, "offer_id": f"o{i}", **row} for i, row in enumerate(rows)]
    return validate_candidates(pl.DataFrame(data, infer_schema_length=None))


def test_redemption_cost_per_tool() -> None:
    frame = candidates(
        {"tool": "percent_off", "offer_value": 0.1},  # 0.1 * 50
        {"tool": "points", "offer_value": 0.02},  # 0.02 * 50
        {"tool": "amount_off", "offer_value": 30.0, "order_value": 20.0},  # capped at 20
        {"tool": "amount_off", "offer_value": 5.0},
        {"tool": "free_shipping", "offer_value": None},  # configured default
        {"tool": "reminder", "offer_value": None},
        {"tool": "bundle", "offer_value": 3.0},  # unknown tool without cost: 0
        {"tool": "percent_off", "offer_value": 0.5, "offer_cost": 7.0},  # explicit cost wins
    )
    costs = redemption_cost(
        frame["tool"].to_numpy(),
        frame["offer_value"].fill_null(float("nan")).to_numpy(),
        frame["offer_cost"].fill_null(float("nan")).to_numpy(),
        frame["order_value"].to_numpy(),
        4.5,
    )
    assert costs.tolist() == pytest.approx([5.0, 1.0, 20.0, 5.0, 4.5, 0.0, 0.0, 7.0])


def test_expected_value_formula_is_exact() -> None:
    config = PolicyConfig(send_cost=0.1)
    out = expected_incremental_profit(
        candidates({"uplift": 0.05}, {"uplift": 0.2}, {"uplift": -0.01, "p_redeem": 0.1}), config
    )
    # margin * uplift * V - p_redeem * cost - send_cost, cost = 0.1 * 50 = 5
    expected = [
        0.4 * 0.05 * 50 - 0.3 * 5 - 0.1,  # -0.6
        0.4 * 0.2 * 50 - 0.3 * 5 - 0.1,  # 2.4
        0.4 * -0.01 * 50 - 0.1 * 5 - 0.1,  # -0.8
    ]
    assert out["expected_value"].to_list() == pytest.approx(expected, abs=1e-12)
    assert out["value_basis"].to_list() == ["uplift"] * 3
    assert out["redemption_cost"].to_list() == pytest.approx([5.0, 5.0, 5.0])


def test_null_uplift_falls_back_to_response() -> None:
    config = PolicyConfig(send_cost=0.1, assumed_incremental_share=0.5)
    out = expected_incremental_profit(candidates({"uplift": None}, {"uplift": 0.1}), config)
    # response-only: margin * share * p_redeem * V - p_redeem * cost - send_cost
    assert out["expected_value"][0] == pytest.approx(0.4 * 0.5 * 0.3 * 50 - 0.3 * 5 - 0.1)
    assert out["incremental_p"][0] == pytest.approx(0.5 * 0.3)
    assert out["value_basis"].to_list() == ["response", "uplift"]


def test_null_margin_uses_the_default() -> None:
    config = PolicyConfig(margin_default=0.2)
    out = expected_incremental_profit(candidates({"margin": None, "tool": "reminder"}), config)
    assert out["expected_value"][0] == pytest.approx(0.2 * 0.05 * 50)


def test_a_buyer_who_would_buy_anyway_is_pure_cost() -> None:
    out = expected_incremental_profit(
        candidates({"uplift": 0.0, "p_redeem": 0.9, "p_purchase": 0.95}), PolicyConfig()
    )
    assert out["expected_value"][0] == pytest.approx(-0.9 * 5.0)


def test_spend_bases() -> None:
    frame = expected_incremental_profit(candidates({}), PolicyConfig())
    expected = with_spend(frame, "expected", 0.2)["spend"][0]
    worst = with_spend(frame, "worst_case", 0.2)["spend"][0]
    assert expected == pytest.approx(0.3 * 5 + 0.2)
    assert worst == pytest.approx(5 + 0.2)
    with pytest.raises(ValueError, match="budget_basis"):
        with_spend(frame, "average", 0.0)


def test_schema_names_every_missing_column() -> None:
    frame = pl.DataFrame({"buyer_id": ["b1"], "offer_id": ["o1"], "tool": ["reminder"]})
    with pytest.raises(CandidatesError, match=r"\['p_redeem', 'p_purchase', 'order_value'\]"):
        validate_candidates(frame)


def test_schema_fills_optional_columns_and_reads_naive_times_as_utc() -> None:
    frame = pl.DataFrame(
        {
            "buyer_id": [1],
            "offer_id": ["o1"],
            "tool": ["reminder"],
            "p_redeem": [0.1],
            "p_purchase": [0.2],
            "order_value": [10],
            "end_ts": [datetime(2024, 1, 1)],
        }
    )
    out = validate_candidates(frame)
    assert out.schema["buyer_id"] == pl.String
    assert out.schema["order_value"] == pl.Float64
    assert out.schema["end_ts"] == pl.Datetime("us", "UTC")
    assert out["uplift"].is_null().all() and out["seller_id"].is_null().all()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"p_redeem": 1.5}, "p_redeem"),
        ({"order_value": -1.0}, "order_value"),
        ({"offer_id": "o0"}, "repeat a \\(buyer_id, offer_id\\) pair"),
    ],
)
def test_schema_rejects_bad_values(override: dict[str, Any], message: str) -> None:
    rows = [{**BASE, "offer_id": "o0"}, {**BASE, "offer_id": "o1", **override}]
    with pytest.raises(CandidatesError, match=message):
        validate_candidates(pl.DataFrame(rows))
