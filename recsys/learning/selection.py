"""Candidate policies, valued on the same folds; the simplest within one SE of the best.

Every candidate is a value model (`recsys.learning.values`) plus the one decision rule
(`recsys.policy.value.decision_scores`: leave the seller's default only where the lower
confidence bound of the gain is positive). For each fold of buyers, each candidate is
fitted on the other folds and decides the fold's logged decisions; the doubly robust
score of the action it takes is its value on that decision (`recsys.learning.scores`).
Every candidate is thus judged on every decision, by the realized profit, by buyers it
never saw -- and candidates are compared decision by decision (paired), so the standard
error of a difference is that of the decisions where they differ.

Fixed policies are valued beside them on the same scores: nothing, and one kind for
everyone (each kind in turn).

Selection (`choose`): the best candidate by value; then the simplest tier of candidates
(lowest complexity) holding one whose value is within one standard error of the paired
difference from the best. In that tier candidates are tried in their order and a later
one displaces the choice only when it beats it by more than one standard error. The
per-seller blanket and "nothing" are the simplest tier, in that order: where
personalization cannot be shown to help, the blanket -- the one kind the model values
best for everyone, costs included, or nothing if none pays -- ships, unless the data
shows that sending nothing at all earns more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recsys.learning.decisions import NOTHING
from recsys.learning.scores import DRScores
from recsys.learning.values import ValueModel
from recsys.policy.value import decision_scores

ValueModelFactory = Callable[[], ValueModel]


@dataclass(frozen=True)
class CandidateSpec:
    """A named candidate: how to build an unfitted value model, and its complexity."""

    name: str
    complexity: int
    build: ValueModelFactory


@dataclass
class PolicyValue:
    """A policy's cross-validated doubly robust value per decision."""

    name: str
    complexity: int
    value: float
    std_error: float
    per_decision: np.ndarray = field(repr=False)
    diff_to_best: float = float("nan")
    diff_std_error: float = float("nan")
    offers_share: float = float("nan")
    """Share of decisions given an offer (not nothing)."""


@dataclass
class SelectionReport:
    """Every candidate's and fixed policy's value on the same decisions, and the choice."""

    candidates: list[PolicyValue] = field(default_factory=list)
    fixed: list[PolicyValue] = field(default_factory=list)
    chosen: str = ""
    best: str = ""
    decisions: int = 0
    reward: str = "realized profit"
    """What the values are doubly robust estimates of."""
    calibration: pl.DataFrame | None = None
    """Deciles of predicted incremental profit (held out) vs its doubly robust value."""

    def policies(self) -> list[PolicyValue]:
        """The candidates, then the fixed policies not already among them (a candidate
        named "nothing" and the fixed "nothing" are the same policy)."""
        names = {pv.name for pv in self.candidates}
        return [*self.candidates, *(pv for pv in self.fixed if pv.name not in names)]

    def table(self) -> str:
        lines = [
            f"cross-validated value per decision ({self.decisions:,} logged decisions, folds "
            f"by buyer; doubly robust on {self.reward}; +- one standard error):"
        ]
        for pv in self.policies():
            mark = " <- shipped" if pv.name == self.chosen else ""
            diff = (
                f"  (vs best {pv.diff_to_best:+.4f} +- {pv.diff_std_error:.4f})"
                if np.isfinite(pv.diff_to_best)
                else ""
            )
            lines.append(
                f"  {pv.name:<24} {pv.value:10.4f} +- {pv.std_error:.4f}  offers to "
                f"{pv.offers_share:6.1%}{diff}{mark}"
            )
        needed = self.decisions_to_show_best()
        if needed is not None:
            lines.append(
                f"  {self.best} is not shown better than {self.chosen}: a gain of its estimated "
                f"size would clear one standard error with about {needed:,.0f} randomized "
                f"decisions ({needed / max(self.decisions, 1):.1f} times these); keep a "
                "holdout and exploration running to learn it"
            )
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"cv_decisions": float(self.decisions)}
        for pv in self.policies():
            out[f"cv_{pv.name}_value"] = pv.value
            out[f"cv_{pv.name}_se"] = pv.std_error
        needed = self.decisions_to_show_best()
        if needed is not None:
            out["cv_decisions_to_show_best"] = needed
        return out

    def decisions_to_show_best(self) -> float | None:
        """When the best candidate by value did not ship (its gain over the shipped one was
        within one paired standard error): about how many randomized decisions would make
        a gain of its estimated size exceed one standard error, which shrinks as one over
        the root of the decisions. None when the best shipped or shows no gain. A rough
        guide for how much longer to randomize (holdout, exploration), not a promise: the
        estimated gain is itself that noisy."""
        shipped = next((pv for pv in self.candidates if pv.name == self.chosen), None)
        if shipped is None or self.chosen == self.best:
            return None
        gain, se = -shipped.diff_to_best, shipped.diff_std_error
        if not (np.isfinite(gain) and np.isfinite(se)) or gain <= 0 or se <= 0:
            return None
        return self.decisions * (se / gain) ** 2


def choose_actions(
    options: pl.DataFrame, model: ValueModel, z: float
) -> tuple[np.ndarray, pl.DataFrame]:
    """Row index (into `options`) of the action each decision takes under `model` with
    the decision rule at `z` -- its best-scored offer if the score is positive, else its
    nothing row -- and the offer rows' predicted values (`_row`, `predicted`).
    `options` holds every decision's offer rows and its nothing row."""
    offers = options.with_row_index("_row").filter(pl.col("kind") != NOTHING)
    values = model.values(offers)
    defaults = model.default_kind(offers["seller_key"])
    is_default = (offers["kind"] == defaults).fill_null(False).to_numpy()
    unit = offers["exposure_id"].rank("dense").cast(pl.Int64).to_numpy()
    _, _, score = decision_scores(unit, values.mean, values.draws, is_default, z)
    scored = offers.select("_row", "exposure_id").with_columns(pl.Series("_s", score))
    best = scored.sort("_s", descending=True).group_by("exposure_id").first()
    nothing = options.with_row_index("_row").filter(pl.col("kind") == NOTHING)
    rows = (
        nothing.select("exposure_id", pl.col("_row").alias("_nothing"))
        .join(best, on="exposure_id", how="left")
        .select(
            "exposure_id",
            pl.when(pl.col("_s") > 0)
            .then(pl.col("_row"))
            .otherwise(pl.col("_nothing"))
            .alias("_chosen"),
        )
        .sort("exposure_id")["_chosen"]
        .to_numpy()
    )
    return rows, offers.select("_row").with_columns(pl.Series("predicted", values.mean))


def cross_validate(
    options: pl.DataFrame,
    scores: DRScores,
    specs: Sequence[CandidateSpec],
    z: float,
) -> SelectionReport:
    """Value each candidate and fixed policy by cross-fitting over the folds (see module).

    `options` has one row per (decision, action) with `exposure_id`, `fold`, `kind`
    (NOTHING for the nothing row), `seller_key` and what the value models read.
    """
    judged = scores.dr_value if scores.dr_value is not None else scores.dr_reward
    options = options.with_columns(pl.Series("_gr", judged))
    decisions = options.select("exposure_id", "fold").unique("exposure_id").sort("exposure_id")
    n = decisions.height
    report = SelectionReport(
        decisions=n,
        reward="realized profit" if scores.dr_value is None else "valued purchases",
    )
    position = dict(zip(decisions["exposure_id"].to_list(), range(n), strict=True))
    realized = {spec.name: np.zeros(n) for spec in specs}
    offered = {spec.name: np.zeros(n) for spec in specs}
    calibration: dict[str, list[pl.DataFrame]] = {spec.name: [] for spec in specs}
    for fold in sorted(decisions["fold"].unique().to_list()):
        in_fold = (options["fold"] == fold).to_numpy()
        train, test = options.filter(~in_fold), options.filter(in_fold)
        train_scores = _subset(scores, ~in_fold)
        # Decisions of the fold in the order `choose_actions` answers them (by id).
        ids = test.filter(pl.col("kind") == NOTHING).sort("exposure_id")["exposure_id"]
        at = np.fromiter((position[e] for e in ids.to_list()), dtype=np.int64, count=ids.len())
        gr, kinds = test["_gr"].to_numpy(), test["kind"].to_numpy()
        for spec in specs:
            model = spec.build().fit(train, train_scores)
            rows, predicted = choose_actions(test, model, z)
            realized[spec.name][at] = gr[rows]
            offered[spec.name][at] = kinds[rows] != NOTHING
            calibration[spec.name].append(_calibration_rows(test, predicted))
    values, offers = realized, offered
    report.candidates = [
        _policy_value(spec.name, spec.complexity, values[spec.name], offers[spec.name])
        for spec in specs
    ]
    report.fixed = _fixed_policies(options)
    best = max(report.candidates, key=lambda pv: pv.value)
    report.best = best.name
    for pv in [*report.candidates, *report.fixed]:
        diff = best.per_decision - pv.per_decision
        pv.diff_to_best = -float(diff.mean())
        pv.diff_std_error = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    report.chosen = choose(report.candidates, best)
    parts = calibration.get(report.chosen) or []
    report.calibration = _calibration_table(pl.concat(parts)) if parts else None
    return report


def choose(candidates: Sequence[PolicyValue], best: PolicyValue) -> str:
    """The candidate of the simplest tier holding one within one standard error (paired)
    of the best; within the tier, a later candidate displaces an earlier one only by
    beating it by more than one standard error (see the module docstring)."""
    for tier in sorted({pv.complexity for pv in candidates}):
        members = [pv for pv in candidates if pv.complexity == tier]
        if any(
            pv.name == best.name
            or not np.isfinite(pv.diff_std_error)
            or best.value - pv.value <= pv.diff_std_error
            for pv in members
        ):
            chosen = members[0]
            for other in members[1:]:
                if _beats(other, chosen):
                    chosen = other
            return chosen.name
    return best.name


def _beats(a: PolicyValue, b: PolicyValue) -> bool:
    """Whether `a` is worth more than `b` by more than one standard error of the paired
    difference, decision by decision."""
    diff = a.per_decision - b.per_decision
    if len(diff) < 2:
        return bool(diff.mean() > 0) if len(diff) else False
    return bool(diff.mean() > diff.std(ddof=1) / np.sqrt(len(diff)))


def _subset(scores: DRScores, mask: np.ndarray) -> DRScores:
    return DRScores(
        q_purchase=scores.q_purchase[mask],
        q_reward=scores.q_reward[mask],
        dr_purchase=scores.dr_purchase[mask],
        dr_reward=scores.dr_reward[mask],
    )


def _policy_value(
    name: str, complexity: int, per_decision: np.ndarray, offered: np.ndarray
) -> PolicyValue:
    n = len(per_decision)
    return PolicyValue(
        name=name,
        complexity=complexity,
        value=float(per_decision.mean()) if n else float("nan"),
        std_error=float(per_decision.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        per_decision=per_decision,
        offers_share=float(offered.mean()) if n else float("nan"),
    )


def _fixed_policies(options: pl.DataFrame) -> list[PolicyValue]:
    """Nothing, and each kind for every decision that could take it (nothing elsewhere)."""
    frame = options.select("exposure_id", "kind", "_gr")
    nothing = frame.filter(pl.col("kind") == NOTHING).sort("exposure_id")
    out = [_policy_value("nothing", 0, nothing["_gr"].to_numpy(), np.zeros(nothing.height))]
    for kind in sorted(frame.filter(pl.col("kind") != NOTHING)["kind"].unique().to_list()):
        per = frame.filter(pl.col("kind") == kind).group_by("exposure_id").agg(pl.col("_gr").mean())
        joined = (
            nothing.select("exposure_id", pl.col("_gr").alias("_g0"))
            .join(per, on="exposure_id", how="left")
            .sort("exposure_id")
        )
        has = joined["_gr"].is_not_null().to_numpy()
        value = np.where(has, joined["_gr"].fill_null(0.0).to_numpy(), joined["_g0"].to_numpy())
        out.append(_policy_value(f"all_{kind}", 1, value, has.astype(float)))
    return out


def _calibration_rows(test: pl.DataFrame, predicted: pl.DataFrame) -> pl.DataFrame:
    """Held-out offer rows: predicted incremental profit and its DR realization."""
    indexed = test.with_row_index("_row")
    nothing = indexed.filter(pl.col("kind") == NOTHING).select(
        "exposure_id", pl.col("_gr").alias("_g0")
    )
    return (
        predicted.join(indexed.select("_row", "exposure_id", "_gr"), on="_row")
        .join(nothing, on="exposure_id", how="left")
        .select("predicted", (pl.col("_gr") - pl.col("_g0")).alias("realized"))
    )


def _calibration_table(rows: pl.DataFrame, bins: int = 10) -> pl.DataFrame:
    """Deciles of predicted value: mean predicted, mean DR-realized, its SE, rows."""
    if rows.height < bins:
        return pl.DataFrame(
            schema={
                "decile": pl.Int64,
                "predicted": pl.Float64,
                "realized": pl.Float64,
                "realized_se": pl.Float64,
                "rows": pl.UInt32,
            }
        )
    return (
        rows.sort("predicted")
        .with_columns((pl.int_range(pl.len()) * bins // pl.len()).alias("decile"))
        .group_by("decile", maintain_order=True)
        .agg(
            pl.col("predicted").mean(),
            pl.col("realized").mean(),
            (pl.col("realized").std() / pl.len().sqrt()).alias("realized_se"),
            pl.len().alias("rows"),
        )
    )
