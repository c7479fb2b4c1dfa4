"""Per-seller budgets with a shadow price: feasibility, the k best, slack, caps."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import pytest

from recsys.policy import PolicyConfig, allocate


def valued(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A valued frame as `allocate` needs it (defaults: seller s1, percent_off)."""
    base = {"seller_id": "s1", "tool": "percent_off", "p_redeem": 1.0}
    data = [{**base, **row} for row in rows]
    schema = {
        "buyer_id": pl.String,
        "offer_id": pl.String,
        "seller_id": pl.String,
        "tool": pl.String,
        "p_redeem": pl.Float64,
        "expected_value": pl.Float64,
        "redemption_cost": pl.Float64,
    }
    return pl.DataFrame(data, schema=schema)


def test_without_budget_each_buyer_gets_its_best_positive_offer() -> None:
    frame = valued(
        [
            {"buyer_id": "b1", "offer_id": "a", "expected_value": 1.0, "redemption_cost": 5.0},
            {"buyer_id": "b1", "offer_id": "b", "expected_value": 2.0, "redemption_cost": 9.0},
            {"buyer_id": "b2", "offer_id": "c", "expected_value": -1.0, "redemption_cost": 1.0},
            {"buyer_id": "b3", "offer_id": "d", "expected_value": 0.0, "redemption_cost": 0.0},
        ]
    )
    result = allocate(frame, PolicyConfig())
    assert result.picks["offer_id"].to_list() == ["b"]
    assert result.picks["shadow_price"].to_list() == [0.0]


def test_budget_for_k_offers_picks_the_k_best() -> None:
    # 8 buyers, one offer each, every offer costs 10 (worst case); a budget of 35 pays for 3.
    values = [0.5, 3.0, 1.0, 2.5, 0.8, 4.0, 2.0, 0.1]
    frame = valued(
        [
            {"buyer_id": f"b{i}", "offer_id": f"o{i}", "expected_value": v, "redemption_cost": 10.0}
            for i, v in enumerate(values)
        ]
    )
    config = PolicyConfig(budgets={"s1": 35.0}, budget_basis="worst_case")
    result = allocate(frame, config)
    assert sorted(result.picks["offer_id"]) == ["o1", "o3", "o5"]  # values 3.0, 2.5, 4.0
    assert result.picks["spend"].sum() == 30.0
    price = result.sellers.filter(pl.col("budget_key") == "s1")["shadow_price"][0]
    # Taking the 4th best (2.0 per 10 spent) must not pay at this price, the 3rd must.
    assert 2.0 / 10 <= price <= 2.5 / 10


def test_budget_with_several_offers_per_buyer_keeps_one_per_buyer() -> None:
    rows = []
    for i in range(5):
        rows.append(
            {
                "buyer_id": f"b{i}",
                "offer_id": f"big{i}",
                "expected_value": 3.0 + i,
                "redemption_cost": 10.0,
            }
        )
        rows.append(
            {
                "buyer_id": f"b{i}",
                "offer_id": f"small{i}",
                "expected_value": 1.0,
                "redemption_cost": 2.0,
            }
        )
    config = PolicyConfig(budgets={"s1": 24.0}, budget_basis="worst_case")
    picks = allocate(valued(rows), config).picks
    assert picks["buyer_id"].n_unique() == picks.height
    assert picks["spend"].sum() <= 24.0
    # The budget is used well: 2 big offers (7.0, 6.0) and small ones in what is left.
    assert picks["expected_value"].sum() >= 7.0 + 6.0 + 1.0 + 1.0


def test_shadow_price_is_zero_when_the_budget_does_not_bind() -> None:
    frame = valued(
        [
            {
                "buyer_id": f"b{i}",
                "offer_id": f"o{i}",
                "expected_value": 1.0,
                "redemption_cost": 3.0,
            }
            for i in range(4)
        ]
    )
    loose = allocate(frame, PolicyConfig(budgets={"s1": 100.0}))
    assert loose.picks.height == 4
    assert loose.sellers["shadow_price"].to_list() == [0.0]
    tight = allocate(frame, PolicyConfig(budgets={"s1": 7.0}))
    assert tight.picks.height == 2
    assert tight.sellers["shadow_price"][0] > 0


def test_one_sellers_budget_does_not_touch_another_seller() -> None:
    rows = [
        {
            "buyer_id": "b1",
            "offer_id": "x",
            "seller_id": "s1",
            "expected_value": 1.0,
            "redemption_cost": 5.0,
        },
        {
            "buyer_id": "b1",
            "offer_id": "y",
            "seller_id": "s2",
            "expected_value": 1.0,
            "redemption_cost": 5.0,
        },
    ]
    config = PolicyConfig(budgets={"s1": 0.0}, one_offer_per="seller")
    assert allocate(valued(rows), config).picks["offer_id"].to_list() == ["y"]


def test_per_seller_units_respect_the_buyers_cap_allowance() -> None:
    rows = [
        {
            "buyer_id": "b1",
            "offer_id": f"o{s}",
            "seller_id": f"s{s}",
            "expected_value": float(s),
            "redemption_cost": 1.0,
            "offers_left": 2,
            "tool_left": None,
        }
        for s in range(1, 5)
    ]
    frame = valued(rows).with_columns(
        pl.Series("offers_left", [2] * 4, dtype=pl.Int64),
        pl.Series("tool_left", [None] * 4, dtype=pl.Int64),
    )
    picks = allocate(frame, PolicyConfig(one_offer_per="seller")).picks
    assert sorted(picks["offer_id"]) == ["o3", "o4"]


@pytest.mark.parametrize("mode", ["buyer", "seller"])
def test_expected_spend_never_exceeds_budget_on_random_instances(mode: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        n = int(rng.integers(1, 80))
        sellers = [f"s{j}" for j in range(int(rng.integers(1, 4)))]
        frame = pl.DataFrame(
            {
                "buyer_id": [f"b{int(b)}" for b in rng.integers(0, max(1, n // 2), n)],
                "offer_id": [f"o{i}" for i in range(n)],
                "seller_id": [sellers[int(j)] for j in rng.integers(0, len(sellers), n)],
                "tool": ["percent_off"] * n,
                "p_redeem": rng.uniform(0, 1, n),
                "expected_value": rng.normal(0.5, 1.0, n),
                "redemption_cost": rng.choice([0.0, 1.0, 2.5, 7.0], n),
            }
        )
        budgets = {s: float(rng.choice([0.0, 0.5, 2.0, 6.0, 50.0])) for s in sellers}
        config = PolicyConfig(budgets=budgets, send_cost=0.05, one_offer_per=mode)
        result = allocate(frame, config)
        picks = result.picks
        keys = ["buyer_id"] if mode == "buyer" else ["buyer_id", "seller_id"]
        assert picks.select(keys).is_unique().all()
        assert (picks["expected_value"] > 0).all()
        for seller, budget in budgets.items():
            spent = math.fsum(picks.filter(pl.col("seller_id") == seller)["spend"].to_list())
            assert spent <= budget
            # Used well: no unit left empty has a positive offer of this seller that fits.
            room = budget - spent
            served = picks.select(keys)
            left = (
                frame.with_columns(
                    (pl.col("p_redeem") * pl.col("redemption_cost") + 0.05).alias("spend")
                )
                .join(served, on=keys, how="anti", nulls_equal=True)
                .filter((pl.col("seller_id") == seller) & (pl.col("expected_value") > 0))
            )
            assert (left["spend"] > room).all()
