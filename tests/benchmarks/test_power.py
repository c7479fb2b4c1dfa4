"""`benchmarks.power`: how far the oracle beats the best blanket, in standard errors."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from benchmarks.power import (
    NO_OFFER,
    PowerFigures,
    format_power_markdown,
    marketplace_actions,
    seed_power,
)
from recsys.data.synthetic import SyntheticConfig, generate


def _actions() -> pl.DataFrame:
    """Four decisions, each able to send nothing (truth 0), a reminder (truth 1) or a
    percent-off coupon. The percent-off blanket earns 5.5 in all against the reminder's 4;
    the oracle takes percent-off on d1 and d3 and the reminder on d2 and d4: 7 in all, so
    it gains 0.5 (d2) and 1 (d4) over the blanket. The doubly robust scores are the truth
    but for the reminder on d2 (1.5) and d4 (0.5)."""
    pct = {"d1": 3.0, "d2": 0.5, "d3": 2.0, "d4": 0.0}
    rem_dr = {"d1": 1.0, "d2": 1.5, "d3": 1.0, "d4": 0.5}
    rows = []
    for d in ("d1", "d2", "d3", "d4"):
        rows += [
            (d, NO_OFFER, NO_OFFER, 0.0, 0.0),
            (d, f"{d}-rem", "reminder", 1.0, rem_dr[d]),
            (d, f"{d}-pct", "percent_off", pct[d], pct[d]),
        ]
    return pl.DataFrame(rows, schema=["exposure_id", "action", "tool", "truth", "dr"], orient="row")


def test_the_oracle_and_the_blanket_are_found_and_their_gap_is_judged_in_standard_errors() -> None:
    power = seed_power(_actions(), seed=3, goal=None)
    assert (power.seed, power.decisions, power.blanket) == (3, 4, "percent_off")
    assert power.oracle_gain == pytest.approx(7 / 4)
    assert power.blanket_share == pytest.approx(5.5 / 7)
    assert power.gain_over_blanket == pytest.approx(1.5 / 4)
    # DR gains per decision 0, 1, 0, 0.5: mean 0.375, sample sd sqrt(0.6875 / 3)
    se = math.sqrt(0.6875 / 3) / 2
    assert power.dr_gain_over_blanket == pytest.approx(0.375)
    assert power.se == pytest.approx(se)
    assert power.t_oracle == pytest.approx(0.375 / se)
    assert math.isnan(power.t_at_goal)  # no share target
    assert power.oracle_clears == pytest.approx(0.5 * math.erfc((1 - 0.375 / se) / math.sqrt(2)))


def test_the_top_gain_policy_at_the_target_switches_the_fewest_decisions_that_reach_it() -> None:
    # Switching d4 alone (gain 1) reaches 5.5/7 + 1/7 = 92.9 % of the oracle: DR gains
    # 0, 0, 0, 0.5 against a true 0.25 per decision; standard error 0.125.
    power = seed_power(_actions(), seed=1, goal=0.9)
    assert power.t_at_goal == pytest.approx(0.25 / 0.125)
    assert power.clears_at_goal == pytest.approx(0.5 * math.erfc(-1 / math.sqrt(2)))
    # A target the blanket already earns leaves only the "above the blanket" question.
    assert math.isnan(seed_power(_actions(), seed=1, goal=0.5).t_at_goal)


def test_chances_on_every_seed_multiply_and_are_said_in_the_report() -> None:
    seeds = [seed_power(_actions(), seed=s, goal=0.9) for s in (1, 2)]
    run = PowerFigures(effects="stage", buyers=10_000, goal=0.9, per_seed=seeds)
    assert run.every_seed_oracle == pytest.approx(seeds[0].oracle_clears ** 2)
    assert run.every_seed_at_goal == pytest.approx(seeds[0].clears_at_goal ** 2)
    text = format_power_markdown([run], "python -m benchmarks.power")
    assert "World `stage`, 10,000 buyers (target: 90% of the oracle and above" in text
    assert f"the oracle {run.every_seed_oracle:.1%}" in text
    blanket_only = PowerFigures(effects="stage", buyers=2_000, goal=None, per_seed=seeds)
    assert math.isnan(blanket_only.every_seed_at_goal)
    assert "no share target" in format_power_markdown([blanket_only], "cmd")


def test_a_synthetic_marketplace_gives_every_action_its_truth_and_its_score(
    tmp_path: Path,
) -> None:
    data = tmp_path / "m"
    generate(SyntheticConfig(buyers=600, seed=2), data)
    actions = marketplace_actions(data)
    per_decision = actions.group_by("exposure_id").agg(
        (pl.col("action") == NO_OFFER).sum().alias("nothing"), pl.len()
    )
    assert (per_decision["nothing"] == 1).all() and (per_decision["len"] > 1).all()
    assert actions["truth"].null_count() == 0 and actions["dr"].is_finite().all()
    power = seed_power(actions, seed=2, goal=None)
    assert power.oracle_gain > 0 and power.gain_over_blanket >= 0 and power.se > 0


def test_a_world_where_no_offer_pays_gives_no_t_rather_than_a_division_by_zero() -> None:
    # Every offer is worth less than nothing: the oracle sends nothing and gains nothing.
    losing = _actions().with_columns(
        pl.when(pl.col("action") == NO_OFFER)
        .then(pl.col("truth"))
        .otherwise(pl.lit(-1.0))
        .alias("truth")
    )
    power = seed_power(losing, seed=1, goal=0.6)
    assert power.oracle_gain == 0
    assert math.isnan(power.blanket_share) and math.isnan(power.t_at_goal)
    assert power.clears_at_goal == 0
