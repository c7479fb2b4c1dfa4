"""What the data can show: could *any* policy be proven better than the best blanket?

Issue 16 asks the learned policy to beat the best single-tool blanket on every seed (and to
earn a share of the oracle), and asks the engine to ship personalization only where its
cross-validated doubly robust gain over the simplest policy exceeds one paired standard
error (`recsys.learning.selection`). This part measures what that rule lets through
*whatever the learner*, on the data the engine learns from:

- the logged randomized decisions and every action each could have taken, with the
  engine's own cross-fitted doubly robust scores of realized profit
  (`PromoRanker.scored_decisions`);
- the simulator's expected profit of every such action (`truth/exposure_options`);
- the *oracle* (each decision's best action by the truth, or nothing) and the best
  single-tool blanket by the truth (a tool's offers averaged where a decision has two).

`t` is a policy's true gain over the blanket per decision divided by the standard error of
its doubly robust estimate, paired decision by decision as the selection computes it. A
policy *given in advance* that is t standard errors better is estimated above one standard
error with chance about Phi(t - 1); on every one of k seeds, the product. Two policies:

- the oracle itself: if even it is rarely shown better, no policy is;
- at a world's target share s of the oracle, the *top-gain* policy: the oracle's action on
  the decisions where it gains most over the blanket, the blanket's elsewhere, up to share
  s. It differs from the blanket on as few decisions as any policy earning s can, so its
  noise is near the least; but it knows *which* decisions gain most, which a learner must
  find from features. Its chance is what noise alone allows at the target.

A learned policy is estimated from the same data and does worse than one given in advance:
these are ceilings on what the rule lets through, not predictions.

    python -m benchmarks.power --buyers 10000 --seeds 1 2 3 4 5 --effects stage
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.quality import world_arguments
from benchmarks.targets import QUALITY_SHARE_GOALS
from recsys.data.loader import load_dataset
from recsys.data.seller_terms import known_seller_terms
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.models.ranker import PromoRanker, RankerConfig

TRUTH_OPTIONS = Path("truth") / "exposure_options.parquet"
NO_OFFER = "__nothing__"
"""The action key of "nothing" (an offer id is never this)."""


@dataclass(frozen=True)
class SeedPower:
    """One marketplace: how far the oracle beats the best blanket, and how provably."""

    seed: int
    decisions: int
    blanket: str
    """The best single tool for every decision, by the truth."""
    blanket_share: float
    """The blanket's true gain over nothing as a share of the oracle's."""
    oracle_gain: float
    """The oracle's true gain over nothing, per decision."""
    gain_over_blanket: float
    """The oracle's true gain over the blanket, per decision."""
    dr_gain_over_blanket: float
    """Its doubly robust estimate (the engine's scores of realized profit)."""
    se: float
    """The paired standard error of that estimate."""
    t_oracle: float
    t_at_goal: float
    """`t` of the top-gain policy at the world's target share (nan: no share target, or
    the blanket earns it)."""

    @property
    def oracle_clears(self) -> float:
        """Chance that the oracle, given in advance, clears one standard error."""
        return _clears(self.t_oracle)

    @property
    def clears_at_goal(self) -> float:
        """Chance that the top-gain policy at the target share clears one standard error."""
        return _clears(self.t_at_goal)


@dataclass(frozen=True)
class PowerFigures:
    """Every seed of one (world, size), and the chances over all of them."""

    effects: str
    buyers: int
    goal: float | None
    """The world's target share of the oracle (None: judged against the blanket only)."""
    per_seed: list[SeedPower]

    @property
    def every_seed_oracle(self) -> float:
        """Chance that the oracle clears one standard error on every seed."""
        return math.prod(s.oracle_clears for s in self.per_seed)

    @property
    def every_seed_at_goal(self) -> float:
        """The same for the top-gain policy at the target share (nan: no share target)."""
        if self.goal is None:
            return float("nan")
        return math.prod(s.clears_at_goal for s in self.per_seed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "effects": self.effects,
            "buyers": self.buyers,
            "goal": self.goal,
            "every_seed_oracle": self.every_seed_oracle,
            "every_seed_at_goal": self.every_seed_at_goal,
            "per_seed": [asdict(s) for s in self.per_seed],
        }


def _clears(t: float) -> float:
    """P(N(t, 1) > 1): a policy t standard errors better is estimated above one SE."""
    return 0.0 if math.isnan(t) else 0.5 * math.erfc((1.0 - t) / math.sqrt(2.0))


def seed_power(actions: pl.DataFrame, seed: int, goal: float | None) -> SeedPower:
    """The figures of one marketplace from its actions: one row per (decision, action),
    `exposure_id`, `action` (`NO_OFFER` for nothing, once per decision), `tool`, `truth`
    (expected profit had the decision taken it) and `dr` (its doubly robust score).

    Cost: a sort and a few group-bys of the rows.
    """
    nothing = actions.filter(pl.col("action") == NO_OFFER).select(
        "exposure_id", pl.col("truth").alias("t0"), pl.col("dr").alias("d0")
    )
    n = nothing.height
    oracle = (
        actions.sort("exposure_id", "truth", descending=[False, True])
        .group_by("exposure_id", maintain_order=True)
        .first()
    )
    oracle = _per_decision(nothing, oracle)
    offers = actions.filter(pl.col("action") != NO_OFFER)
    blankets = {
        str(tool): _per_decision(
            nothing, group.group_by("exposure_id").agg(pl.col("truth").mean(), pl.col("dr").mean())
        )
        for (tool,), group in offers.group_by("tool")
    }
    tool = max(sorted(blankets), key=lambda k: float(blankets[k]["truth"].sum()))
    blanket = blankets[tool]
    base = nothing.sort("exposure_id")["t0"].to_numpy()
    oracle_gain = float((oracle["truth"].to_numpy() - base).mean())
    blanket_share = _ratio(float((blanket["truth"].to_numpy() - base).mean()), oracle_gain)
    gain = oracle["truth"].to_numpy() - blanket["truth"].to_numpy()
    dr_gain = oracle["dr"].to_numpy() - blanket["dr"].to_numpy()
    se = float(dr_gain.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    at_goal = float("nan")
    if goal is not None and oracle_gain > 0 and goal > blanket_share:
        shares, t = _top_gain_t(gain, dr_gain, blanket_share, oracle_gain)
        at_goal = float(t[min(int(np.searchsorted(shares, goal)), len(t) - 1)])
    return SeedPower(
        seed=seed,
        decisions=n,
        blanket=tool,
        blanket_share=blanket_share,
        oracle_gain=oracle_gain,
        gain_over_blanket=float(gain.mean()),
        dr_gain_over_blanket=float(dr_gain.mean()),
        se=se,
        t_oracle=_ratio(float(gain.mean()), se),
        t_at_goal=at_goal,
    )


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, nan where the denominator is 0 or nan (an oracle that
    gains nothing, or a policy no different from the blanket on any decision)."""
    return numerator / denominator if denominator > 0 else float("nan")


def _per_decision(nothing: pl.DataFrame, chosen: pl.DataFrame) -> pl.DataFrame:
    """`truth` and `dr` of a policy for every decision, by exposure id: the chosen
    action's, or nothing's where the policy has no row for the decision."""
    return (
        nothing.join(chosen.select("exposure_id", "truth", "dr"), on="exposure_id", how="left")
        .sort("exposure_id")
        .select(pl.col("truth").fill_null(pl.col("t0")), pl.col("dr").fill_null(pl.col("d0")))
    )


def _top_gain_t(
    gain: np.ndarray, dr_gain: np.ndarray, blanket_share: float, oracle_gain: float
) -> tuple[np.ndarray, np.ndarray]:
    """For m = 1..n: the top-gain policy that takes the oracle's action on the m decisions
    where it gains most over the blanket; its share of the oracle (ascending in m) and the
    t of its paired doubly robust gain (true gain / standard error). O(n log n)."""
    n = len(gain)
    order = np.argsort(-gain, kind="stable")
    true_gain = np.cumsum(gain[order]) / n
    sum1 = np.cumsum(dr_gain[order])
    sum2 = np.cumsum(dr_gain[order] ** 2)
    var = np.maximum(sum2 / n - (sum1 / n) ** 2, 0.0) * n / max(n - 1, 1)
    se = np.sqrt(var / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, true_gain / se, np.nan)
    shares = blanket_share + true_gain / oracle_gain
    return shares, t


def marketplace_actions(data: Path) -> pl.DataFrame:
    """The actions of a synthetic marketplace's randomized decisions with the truth's
    expected profit and the engine's doubly robust score (the frame `seed_power` reads).

    The engine is fitted as the quality part fits it (the sellers' true margins and send
    cost), without policy learning: only its features and outcome models are needed.
    """
    dataset = load_dataset(data)
    config = RankerConfig().with_seller_terms(known_seller_terms(data))
    fitted = PromoRanker(RankerConfig.from_dict(_without_learning(config))).fit(dataset)
    scored = fitted.scored_decisions(dataset, learning=config.learning)
    if scored is None:
        raise RuntimeError(f"{data}: no randomized decisions to score")
    key = pl.col("offer_id").fill_null(NO_OFFER).alias("action")
    engine = scored.options.select(
        "exposure_id",
        key,
        pl.col("kind").str.split(":").list.first().alias("tool"),
        pl.Series("dr", scored.scores.dr_reward),
    )
    truth = pl.read_parquet(data / TRUTH_OPTIONS)
    expected = pl.concat(
        [
            truth.select("exposure_id", key, pl.col("profit_treated").alias("truth")),
            truth.group_by("exposure_id")
            .agg(pl.col("profit_control").first().alias("truth"))
            .with_columns(pl.lit(NO_OFFER).alias("action"))
            .select("exposure_id", "action", "truth"),
        ]
    )
    out = engine.join(expected, on=["exposure_id", "action"], how="inner")
    if out.height != engine.height:
        raise RuntimeError(
            f"{data}: {engine.height - out.height:,} of {engine.height:,} engine actions have "
            f"no expected profit in {TRUTH_OPTIONS}; rewrite the marketplace with `recsys data "
            "synth`"
        )
    return out


def _without_learning(config: RankerConfig) -> dict[str, Any]:
    raw = config.to_dict()
    raw["learning"] = {**raw.get("learning", {}), "enabled": False}
    return raw


def measure_power(buyers: int, seeds: Sequence[int], work: Path, effects: str) -> PowerFigures:
    """Synthesize a marketplace per seed under `work` and measure each (see module)."""
    goal = QUALITY_SHARE_GOALS.get(effects) if buyers >= 10_000 else None
    per_seed = []
    for seed in seeds:
        data = work / f"power_{effects}_buyers{buyers}_seed{seed}"
        generate(
            SyntheticConfig.from_dict({"buyers": buyers, "seed": seed, "effects": effects}),
            data,
            overwrite=True,
        )
        per_seed.append(seed_power(marketplace_actions(data), seed, goal))
    return PowerFigures(effects=effects, buyers=buyers, goal=goal, per_seed=per_seed)


def format_power_markdown(runs: Sequence[PowerFigures], command: str) -> str:
    """The BENCHMARKS.md section: one table per (world, size), then the chances."""
    lines = [
        "## What the data can show: any policy against the best blanket",
        "",
        "On the logged randomized decisions the engine learns from: the oracle (each "
        "decision's best action by the simulator's expected profit) against the best "
        "single-tool blanket by the truth, valued by the engine's own cross-fitted doubly "
        "robust scores of realized profit, paired by decision. `t` = true gain over the "
        "blanket / the standard error of its estimate. The *top-gain* policy at a target "
        "share takes the oracle's action where it gains most, the blanket's elsewhere: it "
        "differs from the blanket on as few decisions as any policy earning that share, so "
        "its noise is about the least, but it knows which decisions gain most (a learner "
        "must find them from features). A policy given in advance t standard errors better "
        "is estimated above one standard error (the selection's rule) with chance about "
        "Phi(t - 1); a learned one does worse. See `benchmarks/power.py`.",
        "",
        f"Reproduce: `{command}`",
    ]
    for run in runs:
        goal = f"{run.goal:.0%} of the oracle and " if run.goal is not None else ""
        lines += [
            "",
            f"### World `{run.effects}`, {run.buyers:,} buyers (target: {goal}above the best "
            "blanket on every seed)",
            "",
            "| seed | decisions | best blanket | its share of the oracle | oracle's gain over "
            "it per decision | DR estimate +- SE | t of the oracle | t of the top-gain policy "
            "at the target |",
            "|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {s.seed} | {s.decisions:,} | {s.blanket} | {s.blanket_share:.0%} | "
            f"{s.gain_over_blanket:.3f} | {s.dr_gain_over_blanket:+.3f} +- {s.se:.3f} | "
            f"{s.t_oracle:.2f} | {_t(s.t_at_goal, run.goal)} |"
            for s in run.per_seed
        ]
        at_goal = (
            f"; the top-gain policy at the target share {run.every_seed_at_goal:.1%}"
            if run.goal is not None
            else ""
        )
        lines += [
            "",
            f"Median t of the oracle {statistics.median(s.t_oracle for s in run.per_seed):.2f}. "
            "Chance of being estimated above one standard error on every seed, given in "
            f"advance: the oracle {run.every_seed_oracle:.1%}{at_goal}.",
        ]
    return "\n".join(lines) + "\n"


def _t(value: float, goal: float | None) -> str:
    if goal is None:
        return "no share target"
    return "the blanket earns it" if math.isnan(value) else f"{value:.2f}"


def main() -> None:
    """Measure one (world, size), print the figures as JSON, optionally the Markdown."""
    args = world_arguments(__doc__.splitlines()[0], 10_000, [1, 2, 3, 4, 5])
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="power-") as tmp:
        figures = measure_power(args.buyers, args.seeds, args.work or Path(tmp), args.effects)
    print(json.dumps(figures.as_dict(), indent=2))
    if args.markdown:
        seeds = " ".join(str(s) for s in args.seeds)
        command = (
            f"python -m benchmarks.power --buyers {args.buyers} --seeds {seeds} "
            f"--effects {args.effects}"
        )
        args.markdown.write_text(format_power_markdown([figures], command))
    print(f"power: {time.perf_counter() - began:.1f} s in all", file=sys.stderr)


if __name__ == "__main__":
    main()
