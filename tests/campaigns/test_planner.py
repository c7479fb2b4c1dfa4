"""The campaign planner on a hand-built seller whose best plans are worked out by hand.

Seller s1 has a 20 %-off coupon (`pct`, costs 20 on an order of 100) and a free
reminder (`rem`); margin 0.5, so an induced order is worth 50. Expected profit of a pair
is 50 * uplift - 20 * p_redeem for `pct` and 50 * uplift for `rem`:

| buyer | audience | pct: uplift, p_redeem -> value | rem: uplift -> value |
|---|---|---|---|
| L1 | lapsing | 0.2, 0.3 -> +4.0 (spend 6) | 0.02 -> +1.0 |
| L2 | lapsing | 0.1, 0.2 -> +1.0 (spend 4) | 0.02 -> +1.0 |
| L3 | lapsing | 0.01, 0.2 -> -3.5 | 0.01 -> +0.5 |
| Y1 | loyal | 0.0, 0.5 -> -10 | 0.004 -> +0.2 |
| Y2 | loyal | 0.0, 0.6 -> -12 | 0.0 -> 0 |

Without a budget the lapsing audience is worth 5 with `pct` (L1, L2) against 2.5 with
`rem`, and the loyal audience only runs `rem` (Y1).
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from recsys.campaigns import PlannerConfig, plan_campaigns, stage_audiences, taste_audiences
from recsys.campaigns.planner import UnknownCampaignError
from recsys.policy import PolicyConfig

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
SELLER = "s1"
ROWS = [
    # buyer, stage, offer, tool, uplift, p_redeem
    ("L1", "lapsing", "pct", "percent_off", 0.2, 0.3),
    ("L1", "lapsing", "rem", "reminder", 0.02, 0.05),
    ("L2", "lapsing", "pct", "percent_off", 0.1, 0.2),
    ("L2", "lapsing", "rem", "reminder", 0.02, 0.05),
    ("L3", "lapsing", "pct", "percent_off", 0.01, 0.2),
    ("L3", "lapsing", "rem", "reminder", 0.01, 0.05),
    ("Y1", "loyal", "pct", "percent_off", 0.0, 0.5),
    ("Y1", "loyal", "rem", "reminder", 0.004, 0.05),
    ("Y2", "loyal", "pct", "percent_off", 0.0, 0.6),
    ("Y2", "loyal", "rem", "reminder", 0.0, 0.05),
    ("L1", "lapsing", "other", "percent_off", 0.5, 0.5),  # another seller's offer
]


def candidates() -> pl.DataFrame:
    frame = pl.DataFrame(
        ROWS,
        schema=["buyer_id", "journey_stage", "offer_id", "tool", "uplift", "p_redeem"],
        orient="row",
    )
    return frame.with_columns(
        pl.when(pl.col("offer_id") == "other")
        .then(pl.lit("s2"))
        .otherwise(pl.lit(SELLER))
        .alias("seller_id"),
        pl.lit(0.3).alias("p_purchase"),
        pl.lit(100.0).alias("order_value"),
        pl.lit(0.5).alias("margin"),
        pl.when(pl.col("tool") == "percent_off").then(0.2).otherwise(None).alias("offer_value"),
        pl.lit(None, pl.Float64).alias("offer_cost"),
        pl.lit(NOW - timedelta(days=1)).alias("start_ts"),
        pl.lit(NOW + timedelta(days=6)).alias("end_ts"),
    )


def audiences() -> pl.DataFrame:
    return stage_audiences(candidates().select("buyer_id", "journey_stage"))


def plan(budget: float | None = None, **config: object) -> object:
    return plan_campaigns(
        candidates(),
        audiences(),
        SELLER,
        NOW,
        budget=budget,
        config=PlannerConfig.model_validate(config),
    )


def picks(p: object) -> set[tuple[str, str]]:
    return set(p.targets.select("buyer_id", "offer_id").iter_rows())  # type: ignore[attr-defined]


def test_unlimited_plan_runs_each_audiences_best_offer_for_its_profitable_buyers() -> None:
    p = plan()
    assert picks(p) == {("L1", "pct"), ("L2", "pct"), ("Y1", "rem")}
    by_id = {row["campaign_id"]: row for row in p.campaigns.iter_rows(named=True)}
    assert list(by_id) == ["lapsing.pct", "loyal.rem"]  # best profit first
    lapsing = by_id["lapsing.pct"]
    assert lapsing["audience_size"] == 3 and lapsing["buyers"] == 2
    assert lapsing["incremental_orders"] == pytest.approx(0.3)
    assert lapsing["incremental_revenue"] == pytest.approx(30.0)
    assert lapsing["redemptions"] == pytest.approx(0.5)
    assert lapsing["discount_cost"] == pytest.approx(10.0)
    assert lapsing["spend"] == pytest.approx(10.0)
    assert lapsing["profit"] == pytest.approx(5.0)
    assert lapsing["roi"] == pytest.approx(0.5)
    # Variance 2500 u(1-u) + 400 p(1-p): 484 for L1, 289 for L2; a 90 % normal range.
    half = 1.6448536 * math.sqrt(484 + 289)
    assert lapsing["profit_low"] == pytest.approx(5.0 - half, rel=1e-6)
    assert lapsing["profit_high"] == pytest.approx(5.0 + half, rel=1e-6)
    assert lapsing["roi_low"] == pytest.approx((5.0 - half) / 10.0, rel=1e-6)
    assert by_id["loyal.rem"]["roi"] is None  # a reminder costs nothing: no ROI
    assert p.totals["profit"] == pytest.approx(5.2)
    assert p.shadow_price == 0.0 and p.buyers == 5


def test_other_sellers_offers_are_never_planned() -> None:
    assert "other" not in set(plan().targets["offer_id"])
    assert "other" not in set(plan().alternatives["offer_id"].drop_nulls())


def test_a_tight_budget_switches_offers_rather_than_truncating_the_list() -> None:
    # Budget 0: truncating the unlimited plan keeps only loyal.rem (0.2); the best plan
    # gives the lapsing audience the free reminder instead (2.5 + 0.2).
    p = plan(budget=0.0)
    assert picks(p) == {("L1", "rem"), ("L2", "rem"), ("L3", "rem"), ("Y1", "rem")}
    assert p.totals["profit"] == pytest.approx(2.7)
    assert p.totals["spend"] == 0.0
    # Budget 7 pays for L1's coupon (spend 6) but not L2's too: 4 + 0.2 beats 2.7.
    p = plan(budget=7.0)
    assert picks(p) == {("L1", "pct"), ("Y1", "rem")}
    assert p.totals["profit"] == pytest.approx(4.2)
    assert p.totals["spend"] <= 7.0
    assert p.shadow_price > 0  # the budget binds


def test_each_buyers_best_offer_when_audiences_may_mix_offers() -> None:
    p = plan(budget=7.0, offers_per_audience="best_per_buyer")
    assert picks(p) == {("L1", "pct"), ("L2", "rem"), ("L3", "rem"), ("Y1", "rem")}
    assert p.totals["profit"] == pytest.approx(5.7)


def _best_by_enumeration(budget: float) -> float:
    """The best one-offer-per-audience plan within `budget`, by trying every plan."""
    rows = candidates().filter(pl.col("seller_id") == SELLER)
    value = {
        (b, o): 50 * u - (20 * p if o == "pct" else 0.0)
        for b, o, u, p in rows.select("buyer_id", "offer_id", "uplift", "p_redeem").iter_rows()
    }
    spend = {
        (b, o): (20 * p if o == "pct" else 0.0)
        for (b, o), p in zip(value, rows["p_redeem"], strict=True)
    }
    members = {"lapsing": ["L1", "L2", "L3"], "loyal": ["Y1", "Y2"]}
    best = 0.0
    for lapsing, loyal in itertools.product([None, "pct", "rem"], repeat=2):
        options = [
            (b, o)
            for o, group in ((lapsing, "lapsing"), (loyal, "loyal"))
            if o
            for b in members[group]
        ]
        for chosen in itertools.product([False, True], repeat=len(options)):
            picked = [x for x, take in zip(options, chosen, strict=True) if take]
            if sum(spend[x] for x in picked) <= budget + 1e-9:
                best = max(best, sum(value[x] for x in picked))
    return best


@pytest.mark.parametrize("budget", [0.0, 2.0, 4.0, 5.0, 7.0, 9.99, 10.0, 50.0])
def test_the_plan_is_the_best_within_budget_and_never_over_it(budget: float) -> None:
    p = plan(budget=budget)
    assert p.totals["spend"] <= budget + 1e-9
    assert p.totals["profit"] == pytest.approx(_best_by_enumeration(budget), abs=1e-9)


def test_worst_case_budgets_count_every_offer_as_used() -> None:
    p = plan_campaigns(
        candidates(),
        audiences(),
        SELLER,
        NOW,
        budget=25.0,
        policy=PolicyConfig(budget_basis="worst_case"),
    )
    assert p.budget_basis == "worst_case"
    # Each coupon may cost its full 20 if used: one fits in 25, two do not.
    assert p.targets.filter(pl.col("offer_id") == "pct").height == 1
    assert p.totals["spend"] <= 25.0


def test_the_plan_is_compared_with_no_campaign_and_coupon_to_everyone() -> None:
    p = plan(budget=7.0)
    rows = {row["name"]: row for row in p.alternatives.iter_rows(named=True)}
    nothing = rows["no campaign"]
    assert nothing["profit"] == 0.0 and nothing["buyers"] == 0 and nothing["within_budget"]
    to_all = rows["coupon to every customer: pct (percent_off)"]
    # Every buyer gets the coupon, losers included: 4 + 1 - 3.5 - 10 - 12.
    assert to_all["buyers"] == 5
    assert to_all["profit"] == pytest.approx(-20.5)
    assert to_all["spend"] == pytest.approx(20 * (0.3 + 0.2 + 0.2 + 0.5 + 0.6))
    assert to_all["within_budget"] is False
    assert rows["the engine's plan"]["profit"] > max(
        r["profit"] for r in rows.values() if r["kind"] == "coupon_to_all"
    )


def test_gain_curve_orders_buyers_by_expected_profit() -> None:
    curve = plan().gain_curve
    assert curve["share_targeted"][0] == 0.0 and curve["share_targeted"][-1] == 1.0
    assert curve["share_redemptions"][-1] == pytest.approx(1.0)
    assert curve["share_redemptions"].diff().drop_nulls().min() >= 0  # never falls


def test_target_list_is_the_contracts_pairs_form() -> None:
    p = plan()
    targets = p.target_list("lapsing.pct")
    assert targets.columns[:2] == ["buyer_id", "offer_id"]
    assert targets["buyer_id"].to_list() == ["L1", "L2"]  # best expected profit first
    with pytest.raises(UnknownCampaignError, match=r"lapsing\.pct"):
        p.target_list("nope")


def test_offers_nobody_gets_are_explained() -> None:
    p = plan(budget=0.0)
    assert len(p.not_recommended) == 1
    assert p.not_recommended[0].startswith("pct: ")
    assert "budget" in p.not_recommended[0]


@pytest.mark.parametrize("budget", [-1.0, float("nan"), float("inf")])
def test_bad_budgets_are_refused_with_the_value(budget: float) -> None:
    with pytest.raises(ValueError, match="budget must be a finite amount"):
        plan(budget=budget)


def test_a_buyer_without_audience_is_named() -> None:
    partial = audiences().filter(pl.col("buyer_id") != "L3")
    with pytest.raises(ValueError, match="'L3'"):
        plan_campaigns(candidates(), partial, SELLER, NOW)


def test_a_seller_with_no_offers_gets_an_empty_plan() -> None:
    p = plan_campaigns(candidates(), audiences(), "s9", NOW)
    assert p.campaigns.height == 0 and p.targets.height == 0
    assert p.totals["profit"] == 0.0


def test_stage_audiences_name_buyers_without_a_stage() -> None:
    frame = pl.DataFrame({"buyer_id": ["a", "b"], "journey_stage": ["cart_abandoner", None]})
    got = dict(stage_audiences(frame).iter_rows())
    assert got == {"a": "cart abandoner", "b": "no journey stage yet"}


def test_taste_audiences_pool_small_categories() -> None:
    shares = pl.DataFrame(
        {
            "buyer_id": ["a", "a", "b", "c", "d"],
            "category": ["shoes", "hats", "shoes", "hats", "bags"],
            "share": [0.7, 0.3, 1.0, 1.0, 1.0],
        }
    )
    buyers = pl.Series(["a", "b", "c", "d", "e"])
    got = dict(taste_audiences(buyers, shares, min_size=2).iter_rows())
    assert got == {
        "a": "shoes",
        "b": "shoes",
        "c": "other categories",  # hats: one buyer
        "d": "other categories",
        "e": "no purchases with a category",
    }
