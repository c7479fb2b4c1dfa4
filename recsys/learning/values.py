"""Value models: expected incremental profit of each (buyer, offer), with its draws.

A value model answers, for rows describing a buyer and an offer (and the money terms of
`recsys.policy.value`: margin, order value, P(redeem), redemption cost), the offer's
expected incremental profit over sending nothing and draws from its uncertainty. Two
kinds, both judged the same way by `recsys.learning.selection`:

- `BlanketValues`: one value per seller and offer kind, the doubly robust mean of what
  that kind added over nothing on the seller's logged decisions -- no personalization;
- `StructuralValues`: the policy's formula of expected incremental profit
  (`recsys.policy.value.expected_incremental_profit`) with the uplift an effect model
  predicts for the buyer, ``uplift = (1 - P(purchase | nothing)) * effect``.

Each also names its *default* per seller: the single kind it would send everyone, or
nothing. The decision rule (`recsys.policy.value.decision_scores`) leaves the default
only where the lower confidence bound of the gain says so.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import polars as pl

from recsys.features.pairs import PLATFORM
from recsys.learning.decisions import NOTHING
from recsys.learning.effects import EffectModel, KindEffects
from recsys.learning.scores import DRScores
from recsys.policy.config import PolicyConfig
from recsys.policy.value import expected_incremental_profit

DRAWS = 32


@dataclass(frozen=True)
class Values:
    """Per row: expected incremental profit over nothing, its draws (B x n) and uplift."""

    mean: np.ndarray
    draws: np.ndarray
    uplift: np.ndarray


class ValueModel(ABC):
    """Fitted on option rows (one per decision and action, `kind` NOTHING for nothing)
    with their doubly robust scores; values offer rows; names a default kind per seller."""

    name: ClassVar[str]
    complexity: ClassVar[int]
    defaults_: dict[str, str]

    @abstractmethod
    def fit(self, options: pl.DataFrame, scores: DRScores) -> Self: ...

    @abstractmethod
    def values(self, rows: pl.DataFrame) -> Values: ...

    def default_kind(self, seller_key: pl.Series) -> pl.Series:
        """Each row's seller's default kind (null: nothing)."""
        return seller_key.replace_strict(
            self.defaults_, default=self.defaults_.get(PLATFORM), return_dtype=pl.String
        )

    def describe(self) -> list[str]:
        return [
            f"default of seller {s}: {k if k != NOTHING else 'nothing'}"
            for s, k in sorted(self.defaults_.items())
        ]

    def _set_defaults(self, rows: pl.DataFrame, max_rows: int = 20_000) -> None:
        """The kind each seller would send everyone (`choose_defaults`), from this model's
        values over at most `max_rows` of the rows (a fixed sample: a default needs no
        more)."""
        if rows.height > max_rows:
            rows = rows.gather_every(rows.height // max_rows + 1)
        self.defaults_ = choose_defaults(rows, self.values(rows))


def policy_values(
    rows: pl.DataFrame, uplift: pl.Expr | pl.Series, policy: PolicyConfig
) -> pl.DataFrame:
    """`rows` valued by the policy's formula (`expected_incremental_profit`) with `uplift`;
    a P(redeem) the response model could not learn (null) counts as nobody redeeming, as
    the ranker's answers show it."""
    redeem = pl.col("p_redeem").fill_null(0.0) if "p_redeem" in rows.columns else pl.lit(0.0)
    uplift_column = uplift.alias("uplift")
    return expected_incremental_profit(
        rows.with_columns(redeem.alias("p_redeem"), uplift_column), policy
    )


def choose_defaults(rows: pl.DataFrame, values: Values, z: float = 1.0) -> dict[str, str]:
    """The kind of offer each seller sends everyone when nothing is known of a buyer.

    First the marketplace's: the kind with the best mean value over all rows (nothing if
    none is positive). A seller keeps it unless its own best kind beats it on the
    seller's rows by more than `z` standard errors (from the values' draws): a seller's
    few decisions do not overturn what all of them show on noise. A seller whose chosen
    kind's mean value is not positive sends nothing. Returns seller_key -> kind (NOTHING
    for nothing), the platform's default under `PLATFORM`.
    """
    frame = rows.select("seller_key", "kind").with_columns(pl.int_range(pl.len()).alias("_i"))

    def means(group: pl.DataFrame) -> dict[str, tuple[float, np.ndarray]]:
        cells = group.group_by("kind", maintain_order=True).agg(pl.col("_i"))
        return {
            kind: (float(values.mean[idx].mean()), values.draws[:, idx].mean(axis=1))
            for kind, idx in zip(cells["kind"], (np.asarray(i) for i in cells["_i"]), strict=True)
        }

    pooled = means(frame)
    if not pooled:
        return {PLATFORM: NOTHING}
    top = max(sorted(pooled), key=lambda k: pooled[k][0])
    defaults = {PLATFORM: top if pooled[top][0] > 0 else NOTHING}
    for (seller,), group in frame.group_by("seller_key", maintain_order=True):
        own = means(group)
        kind = top if top in own else max(sorted(own), key=lambda k: own[k][0])
        best = max(sorted(own), key=lambda k: own[k][0])
        if best != kind:
            gain = own[best][1] - own[kind][1]
            sd = float(gain.std(ddof=1)) if len(gain) > 1 else 0.0
            if own[best][0] - own[kind][0] - z * sd > 0:
                kind = best
        defaults[str(seller)] = kind if own[kind][0] > 0 else NOTHING
    return defaults


def dr_advantages(options: pl.DataFrame, scores: DRScores) -> pl.DataFrame:
    """Offer rows with `adv_reward` and `adv_purchase`: each action's doubly robust score
    minus nothing's, for the same decision, and `p0` (P(purchase | nothing) predicted)."""
    frame = options.select("exposure_id", "kind").with_columns(
        pl.Series("_gr", scores.dr_reward),
        pl.Series("_gy", scores.dr_purchase),
        pl.Series("_qy", scores.q_purchase),
        pl.int_range(pl.len()).alias("_row"),
    )
    nothing = frame.filter(pl.col("kind") == NOTHING).select(
        "exposure_id",
        pl.col("_gr").alias("_gr0"),
        pl.col("_gy").alias("_gy0"),
        pl.col("_qy").alias("p0"),
    )
    return (
        frame.filter(pl.col("kind") != NOTHING)
        .join(nothing, on="exposure_id", how="inner")
        .select(
            "_row",
            (pl.col("_gr") - pl.col("_gr0")).alias("adv_reward"),
            (pl.col("_gy") - pl.col("_gy0")).alias("adv_purchase"),
            "p0",
        )
        .sort("_row")
    )


def valued_purchase_scores(
    options: pl.DataFrame, scores: DRScores, policy: PolicyConfig
) -> np.ndarray:
    """Doubly robust scores of each action's *valued purchase*, a low-noise stand-in for
    realized profit: margin x the buyer's usual order value x purchased (0/1), minus the
    discount realized, minus the send cost of an offer.

    Realized profit adds what the buyer happened to spend and how often: noise that
    drowns effects of a few points on purchase. The stand-in has the same differences
    between actions wherever an offer changes *whether* a buyer buys, not how much, and
    one fifth to one half of the variance. The model part is the purchase model times
    the order value, less P(redeem) x redemption cost and the send cost (the policy's
    formula with no uplift).
    """
    costs = policy_values(options, pl.lit(0.0), policy)
    margin = costs["margin"].fill_null(policy.margin_default).to_numpy()
    value = margin * costs["order_value"].fill_null(0.0).to_numpy()
    offer = (options["kind"] != NOTHING).to_numpy()
    cost_model = np.where(offer, costs["expected_value"].fill_null(0.0).to_numpy(), 0.0)
    q = value * scores.q_purchase + cost_model
    logged = options["is_logged"].to_numpy()
    realized = (
        value * options["purchased"].to_numpy()
        - options["discount"].fill_null(0.0).to_numpy()
        - np.where(options["logged_offer"].is_not_null().to_numpy(), policy.send_cost, 0.0)
    )
    taken = logged / np.clip(options["propensity"].to_numpy(), 1e-6, 1.0)
    return q + taken * (realized - q)


# --------------------------------------------------------------------------- blanket


@dataclass
class BlanketValues(ValueModel):
    """No personalization: every buyer of a seller gets, for each kind, that kind's mean
    value over the seller's decisions under the kind-effects model (`StructuralValues`
    with `KindEffects`); its default is the single kind it would send everyone.

    The mean, not each buyer's value: the blanket is what a seller without the engine
    would do -- pick the one offer that pays best on average -- chosen with the costs the
    data shows (redemptions x discount) and the effects it can measure.
    """

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    seed: int = 0
    name: ClassVar[str] = "blanket"
    complexity: ClassVar[int] = 1
    table_: pl.DataFrame = field(default_factory=pl.DataFrame)
    draws_: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    defaults_: dict[str, str] = field(default_factory=dict)

    def fit(self, options: pl.DataFrame, scores: DRScores) -> Self:
        structural = StructuralValues(effects=KindEffects(seed=self.seed), policy=self.policy)
        structural.fit(options, scores)
        rows = options.filter(pl.col("kind") != NOTHING)
        values = structural.values(rows)
        frame = rows.select("seller_key", "kind").with_columns(pl.Series("_i", range(rows.height)))
        cells = frame.group_by("seller_key", "kind", maintain_order=True).agg(pl.col("_i"))
        self.table_ = cells.with_columns(
            pl.Series("value", [float(values.mean[i].mean()) for i in cells["_i"].to_list()]),
            pl.int_range(pl.len()).alias("_cell"),
        ).drop("_i")
        self.draws_ = (
            np.stack([values.draws[:, i].mean(axis=1) for i in cells["_i"].to_list()], axis=1)
            if cells.height
            else np.zeros((1, 0))
        )
        self.defaults_ = choose_defaults(rows, values)
        return self

    def values(self, rows: pl.DataFrame) -> Values:
        overall = self.table_.group_by("kind").agg(pl.col("_cell").first().alias("_any"))
        cells = (
            rows.select("seller_key", "kind")
            .join(
                self.table_.select("seller_key", "kind", "_cell"),
                on=["seller_key", "kind"],
                how="left",
                maintain_order="left",
            )
            .join(overall, on="kind", how="left", maintain_order="left")
            .select(pl.coalesce("_cell", "_any").alias("_cell"))
            .to_series()
        )
        known = cells.is_not_null().to_numpy()
        index = cells.fill_null(0).to_numpy()
        table_values = self.table_["value"].to_numpy()
        mean = np.where(known, table_values[index] if len(table_values) else 0.0, 0.0)
        draws = np.where(known, self.draws_[:, index] if self.draws_.shape[1] else 0.0, 0.0)
        # The uplift that gives this value in the policy's formula (for its reasons).
        costs = policy_values(rows, pl.lit(0.0), self.policy)
        gain = costs["margin"].fill_null(self.policy.margin_default) * costs["order_value"]
        uplift = np.where(
            gain.to_numpy() > 0,
            (mean - costs["expected_value"].to_numpy()) / np.maximum(gain.to_numpy(), 1e-12),
            0.0,
        )
        return Values(mean=mean, draws=draws, uplift=uplift)

    def describe(self) -> list[str]:
        return [
            *super().describe(),
            *[
                f"  {s} x {k}: {v:+.4f} per buyer on average"
                for s, k, v in self.table_.sort("seller_key", "kind")
                .select("seller_key", "kind", "value")
                .iter_rows()
            ],
        ]


# --------------------------------------------------------------------------- structural


@dataclass
class StructuralValues(ValueModel):
    """Expected incremental profit by the policy's formula, with an effect model's uplift."""

    effects: EffectModel = field(default_factory=KindEffects)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The money terms of the policy's formula (send cost, default margin, shipping)."""
    name: ClassVar[str] = "structural"
    complexity: ClassVar[int] = 2
    defaults_: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.effects.name

    def fit(self, options: pl.DataFrame, scores: DRScores) -> Self:
        adv = dr_advantages(options, scores)
        rows = options[adv["_row"].to_numpy()]
        p0 = np.clip(adv["p0"].to_numpy(), 0.0, 0.95)
        z = adv["adv_purchase"].to_numpy() / (1.0 - p0)
        self.effects.fit(rows, z)
        self._set_defaults(rows)
        return self

    def values(self, rows: pl.DataFrame) -> Values:
        effect = self.effects.predict(rows)
        p0 = rows["p_purchase"].fill_null(0.0).clip(0.0, 1.0).to_numpy()
        uplift = (1.0 - p0) * effect.mean
        valued = policy_values(rows, pl.Series(uplift), self.policy)
        mean = valued["expected_value"].to_numpy()
        # d value / d effect = margin x order value x (1 - p0): draws move the value by it.
        margin = valued["margin"].fill_null(self.policy.margin_default).to_numpy()
        slope = margin * valued["order_value"].to_numpy() * (1.0 - p0)
        draws = mean + slope * (effect.draws - effect.mean)
        return Values(mean=mean, draws=draws, uplift=uplift)

    def describe(self) -> list[str]:
        return [*super().describe(), *self.effects.describe()]
