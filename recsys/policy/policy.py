"""The offer policy: from scored candidates to one decision per buyer, with reasons.

:class:`OfferPolicy` chains the pure steps of the package::

    validate_candidates -> filter_eligible -> expected_incremental_profit
        -> candidate_reason_codes -> allocate (budgets, shadow prices)
        -> exploration (epsilon-greedy / softmax, exact propensities) -> reasons

``decide`` answers a batch (a campaign, a nightly run); ``rank`` answers an API request
for a buyer's top offers. Everything is a function of its inputs and the seeded
generator: no clock, no I/O.

With exploration the *exploit* action of each unit is the budgeted choice, so budgets
hold exactly for it; an explored action is not dropped when it overspends (that would
make the logged propensity wrong), so keep ``epsilon`` small where budgets are tight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import numpy as np
import polars as pl

from recsys.policy.budget import allocate, unit_keys
from recsys.policy.config import PLATFORM_BUDGET_KEY, PROFIT_EPS, PolicyConfig
from recsys.policy.eligibility import RequestContext, filter_eligible
from recsys.policy.explore import Exploration, epsilon_greedy, softmax
from recsys.policy.reasons import (
    REJECTION_ORDER,
    Reason,
    batch_cap_text,
    candidate_reason_codes,
    candidate_reason_text,
    exploration_text,
    nothing_text,
    over_budget_text,
    text_by_case,
    values_by_case,
)
from recsys.policy.schema import validate_candidates
from recsys.policy.value import value_of, with_value


@dataclass(frozen=True)
class Decisions:
    """The outcome of :meth:`OfferPolicy.decide`.

    Attributes
    ----------
    ranked
        Every eligible candidate, sorted by buyer and best first, with ``expected_value``,
        ``value_basis``, ``spend``, ``shadow_price``, ``rank`` (1 = best for the buyer) and
        ``reason_codes``; add sentences to any subset with
        :func:`~recsys.policy.candidate_reason_text` (formatting them costs more than
        deciding, so it is done for the chosen rows only).
    chosen
        One row per decision unit (per buyer, or per buyer and seller with
        ``one_offer_per="seller"``): ``offer_id`` (null = nothing), ``tool``,
        ``expected_value`` (0 for nothing), ``spend``, ``shadow_price``, ``propensity``
        (exact probability of this action; 1.0 without exploration), ``explored``,
        ``reason_codes`` (main first) and ``reason_text``.
    rejected
        Ineligible candidates with ``reason_code`` and ``reason_text``.
    budgets
        Per budget key: ``budget``, ``spend``, ``shadow_price``, ``n_picks`` (the exploit
        choice; exploration can move spend away from it).
    probabilities
        With exploration, every option of every unit with its ``probability``.
    """

    ranked: pl.DataFrame
    chosen: pl.DataFrame
    rejected: pl.DataFrame
    budgets: pl.DataFrame
    probabilities: pl.DataFrame | None = None


class OfferPolicy:
    """Decides which offer, if any, each buyer gets (see the module docstring)."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        if config is not None and not isinstance(config, PolicyConfig):
            raise TypeError(
                f"OfferPolicy takes a PolicyConfig, got {type(config).__name__}; use "
                "OfferPolicy.from_config(...) to build one from a mapping"
            )
        self.config = config if config is not None else PolicyConfig()

    @classmethod
    def from_config(cls, config: PolicyConfig | Mapping[str, Any]) -> Self:
        """Build from a config object or its plain-dict form."""
        if isinstance(config, Mapping):
            config = PolicyConfig.from_dict(dict(config), source=cls.__name__)
        return cls(config)

    def get_config(self) -> PolicyConfig:
        """A copy of the config (changing it does not change the policy)."""
        return self.config.model_copy(deep=True)

    def _score(
        self,
        candidates: pl.DataFrame,
        as_of: datetime,
        history: pl.DataFrame | None,
        context: RequestContext | Mapping[str, Any] | None,
    ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """Validated candidates, valued and coded eligible rows, and rejected rows.

        The valued rows are sorted by buyer, best first, with their ``rank``.
        """
        cfg = self.config
        validated = validate_candidates(candidates)
        elig = filter_eligible(validated, as_of, cfg, history=history, context=context)
        value = value_of(elig.eligible, cfg)
        valued = with_value(elig.eligible, value, "spend")
        valued = candidate_reason_codes(valued, value.case).sort(
            ["buyer_id", "score", "offer_id"], descending=[False, True, False]
        )
        valued = valued.with_columns(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("buyer_id").alias("rank")
        )
        return validated, valued, elig.rejected

    def value(
        self,
        candidates: pl.DataFrame,
        as_of: datetime,
        history: pl.DataFrame | None = None,
        context: RequestContext | Mapping[str, Any] | None = None,
    ) -> pl.DataFrame:
        """Every eligible candidate valued, without deciding: ``expected_value``,
        ``spend``, ``reason_codes`` and ``rank``, sorted by buyer, best first (what
        :meth:`decide` chooses from; a campaign planner makes its own choice from it)."""
        return self._score(candidates, as_of, history, context)[1]

    def decide(
        self,
        candidates: pl.DataFrame,
        as_of: datetime,
        history: pl.DataFrame | None = None,
        context: RequestContext | Mapping[str, Any] | None = None,
        rng: np.random.Generator | None = None,
    ) -> Decisions:
        """Decide a batch: one action per decision unit, under caps and budgets.

        ``history``: past exposures (buyer_id, offer_id, ts[, tool]) for frequency caps.
        ``context``: a :class:`RequestContext` (seller scope, cart value). ``rng``: the
        generator for exploration; by default ``numpy.random.default_rng(config.seed)``.
        """
        cfg = self.config
        keys = unit_keys(cfg.one_offer_per)
        validated, valued, rejected = self._score(candidates, as_of, history, context)
        alloc = allocate(valued, cfg)
        prices = alloc.sellers.select("budget_key", "shadow_price")
        valued = (
            valued.with_columns(
                pl.col("seller_id").fill_null(PLATFORM_BUDGET_KEY).alias("budget_key")
            )
            .join(prices, on="budget_key", how="left", maintain_order="left")
            .with_columns(pl.col("shadow_price").fill_null(0.0))
            .drop("budget_key")
        )

        probabilities = None
        if cfg.exploration == "none":
            chosen = alloc.picks.select(*keys, "offer_id").with_columns(
                pl.lit(1.0).alias("propensity"), pl.lit(False).alias("explored")
            )
        else:
            rng = rng if rng is not None else np.random.default_rng(cfg.seed)
            result = self._explore(valued, alloc.picks, keys, rng)
            chosen = result.chosen.select(
                *keys, "offer_id", pl.col("probability").alias("propensity"), "explored"
            )
            if result.probabilities is not None:
                probabilities = result.probabilities.drop("_exploit", strict=False)
        # Every unit gets a row; a unit without a chosen offer gets "nothing" (certain
        # when it had no eligible offer, so its propensity is 1).
        units = _units(validated, rejected, keys, cfg.one_offer_per)
        chosen = units.join(
            chosen, on=keys, how="left", nulls_equal=True, maintain_order="left"
        ).with_columns(pl.col("propensity").fill_null(1.0), pl.col("explored").fill_null(False))
        chosen = _explain(chosen, valued, rejected, keys, cfg.assumed_incremental_share)
        return Decisions(
            ranked=valued,
            chosen=chosen,
            rejected=rejected,
            budgets=alloc.sellers,
            probabilities=probabilities,
        )

    def _explore(
        self,
        valued: pl.DataFrame,
        picks: pl.DataFrame,
        keys: list[str],
        rng: np.random.Generator,
    ) -> Exploration:
        """Draw one action per unit; the exploit action is the budgeted choice."""
        cfg = self.config
        if cfg.exploration == "epsilon":
            flagged = valued.join(
                picks.select("buyer_id", "offer_id").with_columns(pl.lit(True).alias("_exploit")),
                on=["buyer_id", "offer_id"],
                how="left",
            )
            values = flagged.select(*keys, "offer_id", "score", "_exploit")
            return epsilon_greedy(
                values,
                cfg.epsilon,
                rng,
                keys=keys,
                value="score",
                exploit="_exploit",
                return_table=True,
            )
        # Softmax over budget-priced scores: score - shadow_price * spend.
        values = valued.select(
            *keys,
            "offer_id",
            (pl.col("score") - pl.col("shadow_price") * pl.col("spend")).alias("score"),
        )
        return softmax(values, cfg.temperature, rng, keys=keys, value="score", return_table=True)

    def rank(
        self,
        candidates: pl.DataFrame,
        k: int,
        *,
        as_of: datetime | None = None,
        history: pl.DataFrame | None = None,
        context: RequestContext | Mapping[str, Any] | None = None,
    ) -> pl.DataFrame:
        """Top-``k`` offers per buyer, best first, only those worth more than nothing.

        A buyer for whom no offer beats sending nothing gets exactly one row with
        ``offer_id`` null, ``no_offer`` True and the reason (NOTHING_BEATS_NO_OFFER,
        WOULD_BUY_ANYWAY, or why every offer was ineligible). Budgets are a batch matter and
        are not applied here. ``as_of`` defaults to the current UTC time.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        share = self.config.assumed_incremental_share
        when = as_of if as_of is not None else datetime.now(UTC)
        validated, valued, rejected = self._score(candidates, when, history, context)
        top = candidate_reason_text(
            valued.filter((pl.col("score") > PROFIT_EPS) & (pl.col("rank") <= k)),
            assumed_share=share,
        ).select(RANK_COLUMNS)
        units = _units(validated, rejected, ["buyer_id"], "buyer")
        nothing = units.join(top.select("buyer_id").unique(), on="buyer_id", how="anti")
        nothing = _explain(
            nothing.with_columns(
                pl.lit(None, dtype=pl.String).alias("offer_id"),
                pl.lit(1.0).alias("propensity"),
                pl.lit(False).alias("explored"),
            ),
            valued.with_columns(pl.lit(0.0).alias("shadow_price")),
            rejected,
            ["buyer_id"],
            share,
        )
        nothing = nothing.with_columns(
            pl.lit(None, dtype=pl.String).alias("seller_id"),
            pl.lit(None, dtype=pl.Float64).alias("p_redeem"),
            pl.lit(None, dtype=pl.Float64).alias("uplift"),
        ).select(RANK_COLUMNS)
        out = pl.concat([top, nothing], how="vertical_relaxed")
        return (
            out.with_columns(
                pl.col("offer_id").is_null().alias("no_offer"),
                pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("buyer_id").alias("rank"),
            )
            .sort("buyer_id", "rank")
            .select("buyer_id", "rank", *RANK_COLUMNS[1:], "no_offer")
        )


RANK_COLUMNS: tuple[str, ...] = (
    "buyer_id",
    "offer_id",
    "seller_id",
    "tool",
    "expected_value",
    "p_redeem",
    "uplift",
    "value_basis",
    "reason_codes",
    "reason_text",
)
"""Columns of :meth:`OfferPolicy.rank` (plus ``rank`` and ``no_offer``)."""


def _units(
    validated: pl.DataFrame, rejected: pl.DataFrame, keys: list[str], one_offer_per: str
) -> pl.DataFrame:
    """The decision units a batch answers for, in first-appearance order.

    Per buyer: every buyer of the input. Per buyer and seller: every pair with an offer in
    the request's seller scope (another seller's pairs are not this request's business).
    """
    if one_offer_per == "buyer":
        return validated.select(keys).unique(maintain_order=True)
    out_of_scope = rejected.filter(pl.col("reason_code") == Reason.OUT_OF_SELLER_SCOPE.value)
    return (
        validated.join(
            out_of_scope.select("buyer_id", "offer_id"), on=["buyer_id", "offer_id"], how="anti"
        )
        .select(keys)
        .unique(maintain_order=True)
    )


_TEXT_COLUMNS = (
    "tool",
    "expected_value",
    "score",
    "value_basis",
    "spend",
    "shadow_price",
    "p_purchase",
    "p_redeem",
    "incremental_p",
    "redemption_cost",
    "min_spend",
    "reason_codes",
)


def _explain(
    chosen: pl.DataFrame,
    valued: pl.DataFrame,
    rejected: pl.DataFrame,
    keys: list[str],
    assumed_share: float,
) -> pl.DataFrame:
    """Add the chosen action's columns and its ``reason_codes`` / ``reason_text``.

    ``chosen`` has the unit keys, ``offer_id`` (null = nothing), ``propensity`` and
    ``explored``; ``valued`` the coded eligible rows sorted best first per buyer (with
    ``spend``, ``shadow_price``). A "nothing" is explained by the unit's best eligible
    offer: beaten by the budget's shadow price (OVER_BUDGET), by the buyer's cap allowance
    within the batch (FREQUENCY_CAP), or not worth its cost (WOULD_BUY_ANYWAY /
    NOTHING_BEATS_NO_OFFER); with no eligible offer, by the rejections.
    """
    cols = ["buyer_id", "offer_id", *_TEXT_COLUMNS]
    offers = valued.join(
        chosen.filter(pl.col("offer_id").is_not_null()).select("buyer_id", "offer_id"),
        on=["buyer_id", "offer_id"],
        how="semi",
    ).select(cols)
    offers = candidate_reason_text(offers, assumed_share=assumed_share)
    best = valued.filter(pl.int_range(pl.len()).over(keys) == 0).select(*keys, *cols[1:])
    # Only a "nothing" quotes its best offer's sentences: word those alone.
    best_text = candidate_reason_text(
        best.join(
            chosen.filter(pl.col("offer_id").is_null()).select(keys),
            on=keys,
            how="semi",
            nulls_equal=True,
        ),
        assumed_share=assumed_share,
    ).select(*keys, "reason_text")
    best = best.join(best_text, on=keys, how="left", nulls_equal=True).select(
        *keys,
        pl.col("expected_value").alias("_best_value"),
        pl.col("score").alias("_best_score"),
        pl.col("spend").alias("_best_spend"),
        pl.col("shadow_price").alias("_best_price"),
        pl.col("reason_codes").alias("_best_codes"),
        pl.col("reason_text").alias("_best_text"),
    )
    out = chosen.join(offers, on=["buyer_id", "offer_id"], how="left", maintain_order="left").join(
        best, on=keys, how="left", nulls_equal=True, maintain_order="left"
    )
    if rejected.height:
        out = out.join(
            _rejection_summary(rejected, keys),
            on=keys,
            how="left",
            nulls_equal=True,
            maintain_order="left",
        )
    else:
        out = out.with_columns(
            pl.lit(None, pl.List(pl.String)).alias("_rej_codes"),
            pl.lit(None, pl.String).alias("_rej_text"),
        )
    nothing = pl.col("offer_id").is_null()
    explored = pl.col("explored")
    has_best = pl.col("_best_value").is_not_null()
    positive = has_best & (pl.col("_best_score") > PROFIT_EPS)
    by_budget = positive & (pl.col("_best_price") > 0)
    anyway = has_best & (pl.col("_best_codes").list.first() == Reason.WOULD_BUY_ANYWAY.value)
    case = (
        pl.when(explored & ~nothing)
        .then(pl.lit("explored_offer"))
        .when(explored)
        .then(pl.lit("explored_nothing"))
        .when(~nothing)
        .then(pl.lit("offer"))
        .when(by_budget)
        .then(pl.lit("budget"))
        .when(positive)
        .then(pl.lit("cap"))
        .when(anyway)
        .then(pl.lit("anyway"))
        .when(has_best)
        .then(pl.lit("nothing"))
        .otherwise(pl.lit("rejected"))
    )
    # A "nothing" row quotes its best offer's numbers.
    out = out.with_columns(
        case.alias("_case"),
        pl.coalesce("expected_value", "_best_value").alias("expected_value"),
        pl.coalesce("spend", "_best_spend").alias("spend"),
        pl.coalesce("shadow_price", "_best_price").alias("shadow_price"),
    )
    str_list = pl.List(pl.String)

    def codes_of(*items: Reason) -> pl.Expr:
        return pl.lit([r.value for r in items], dtype=str_list)

    codes = values_by_case(
        out,
        pl.col("_case"),
        {
            "explored_offer": pl.concat_list(codes_of(Reason.EXPLORATION), "reason_codes"),
            "explored_nothing": codes_of(Reason.EXPLORATION),
            "offer": pl.col("reason_codes"),
            "budget": codes_of(Reason.OVER_BUDGET),
            "cap": codes_of(Reason.FREQUENCY_CAP),
            "anyway": pl.concat_list("_best_codes", codes_of(Reason.NOTHING_BEATS_NO_OFFER)),
            "nothing": pl.concat_list(codes_of(Reason.NOTHING_BEATS_NO_OFFER), "_best_codes"),
            "rejected": pl.col("_rej_codes").fill_null(codes_of(Reason.NO_ELIGIBLE_OFFER)),
        },
        str_list,
    )
    texts = text_by_case(
        out,
        pl.col("_case"),
        {
            "explored_offer": pl.concat_str(
                [exploration_text(), pl.col("reason_text")], separator="; "
            ),
            "explored_nothing": exploration_text(),
            "offer": pl.col("reason_text"),
            "budget": over_budget_text(),
            "cap": batch_cap_text(),
            "anyway": pl.col("_best_text"),
            "nothing": pl.concat_str([nothing_text(), pl.col("_best_text")], separator="; "),
            "rejected": pl.col("_rej_text").fill_null("the buyer has no eligible offer"),
        },
    )
    out = out.with_columns(codes.alias("reason_codes"), texts.alias("reason_text"))
    # The chosen action's own numbers: "nothing" is worth 0 and spends 0.
    return out.select(
        *keys,
        "offer_id",
        "tool",
        pl.when(nothing).then(0.0).otherwise(pl.col("expected_value")).alias("expected_value"),
        "value_basis",
        pl.when(nothing).then(0.0).otherwise(pl.col("spend")).alias("spend"),
        pl.when(nothing).then(None).otherwise(pl.col("shadow_price")).alias("shadow_price"),
        "propensity",
        "explored",
        "reason_codes",
        "reason_text",
    )


def _rejection_summary(rejected: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per unit: its rejection codes (furthest check first) and the first one's text."""
    order = [r.value for r in REJECTION_ORDER]
    ranked = rejected.select(*keys, "reason_code", "reason_text").with_columns(
        pl.col("reason_code")
        .replace_strict(order, list(range(len(order))), default=len(order))
        .alias("_order")
    )
    return (
        ranked.sort([*keys, "_order"])
        .group_by(keys, maintain_order=True)
        .agg(
            pl.col("reason_code").unique(maintain_order=True).alias("_rej_codes"),
            pl.col("reason_text").first().alias("_rej_text"),
        )
    )
