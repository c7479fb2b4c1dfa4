"""`PolicyLearner`: from a dataset's randomized decisions to the values the policy acts on.

Fitting (costs in rows: D decisions kept, at most `max_decisions`; O = D x (offers per
seller and wave + 1) option rows):

1. the logged decisions before `as_of` whose outcome window is complete, their options
   and outcomes (`recsys.learning.decisions`), buyers sampled whole down to
   `max_decisions`; features of every option as of its decision's day (the ranker's
   `describe`, one feature pass per day: O rows);
2. cross-fitted outcome models and doubly robust scores (`recsys.learning.scores`):
   `folds` fits on D rows, predictions on O;
3. every candidate value model valued on the same folds, the simplest within one standard
   error of the best chosen (`recsys.learning.selection`): candidates x folds fits;
4. the chosen one refitted on all decisions, and a purchase model P(purchase | nothing)
   fitted on them for scoring.

Scoring (`values`): per candidate row, P(purchase | nothing), the uplift, the expected
incremental profit, its standard error, the standard error of its gain over the seller's
default and the decision score (`recsys.policy.value.decision_scores`).

Without randomized decisions (no exposures with a propensity or a control group) nothing
is learned: the report says why and the ranker values offers by response only.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from recsys.config import StrictConfig
from recsys.data.dataset import Dataset
from recsys.features.buyer import ATTRIBUTE_PREFIX
from recsys.features.pairs import PLATFORM
from recsys.learning.decisions import (
    NOTHING,
    MoneyTerms,
    buyer_fold,
    decision_options,
    decision_outcomes,
    logged_decisions,
    offer_kinds,
    randomized,
    sample_buyers,
)
from recsys.learning.effects import (
    ForestEffects,
    KindEffects,
    NoEffects,
    Segmentation,
    SegmentEffects,
)
from recsys.learning.matrix import FeatureSpec
from recsys.learning.scores import (
    DRScores,
    OutcomeConfig,
    OutcomeModel,
    cross_fit_scores,
    fit_outcome,
    predict_outcome,
)
from recsys.learning.selection import CandidateSpec, SelectionReport, cross_validate
from recsys.learning.values import (
    BlanketValues,
    StructuralValues,
    ValueModel,
    valued_purchase_scores,
)
from recsys.models.base import Estimator
from recsys.policy.config import PolicyConfig
from recsys.policy.value import decision_scores

CandidateName = Literal["nothing", "blanket", "kind_effects", "segment_effects", "forest_effects"]
ALL_CANDIDATES: tuple[CandidateName, ...] = (
    "blanket",
    "nothing",
    "kind_effects",
    "segment_effects",
    "forest_effects",
)
Describe = Callable[[datetime, pl.DataFrame], pl.DataFrame]
"""Features and money columns of (buyer_id, offer_id, seller_key) rows as of a moment; a
null offer_id is the "nothing" row of that buyer and seller."""

OFFER_COLUMNS = (
    "offer_value",
    "offer_min_spend",
    "offer_cost",
    "offer_scoped",
    "offer_scope_size",
    "scope_purchases",
    "scope_category_share",
    "mf_affinity_mean",
    "mf_affinity_max",
    "past_tool_offers",
    "past_tool_redemptions",
)
"""Columns that describe an offer: "nothing" has none of them."""
NOT_FEATURES = frozenset(
    {
        "propensity",
        "purchased",
        "reward",
        "gross_value",
        "discount",
        "fold",
        "is_logged",
        "p_redeem",
        "p_purchase",
        "margin",
        "order_value",
        "redemption_cost",
        "offer_known",
        "propensity_estimated",
    }
)
"""Numeric columns of option rows that are outcomes, weights or money terms, not features."""
MAX_SEGMENT_LEVELS = 32
"""Categorical attributes with more levels than this are features, not segments: each
level would be a cell of every kind, most too small to say anything."""
BAND_COLUMNS = ("days_since_last_purchase", "orders_total", "open_cart_adds_14d", "bs_order_share")
"""Numeric buyer features whose quartile bands are segments (recency, frequency, an
open cart, the share of orders at the seller): present in any events data."""


class LearningConfig(StrictConfig):
    """Settings of policy learning (the ranker config's `learning:` section)."""

    z: float = Field(
        1.0,
        ge=0,
        description="how sure a gain must be: an offer other than the seller's default is "
        "chosen only where (gain - z x its standard error) > 0",
    )
    candidates: list[CandidateName] = Field(
        default_factory=lambda: list(ALL_CANDIDATES),
        description="candidate value models, valued by cross-validation; blanket is the "
        "per-seller single kind for everyone",
    )
    enabled: bool = Field(
        True,
        description="false: learn no policy; offers are valued by response alone (as for "
        "data without randomized decisions)",
    )
    ship: Literal[
        "auto", "nothing", "blanket", "kind_effects", "segment_effects", "forest_effects"
    ] = Field(
        "auto",
        description="auto: the simplest candidate within one standard error of the best; "
        "a candidate's name ships that one whatever its value (for experiments)",
    )
    folds: int = Field(3, ge=2, description="folds by buyer for cross-fitting and selection")
    selection_reward: Literal["profit", "valued_purchase"] = Field(
        "profit",
        description="what candidates are compared by: valued_purchase (purchases at the "
        "buyer's usual order value, less discounts and send costs: realized profit's "
        "differences between actions at a fraction of its noise) or profit (realized)",
    )
    max_decisions: int = Field(
        200_000,
        ge=100,
        description="decisions learned from at most (whole buyers sampled): effects are "
        "estimated well before this, and memory grows with it",
    )
    min_decisions: int = Field(
        100, ge=10, description="fewer randomized decisions than this: nothing is learned"
    )
    segments: list[str] | None = Field(
        None,
        description="categorical columns segmenting buyers for segment_effects; default: "
        "journey stage and the buyers table's categorical attributes",
    )
    outcome: OutcomeConfig = Field(default_factory=OutcomeConfig)
    seed: int = 0
    num_threads: int = Field(1, ge=1, description="OpenMP threads of the boosters")


@dataclass
class LearningSupport:
    """What policy learning learned, and why not the rest (for the fit report)."""

    learned: bool = False
    notes: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredDecisions:
    """The randomized decisions as policy learning sees them: one row per (decision,
    action it could have taken) -- `exposure_id`, `offer_id` (null: nothing), `kind`,
    `is_logged`, `propensity`, `reward`, `fold` and the features -- and, aligned with
    those rows, the doubly robust scores of each action."""

    options: pl.DataFrame
    scores: DRScores


class PolicyLearner(Estimator[LearningConfig]):
    """Learns the value model the policy decides by; see the module docstring."""

    config_class = LearningConfig

    def fit(
        self,
        dataset: Dataset,
        as_of: datetime,
        describe: Describe,
        money: MoneyTerms,
        policy: PolicyConfig,
    ) -> PolicyLearner:
        """Learn from `dataset`'s randomized decisions before `as_of` (see module)."""
        return super().fit(dataset, as_of, describe, money, policy)

    def _fit(
        self,
        dataset: Dataset,
        as_of: datetime,
        describe: Describe,
        money: MoneyTerms,
        policy: PolicyConfig,
    ) -> None:
        cfg = self.config
        self.model_: ValueModel | None = None
        self.selection_: SelectionReport | None = None
        self.purchase_model_: OutcomeModel | None = None
        scored = self.scored_decisions(dataset, as_of, describe, money)
        if scored is None:
            return
        options, scores = scored.options, scored.scores
        nothing_q = (
            options.select("exposure_id")
            .with_columns(pl.Series("_q", scores.q_purchase))
            .filter(options["kind"] == NOTHING)
        )
        options = options.join(
            nothing_q.rename({"_q": "p_purchase"}),
            on="exposure_id",
            how="left",
            maintain_order="left",
        )
        segmentation = Segmentation.fit(
            options,
            tuple(self._segments(options)),
            (*BAND_COLUMNS, *self._numeric_attributes(options)),
        )
        specs = self._candidates(segmentation, policy)
        if cfg.selection_reward == "valued_purchase":
            scores = replace(scores, dr_value=valued_purchase_scores(options, scores, policy))
        self.selection_ = cross_validate(options, scores, specs, cfg.z)
        if cfg.ship != "auto":
            self.selection_.chosen = cfg.ship
            if cfg.ship not in [s.name for s in specs]:
                specs = self._candidates(segmentation, policy, names=[cfg.ship])
        chosen = next(s for s in specs if s.name == self.selection_.chosen)
        self.model_ = chosen.build().fit(options, scores)
        logged = options.filter(pl.col("is_logged"))
        x = self.spec_.matrix(logged)
        self.purchase_model_ = fit_outcome(
            "classify", x, logged["purchased"].to_numpy(), self.spec_, self._outcome_config()
        )
        self.support_.learned = True
        self.support_.notes.append(
            f"policy learned from {logged.height:,} randomized decisions: shipped "
            f"{self.selection_.chosen} (best by cross-validated value: {self.selection_.best})"
        )

    def scored_decisions(
        self, dataset: Dataset, as_of: datetime, describe: Describe, money: MoneyTerms
    ) -> ScoredDecisions | None:
        """Steps 1 and 2 of fitting: the randomized decisions' option rows and the
        cross-fitted doubly robust scores of every action, which every candidate is
        valued on. None, with the reason in `support_.notes`, when there is nothing to
        learn from. Also read on its own, to ask how large a gain over a blanket this
        data could show at all (`benchmarks.power`)."""
        self.support_ = LearningSupport()
        self.spec_ = FeatureSpec(())
        options = self._options(dataset, as_of, describe, money)
        if options is None:
            return None
        self.spec_ = FeatureSpec.fit(options, self._numeric(options), self._categorical(options))
        self.support_.notes += self.spec_.notes()
        if not self.spec_.columns:
            self.support_.notes.append(
                "policy not learned: no feature has enough distinct values among the "
                f"{options.height:,} decision options; offers are valued by response"
            )
            return None
        return ScoredDecisions(
            options, cross_fit_scores(options, self.spec_, self._outcome_config())
        )

    # ------------------------------------------------------------------ data

    def _options(
        self, dataset: Dataset, as_of: datetime, describe: Describe, money: MoneyTerms
    ) -> pl.DataFrame | None:
        """Option rows with features, outcomes, folds; None (with a note) when too few."""
        cfg = self.config
        notes = self.support_.notes
        if not cfg.enabled:
            notes.append(
                "policy not learned: learning.enabled is false; offers are valued by response"
            )
            return None
        if dataset.offers is None or dataset.exposures is None:
            notes.append("policy not learned: the dataset has no offers or exposures")
            return None
        logged = logged_decisions(dataset, end=as_of, horizon_days=money.horizon_days)
        cut = logged_decisions(dataset, end=as_of) if logged.height < cfg.min_decisions else logged
        if cut.height > logged.height:
            # A last (or only) wave whose outcome window outlasts the data: every arm of a
            # randomized day is cut at the same time, so contrasts stay unbiased.
            notes.append(
                f"{cut.height - logged.height:,} decisions' outcome windows "
                f"({money.horizon_days:g} days) end after the data: learned from their "
                "outcomes up to the data's end (the same cut for every arm of a wave)"
            )
            logged = cut
        control = int(logged["offer_id"].is_null().sum()) if logged.height else 0
        missing = (
            ", none of them control"
            if not control
            else ", none of them an offer"
            if control == logged.height
            else ""
        )
        certain = logged.height
        logged = logged.filter(randomized())
        certain -= logged.height
        if certain:
            notes.append(
                f"{certain:,} decisions were logged at propensity 1 (a policy's choice with no "
                "holdout or exploration: it could not have gone another way) and teach "
                "nothing of the other actions: not learned from"
            )
        if logged.height < cfg.min_decisions or missing:
            notes.append(
                f"policy not learned: {logged.height:,} randomized decisions (exposures with a "
                f"propensity, or a control group){missing}; need {cfg.min_decisions} with "
                "offers and a control group. Keep a random control group and log propensities "
                "to learn which offer pays; offers are valued by response until then."
            )
            return None
        estimated = int(logged["propensity_estimated"].sum())
        if estimated:
            notes.append(
                f"{estimated:,} decisions had no logged propensity but came with a control "
                "group: estimated as each arm's share of its day (random assignment assumed)"
            )
        total = logged.height
        logged = sample_buyers(logged, cfg.max_decisions, cfg.seed)
        if logged.height < total:
            notes.append(
                f"learned from {logged.height:,} of {total:,} decisions (whole buyers "
                f"sampled; learning.max_decisions = {cfg.max_decisions:,})"
            )
        logged = decision_outcomes(dataset, logged, money).with_columns(
            buyer_fold(cfg.folds, cfg.seed)
        )
        options = decision_options(dataset, logged)
        nothing = logged.select("exposure_id", "buyer_id", "seller_id").with_columns(
            pl.lit(None, pl.String).alias("offer_id")
        )
        rows = pl.concat([options, nothing], how="vertical_relaxed").join(
            logged.select(
                "exposure_id",
                pl.col("offer_id").alias("logged_offer"),
                pl.col("ts").dt.truncate("1d").alias("_day"),
                "propensity",
                "purchased",
                "discount",
                "reward",
                "fold",
            ),
            on="exposure_id",
        )
        rows = rows.with_columns(
            (
                (pl.col("offer_id") == pl.col("logged_offer"))
                | (pl.col("offer_id").is_null() & pl.col("logged_offer").is_null())
            )
            .fill_null(False)
            .alias("is_logged"),
            pl.col("seller_id").fill_null(PLATFORM).alias("seller_key"),
        )
        parts = []
        for (day,), group in rows.group_by("_day", maintain_order=True):
            assert isinstance(day, datetime)
            described = describe(day, group.select("buyer_id", "offer_id", "seller_key"))
            parts.append(
                pl.concat(
                    [
                        group.drop("_day"),
                        described.drop("buyer_id", "offer_id", "seller_key", strict=False),
                    ],
                    how="horizontal",
                )
            )
        out = pl.concat(parts, how="diagonal_relaxed")
        kinds = offer_kinds(dataset)
        out = out.join(kinds, on="offer_id", how="left", maintain_order="left").with_columns(
            pl.col("kind").fill_null(NOTHING)
        )
        self.support_.rows = {
            "decisions": logged.height,
            "options": out.height,
            "control_decisions": int(logged["offer_id"].is_null().sum()),
        }
        return out.sort("exposure_id", "kind", "offer_id", nulls_last=True)

    def _numeric(self, options: pl.DataFrame) -> list[str]:
        return [
            c
            for c, dtype in options.schema.items()
            if dtype.is_numeric() and c not in NOT_FEATURES and not c.startswith("_")
        ]

    def _categorical(self, options: pl.DataFrame) -> list[str]:
        """The offer's kind, the journey stage and every categorical buyer attribute (the
        most frequent levels of each: `FeatureSpec`)."""
        return [
            "kind",
            *[
                c
                for c, dtype in options.schema.items()
                if (c == "journey_stage" or c.startswith(ATTRIBUTE_PREFIX)) and dtype == pl.String
            ],
        ]

    def _segments(self, options: pl.DataFrame) -> list[str]:
        """Categorical segments: the config's, else the journey stage and the buyers
        table's categorical attributes with at most `MAX_SEGMENT_LEVELS` levels."""
        if self.config.segments is not None:
            return [c for c in self.config.segments if c in options.columns]
        named = [
            c
            for c, dtype in options.schema.items()
            if (c == "journey_stage" or c.startswith(ATTRIBUTE_PREFIX)) and dtype == pl.String
        ]
        return [c for c in named if options[c].n_unique() <= MAX_SEGMENT_LEVELS]

    def _numeric_attributes(self, options: pl.DataFrame) -> list[str]:
        """The buyers table's numeric attributes: segments in quartile bands."""
        return [
            c
            for c, dtype in options.schema.items()
            if c.startswith(ATTRIBUTE_PREFIX) and dtype.is_numeric()
        ]

    def _outcome_config(self) -> OutcomeConfig:
        out = self.config.outcome.model_copy()
        out.folds = self.config.folds
        out.num_threads = self.config.num_threads
        return out

    def _candidates(
        self,
        segmentation: Segmentation,
        policy: PolicyConfig,
        names: list[str] | None = None,
    ) -> list[CandidateSpec]:
        cfg = self.config
        spec = self.spec_

        def structural(build_effects: Callable[[], object]) -> Callable[[], ValueModel]:
            return lambda: StructuralValues(effects=build_effects(), policy=policy)  # type: ignore[arg-type]

        builders: dict[str, tuple[int, Callable[[], ValueModel]]] = {
            "blanket": (1, lambda: BlanketValues(policy=policy, seed=cfg.seed)),
            "nothing": (1, structural(NoEffects)),
            "kind_effects": (2, structural(lambda: KindEffects(seed=cfg.seed))),
            "segment_effects": (
                3,
                structural(lambda: SegmentEffects(segmentation=segmentation, seed=cfg.seed)),
            ),
            "forest_effects": (
                4,
                structural(
                    lambda: ForestEffects(spec=spec, num_threads=cfg.num_threads, seed=cfg.seed)
                ),
            ),
        }
        return [
            CandidateSpec(name, *builders[name])
            for name in dict.fromkeys(names if names is not None else cfg.candidates)
        ]

    # ------------------------------------------------------------------ scoring

    def p_purchase(self, rows: pl.DataFrame) -> np.ndarray:
        """P(purchase at the seller in the window | no offer) for each row's buyer."""
        self.check_is_fitted("p_purchase")
        assert self.purchase_model_ is not None
        as_nothing = rows.with_columns(
            pl.lit(NOTHING).alias("kind"),
            *[pl.lit(None, pl.Float64).alias(c) for c in OFFER_COLUMNS if c in rows.columns],
        )
        return predict_outcome(
            self.purchase_model_, self.spec_.matrix(as_nothing), self.config.num_threads
        )

    @property
    def learned(self) -> bool:
        return self.is_fitted and self.model_ is not None

    def values(self, rows: pl.DataFrame) -> pl.DataFrame:
        """`p_purchase`, `uplift`, `expected_value`, `value_se`, `advantage_se`, `score`
        and `is_default` for candidate rows (buyer_id, seller_key, kind, features, money
        columns and p_redeem), in their order."""
        self.check_is_fitted("values")
        assert self.model_ is not None
        p0 = self.p_purchase(rows)
        rows = rows.with_columns(pl.Series("p_purchase", p0))
        values = self.model_.values(rows)
        defaults = self.model_.default_kind(rows["seller_key"])
        is_default = (rows["kind"] == defaults).fill_null(False).to_numpy()
        unit = rows.select(pl.struct("buyer_id", "seller_key").rank("dense")).to_series()
        se, adv_se, score = decision_scores(
            unit.cast(pl.Int64).to_numpy(), values.mean, values.draws, is_default, self.config.z
        )
        return pl.DataFrame(
            {
                "p_purchase": p0,
                "uplift": values.uplift,
                "expected_value": values.mean,
                "value_se": se,
                "advantage_se": adv_se,
                "score": score,
                "is_default": is_default,
            }
        ).with_columns(pl.col("uplift").fill_nan(None))

    def report(self) -> str:
        """The learning part of the fit report: support notes, candidates, the model."""
        lines = [*self.support_.notes]
        if self.selection_ is not None:
            lines.append(self.selection_.table())
        if self.model_ is not None:
            lines += self.model_.describe()
        return "\n".join(lines)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write the config and the fitted state to directory `path`."""
        self.check_is_fitted("save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.config.to_dict()))
        state = {
            "support": self.support_,
            "model": self.model_,
            "selection": self.selection_,
            "purchase_model": self.purchase_model_,
            "spec": self.spec_,
        }
        with (path / "learner.pkl").open("wb") as fh:
            pickle.dump(state, fh)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PolicyLearner:
        """Read a learner written by `save` (trusted files only: it unpickles)."""
        path = Path(path)
        learner = cls.from_config(json.loads((path / "config.json").read_text()))
        with (path / "learner.pkl").open("rb") as fh:
            state = pickle.load(fh)
        learner.support_ = state["support"]
        learner.model_ = state["model"]
        learner.selection_ = state["selection"]
        learner.purchase_model_ = state["purchase_model"]
        learner.spec_ = state["spec"]
        learner._fitted = True
        return learner
