"""Deciding a batch of ranking requests on the served state: lookups and array operations.

Every request of a batch is one decision unit. Its options are its buyer's kept options
for the offers valid now (cut to its seller scope), or its named offers scored afresh;
all the batch's options go through the policy's array rules at once
(:mod:`recsys.policy.arrays`: eligibility with the request's scope, cart and the buyer's
recent offers, ranking, the choice and its exact propensity), and only the rows an
answer lists are turned into objects and sentences (:mod:`recsys.policy.sentences`).
Budgets are a batch matter and do not apply to a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from recsys.policy import arrays
from recsys.policy.config import PROFIT_EPS, PolicyConfig
from recsys.policy.reasons import Reason
from recsys.policy.sentences import (
    budget_sentence,
    candidate_text,
    cap_reached_sentence,
    cap_sentence,
    exploration_sentence,
    min_spend_sentence,
    nothing_sentence,
    scope_sentence,
    validity_sentence,
)
from serving.history import ExposureHistory
from serving.schemas import RankedOffer, RankRequest
from serving.served_state import (
    CASE,
    EXPECTED_VALUE,
    INCREMENTAL_P,
    MIN_SPEND,
    NO_OPTIONS,
    P_PURCHASE,
    P_REDEEM,
    REDEMPTION_COST,
    SCORE,
    SPEND,
    UPLIFT,
    VALUE_SE,
    OfferCatalog,
    Options,
    OptionStore,
    micros,
)

TS_FORMAT = "%Y-%m-%d %H:%M"


@dataclass(frozen=True)
class Plan:
    """One checked request: its seller scope and its explicit offers (None: all valid)."""

    request: RankRequest
    scope: str | None
    offer_ids: tuple[str, ...] | None


@dataclass(frozen=True)
class Answer:
    """What one request is answered with: listed offers (first = the action), the reason
    for no offer, whether the action was explored, its exact propensity, and the seller
    the decision is logged under."""

    offers: list[RankedOffer]
    reason: str | None
    explored: bool
    propensity: float
    seller: str | None


class RequestDecider:
    """Decides batches of requests with one policy on one served model's state.

    `config` is the serving policy without budgets, one offer per request.
    """

    def __init__(self, store: OptionStore, config: PolicyConfig, history: ExposureHistory) -> None:
        self.store = store
        self.catalog: OfferCatalog = store.catalog
        self.config = config
        self.history = history
        self._capped = config.max_offers_per_buyer is not None or config.max_per_tool is not None

    def decide(
        self, plans: Sequence[Plan], now: datetime, rng: np.random.Generator
    ) -> list[Answer]:
        """Answer every plan (no side effects). Cost: a lookup per request plus array
        work on the batch's options, and sentences for the listed rows only."""
        catalog, cfg = self.catalog, self.config
        now_us = micros(now)
        valid = catalog.valid(now_us)
        kept = self.store.for_buyers(
            [p.request.buyer_id for p in plans if p.offer_ids is None], valid
        )
        named = self._named(plans)
        parts: list[Options] = []
        for plan in plans:
            buyer = plan.request.buyer_id
            if plan.offer_ids is None:
                options = kept.get(buyer, NO_OPTIONS)
                if plan.scope is not None and len(options):
                    code = catalog.scope_code(plan.scope)
                    options = options.take(catalog.seller_code[options.offer] == code)
            else:
                options = named.get(buyer, NO_OPTIONS)
                wanted = np.array([catalog.index[o] for o in plan.offer_ids], dtype=np.int64)
                options = options.take(np.flatnonzero(np.isin(options.offer, wanted)))
            parts.append(options)
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        every = Options.concat(parts)
        unit = np.repeat(np.arange(len(plans), dtype=np.int64), sizes)
        scope = np.array([catalog.scope_code(p.scope) for p in plans], dtype=np.int64)
        cart = np.array(
            [
                p.request.context.cart_value
                if p.request.context is not None and p.request.context.cart_value is not None
                else np.nan
                for p in plans
            ],
            dtype=np.float64,
        )
        n_buyer, n_tool = self._cap_counts(plans, unit, every.offer, now)
        verdict, unverified = arrays.eligibility(
            start_us=catalog.start_us[every.offer],
            end_us=catalog.end_us[every.offer],
            now_us=now_us,
            seller=catalog.seller_code[every.offer],
            scope=scope[unit],
            min_spend=every.num[:, MIN_SPEND],
            cart=cart[unit],
            n_buyer=n_buyer,
            n_tool=n_tool,
            max_per_buyer=cfg.max_offers_per_buyer,
            max_per_tool=cfg.max_per_tool,
        )
        eligible = np.flatnonzero(verdict == arrays.ELIGIBLE)
        order = eligible[
            arrays.rank_order(unit[eligible], every.num[eligible, SCORE], every.offer[eligible])
        ]
        starts = arrays.run_starts(unit[order])
        choice = arrays.choose(starts, every.num[order, SCORE], cfg, rng)
        ends = np.r_[starts[1:], len(order)]
        decided = {int(unit[order[s]]): i for i, s in enumerate(starts)}
        rejected = {
            int(unit[r]): int(r) for r in arrays.first_rejection(unit, verdict, every.offer)
        }
        rows = _Rows(every, unverified, cfg.assumed_incremental_share, catalog)
        answers = []
        for u, plan in enumerate(plans):
            if u in decided:
                i = decided[u]
                answers.append(
                    self._decided(
                        rows,
                        order[starts[i] : ends[i]],
                        int(choice.row[i] - starts[i]) if choice.row[i] >= 0 else -1,
                        float(choice.propensity[i]),
                        bool(choice.explored[i]),
                        choice.option_p[starts[i] : ends[i]],
                        plan,
                    )
                )
            elif u in rejected:
                r = rejected[u]
                text = self._rejection_text(
                    every, r, int(verdict[r]), plan, n_buyer[r], n_tool[r], now
                )
                answers.append(
                    Answer([], f"{catalog.ids[every.offer[r]]}: {text}", False, 1.0, plan.scope)
                )
            else:
                answers.append(
                    Answer([], nothing_valid_text(plan.scope, now), False, 1.0, plan.scope)
                )
        return answers

    def _named(self, plans: Sequence[Plan]) -> dict[str, Options]:
        """Options of the requests naming their offers, scored afresh (one model call)."""
        pairs = [(p.request.buyer_id, o) for p in plans if p.offer_ids for o in p.offer_ids]
        if not pairs:
            return {}
        return self.store.score_pairs([b for b, _ in pairs], [o for _, o in pairs])

    def _cap_counts(
        self,
        plans: Sequence[Plan],
        unit: NDArray[np.int64],
        offer: NDArray[np.int64],
        now: datetime,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Per option, its buyer's recent offers and recent offers of its tool."""
        n_buyer = np.zeros(len(unit), dtype=np.int64)
        n_tool = np.zeros(len(unit), dtype=np.int64)
        if not self._capped or len(unit) == 0:
            return n_buyer, n_tool
        catalog = self.catalog
        since = now - timedelta(days=self.config.cap_window_days)
        tool_index = {t: i for i, t in enumerate(catalog.tool_names)}
        starts = np.searchsorted(unit, np.arange(len(plans)))
        ends = np.searchsorted(unit, np.arange(len(plans)), side="right")
        for u, plan in enumerate(plans):
            if starts[u] == ends[u]:
                continue
            recent = self.history.recent(plan.request.buyer_id, since, now)
            if not recent:
                continue
            per_tool = np.zeros(len(catalog.tool_names) + 1, dtype=np.int64)
            for offer_id, tool in recent:
                if tool is None and offer_id in catalog.index:
                    tool = catalog.tools[catalog.index[offer_id]]
                if tool in tool_index:
                    per_tool[tool_index[tool]] += 1
            rows = slice(starts[u], ends[u])
            n_buyer[rows] = len(recent)
            n_tool[rows] = per_tool[catalog.tool_code[offer[rows]]]
        return n_buyer, n_tool

    def _decided(
        self,
        rows: _Rows,
        ranked: NDArray[np.int64],
        chosen: int,
        propensity: float,
        explored: bool,
        option_p: NDArray[np.float64],
        plan: Plan,
    ) -> Answer:
        """The answer of a unit with eligible options (`ranked`, best first; `chosen` the
        position of the action, -1 = nothing)."""
        best = int(ranked[0])
        case = arrays.outcome(
            offered=chosen >= 0,
            explored=explored,
            best_score=float(rows.options.num[best, SCORE]),
            best_price=0.0,
            best_case=int(rows.options.num[best, CASE]),
        )
        if chosen < 0:
            codes, text = rows.explain_nothing(best, case, propensity)
            del codes  # a "nothing" answer carries its sentence only
            return Answer([], text, explored, propensity, plan.scope)
        action = int(ranked[chosen])
        codes = rows.codes(action)
        text = rows.text(action)
        if explored:
            codes = [Reason.EXPLORATION.value, *codes]
            text = f"{exploration_sentence(propensity)}; {text}"
        listed = [rows.offer(action, propensity, codes, text)]
        k = plan.request.k
        for position, row in enumerate(ranked):
            if len(listed) >= k:
                break
            if position == chosen or rows.options.num[row, SCORE] <= PROFIT_EPS:
                continue
            listed.append(
                rows.offer(
                    int(row), float(option_p[position]), rows.codes(int(row)), rows.text(int(row))
                )
            )
        return Answer(listed, None, explored, propensity, listed[0].seller_id)

    def _rejection_text(
        self,
        options: Options,
        row: int,
        verdict: int,
        plan: Plan,
        n_buyer: int,
        n_tool: int,
        now: datetime,
    ) -> str:
        """The sentence of the eligibility rule option `row` breaks."""
        catalog, cfg = self.catalog, self.config
        offer = int(options.offer[row])
        if verdict == arrays.OUTSIDE_VALIDITY:
            return validity_sentence(catalog.starts[offer], catalog.ends[offer], now)
        if verdict == arrays.OUT_OF_SELLER_SCOPE:
            return scope_sentence(catalog.sellers[offer], plan.scope)
        if verdict == arrays.BELOW_MIN_SPEND:
            assert plan.request.context is not None and plan.request.context.cart_value is not None
            return min_spend_sentence(
                plan.request.context.cart_value, float(options.num[row, MIN_SPEND])
            )
        return cap_reached_sentence(
            int(n_buyer),
            int(n_tool),
            catalog.tools[offer],
            cfg.max_offers_per_buyer,
            cfg.max_per_tool,
            cfg.cap_window_days,
        )


class _Rows:
    """Codes, sentences and API objects of single options, made only when listed."""

    def __init__(
        self,
        options: Options,
        unverified: NDArray[np.bool_],
        assumed_share: float,
        catalog: OfferCatalog,
    ) -> None:
        self.options = options
        self.unverified = unverified
        self.share = assumed_share
        self.catalog = catalog

    def codes(self, row: int) -> list[str]:
        return arrays.reason_codes(int(self.options.num[row, CASE]), bool(self.unverified[row]))

    def fields(self, row: int) -> dict[str, Any]:
        num = self.options.num[row]
        return {
            "reason_codes": self.codes(row),
            "expected_value": float(num[EXPECTED_VALUE]),
            "incremental_p": float(num[INCREMENTAL_P]),
            "p_redeem": float(num[P_REDEEM]),
            "p_purchase": float(num[P_PURCHASE]),
            "redemption_cost": float(num[REDEMPTION_COST]),
            "min_spend": float(num[MIN_SPEND]),
        }

    def text(self, row: int) -> str:
        return candidate_text(self.fields(row), self.share)

    def explain_nothing(self, best: int, case: str, propensity: float) -> tuple[list[str], str]:
        """Codes and sentences of a "nothing", quoting the unit's best option."""
        value = float(self.options.num[best, EXPECTED_VALUE])
        codes = self.codes(best)
        if case == arrays.OUTCOME_EXPLORED_NOTHING:
            return [Reason.EXPLORATION.value], exploration_sentence(propensity)
        if case == arrays.OUTCOME_BUDGET:
            spend = float(self.options.num[best, SPEND])
            return [Reason.OVER_BUDGET.value], budget_sentence(value, spend, 0.0)
        if case == arrays.OUTCOME_CAP:
            return [Reason.FREQUENCY_CAP.value], cap_sentence(value)
        if case == arrays.OUTCOME_ANYWAY:
            return [*codes, Reason.NOTHING_BEATS_NO_OFFER.value], self.text(best)
        return (
            [Reason.NOTHING_BEATS_NO_OFFER.value, *codes],
            f"{nothing_sentence(value)}; {self.text(best)}",
        )

    def offer(self, row: int, propensity: float, codes: list[str], text: str) -> RankedOffer:
        num = self.options.num[row]
        offer = int(self.options.offer[row])
        uplift, value_se = float(num[UPLIFT]), float(num[VALUE_SE])
        return RankedOffer(
            offer_id=self.catalog.ids[offer],
            seller_id=self.catalog.sellers[offer],
            tool=self.catalog.tools[offer],
            score=float(num[SCORE]),
            expected_value=float(num[EXPECTED_VALUE]),
            value_se=None if np.isnan(value_se) else value_se,
            p_redeem=float(num[P_REDEEM]),
            uplift=None if np.isnan(uplift) else uplift,
            propensity=propensity,
            reasons=text.split("; ") if text else [],
            reason_codes=codes,
        )


def nothing_valid_text(scope: str | None, now: datetime) -> str:
    """Why a request had no offer to rank at all."""
    when = now.strftime(TS_FORMAT) + " UTC"
    if scope is None:
        return f"no offer is valid at {when}"
    return f"seller {scope!r} has no offer valid at {when}"
