"""The issue's targets, each judged met or missed and by how much.

A `Target` is plain data, so the report can list every target of every part in one
table, and the JSON file carries the verdicts. Training targets are judged from the
training part's JSON figures (the keys `benchmarks.training_scale` writes), so the
report does not depend on that module's classes; the serving target is judged in
`benchmarks.serve_bench`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

TRAINING_BUYERS = 1_000_000
TRAINING_WALL_S = 600.0
TRAINING_PEAK_MB = 8 * 1024.0


@dataclass(frozen=True)
class Target:
    """One target: what was asked, what was measured, met or not, and by how much."""

    name: str
    goal: str
    measured: str
    met: bool | None
    """None: could not be judged (see `gap`)."""
    gap: str
    """By how much it was met or missed, or why it could not be judged."""

    @property
    def verdict(self) -> str:
        if self.met is None:
            return f"not judged: {self.gap}"
        return ("met" if self.met else "**missed**") + f" ({self.gap})"

    def line(self) -> str:
        """One sentence for a report section."""
        measured = "" if self.measured == "-" else f" Measured: {self.measured}."
        return f"**Target**: {self.goal}: {self.verdict}.{measured}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Target:
        return cls(**raw)


def upper_bound(
    name: str, goal: str, value: float, limit: float, unit: str, scale: float = 1.0
) -> Target:
    """A target that `value` stays under `limit` (shown divided by `scale`, in `unit`)."""
    shown, bound = value / scale, limit / scale
    met = value < limit
    share = abs(value - limit) / limit
    gap = (
        f"{bound - shown:.2f} {unit} to spare, {share:.0%} under"
        if met
        else f"missed by {shown - bound:.2f} {unit}, {share:.0%} over"
    )
    return Target(name, goal, f"{shown:.2f} {unit}", met, gap)


def training_targets(runs: Sequence[dict[str, Any]]) -> list[Target]:
    """1,000,000 buyers end to end under 10 minutes, peak memory under 8 GiB.

    `runs` are `TrainingFigures.as_dict()` records (keys `buyers`, `wall_s`,
    `peak_tree_mb`, `exit_code`, optional `settings`); each run with 1,000,000 buyers is
    judged (the shipped defaults and, say, the defaults without their large-data sizing).
    """
    wall_goal = f"{TRAINING_BUYERS:,} buyers end to end under {TRAINING_WALL_S / 60:g} min"
    mem_goal = f"{TRAINING_BUYERS:,} buyers with peak memory under {TRAINING_PEAK_MB / 1024:g} GiB"
    big = [r for r in runs if int(r.get("buyers", 0)) >= TRAINING_BUYERS]
    if not big:
        sizes = ", ".join(f"{int(r.get('buyers', 0)):,}" for r in runs) or "none"
        why = f"no run at {TRAINING_BUYERS:,} buyers in this report (runs: {sizes})"
        return [
            Target("training_wall", wall_goal, "-", None, why),
            Target("training_memory", mem_goal, "-", None, why),
        ]
    return [t for run in big for t in _training_run_targets(run, wall_goal, mem_goal)]


def _training_run_targets(run: dict[str, Any], wall_goal: str, mem_goal: str) -> list[Target]:
    """Both training targets judged on one run; a run given `--set` overrides says so."""
    settings = str(run.get("settings", ""))
    suffix = f" [{settings}]" if settings else ""
    wall_name, mem_name = f"training_wall{suffix}", f"training_memory{suffix}"
    wall_goal, mem_goal = wall_goal + suffix, mem_goal + suffix
    if int(run.get("exit_code", 0)) != 0:
        why = f"the run failed (exit code {run.get('exit_code')})"
        return [
            Target(wall_name, wall_goal, "failed", False, why),
            Target(mem_name, mem_goal, "failed", False, why),
        ]
    return [
        upper_bound(wall_name, wall_goal, float(run["wall_s"]), TRAINING_WALL_S, "min", scale=60),
        upper_bound(
            mem_name, mem_goal, float(run["peak_tree_mb"]), TRAINING_PEAK_MB, "GiB", scale=1024
        ),
    ]


def format_targets_table(targets: Sequence[Target]) -> list[str]:
    """Markdown table of every target."""
    lines = ["| target | measured | verdict |", "|---|---:|---|"]
    lines += [f"| {t.goal} | {t.measured} | {t.verdict} |" for t in targets]
    return lines


QUALITY_SHARE_GOALS = {"stage": 0.60, "attributes": 0.50, "uniform": 0.80}
"""Median share of the oracle's true profit the learned policy must earn, per world."""
DR_ERROR_GOAL = 0.10
"""The shipped policy's DR estimate within this relative error of its true value."""


def quality_targets(runs: Sequence[dict[str, Any]]) -> list[Target]:
    """Issue 16's quality targets from the quality part's runs (`QualityFigures.as_dict`).

    Per (world, size): the median share of the oracle (demo-sized runs are judged against
    the blanket only), above the best blanket on every seed; at 20,000 buyers the DR
    estimate of the shipped policy within 10 % of its true value on every seed.
    """
    out = []
    for run in runs:
        world, buyers = run["effects"], run["buyers"]
        label = f"{world}, {buyers:,} buyers"
        seeds = run["per_seed"]
        shares = [s["share_of_oracle"].get("learned", float("nan")) for s in seeds]
        goal = QUALITY_SHARE_GOALS.get(world)
        if goal is not None and buyers >= 10_000:
            median = run["median"]["share_of_oracle"].get("learned", float("nan"))
            met = median >= goal
            gap = f"{(median - goal) * 100:+.1f} points"
            out.append(
                Target(
                    f"quality {label} share",
                    f"{label}: learned >= {goal:.0%} of the oracle (median of seeds)",
                    f"{median:.1%} (seeds: {', '.join(f'{x:.1%}' for x in shares)})",
                    met,
                    gap,
                )
            )
        gaps = []
        for s in seeds:
            values = s["policy_value"]
            best = max(v for k, v in values.items() if k.startswith("blanket_"))
            gaps.append(values["learned"] - best)
        beaten = sum(g > 0 for g in gaps)
        out.append(
            Target(
                f"quality {label} above blanket",
                f"{label}: above the best single-tool blanket on every seed",
                ", ".join(f"{g:+,.1f}" for g in gaps),
                beaten == len(gaps),
                f"above on {beaten} of {len(gaps)} seeds; never below on "
                f"{sum(g >= -1e-6 for g in gaps)}",
            )
        )
        if buyers >= 20_000:
            errors = [s["ope"].get("dr_relative_error", float("nan")) for s in seeds]
            worst = max(errors) if errors else float("nan")
            out.append(
                Target(
                    f"quality {label} DR error",
                    f"{label}: DR estimate of the shipped policy within "
                    f"{DR_ERROR_GOAL:.0%} of its true value on every seed",
                    ", ".join(f"{e:.1%}" for e in errors),
                    worst <= DR_ERROR_GOAL,
                    f"worst {worst:.1%}",
                )
            )
    return out
