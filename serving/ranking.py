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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from recsys.policy import arrays
from recsys.policy.config import PROFIT_EPS, PolicyConfig
from recsys.policy.reasons import Reason
from recsys.policy.sentences import (
    budget_sentence,
    candidate_sentences,
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
    p_nothing: float = 1.0
    """The policy's probability of "nothing" for the request (the holdout's joint
    propensity of a "nothing" needs it, whatever was drawn)."""


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
        self,
        plans: Sequence[Plan],
        now: datetime,
        rng: np.random.Generator | None,
        offer_scale: NDArray[np.float64],
    ) -> list[Answer]:
        """Answer every plan (no side effects); `rng` draws the exploration (None: the
        config's seed). `offer_scale`, per plan, multiplies the propensities of the
        offers it lists (a holdout's treated share, 1 without one:
        `serving.holdout.offer_scale`); the answer's own `propensity` and `p_nothing`
        stay the policy's. Cost: a lookup per request plus array work on the batch's
        options, and sentences for the listed rows only."""
        catalog, cfg = self.catalog, self.config
        now_us = micros(now)
        valid, tag = catalog.valid_set(now_us)
        kept = self.store.for_buyers(
            [p.request.buyer_id for p in plans if p.offer_ids is None], valid, tag
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
        listed = listed_positions(
            starts,
            every.num[order, SCORE],
            choice.row,
            np.array([p.request.k for p in plans], dtype=np.int64)[unit[order[starts]]],
        )
        # Rows quoted: each action, the listed others, and each unit's best (what explains
        # a "nothing", and what an explored action is judged against).
        needed = np.concatenate([choice.row[choice.row >= 0], listed, starts])
        rows = _Rows(every, order, needed, unverified, cfg.assumed_incremental_share, catalog)
        others: dict[int, list[int]] = {}
        for position, owner in zip(
            listed.tolist(), np.searchsorted(starts, listed, side="right").tolist(), strict=True
        ):
            others.setdefault(owner - 1, []).append(position)
        decided = {int(u): i for i, u in enumerate(unit[order[starts]].tolist())}
        rejected = {}
        if len(decided) < np.count_nonzero(sizes):  # some request has no eligible option
            rejected = {
                int(unit[r]): int(r) for r in arrays.first_rejection(unit, verdict, every.offer)
            }
        answers = []
        for u, plan in enumerate(plans):
            if u in decided:
                i = decided[u]
                answers.append(
                    self._decided(
                        rows,
                        int(starts[i]),
                        int(choice.row[i]),
                        float(choice.propensity[i]),
                        bool(choice.explored[i]),
                        [(p, float(choice.option_p[p])) for p in others.get(i, [])],
                        plan,
                        float(choice.nothing_p[i]),
                        float(offer_scale[u]),
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
        best: int,
        chosen: int,
        propensity: float,
        explored: bool,
        others: list[tuple[int, float]],
        plan: Plan,
        p_nothing: float,
        scale: float,
    ) -> Answer:
        """The answer of a unit with eligible options: `best` and `chosen` are ranked
        positions (-1 = nothing), `others` the listed positions after the action with
        their probabilities, `p_nothing` the unit's probability of nothing, `scale` the
        factor of the listed offers' propensities."""
        case = arrays.outcome(
            offered=chosen >= 0,
            explored=explored,
            best_score=rows.value(best, SCORE),
            best_price=0.0,
            best_case=int(rows.value(best, CASE)),
        )
        if chosen < 0:
            _, text = rows.explain_nothing(best, case, propensity)
            return Answer([], text, explored, propensity, plan.scope, p_nothing)
        codes, sentences = rows.described(chosen)
        if explored:
            codes = [Reason.EXPLORATION.value, *codes]
            sentences = [exploration_sentence(propensity), *sentences]
        listed = [rows.offer(chosen, propensity * scale, codes, sentences)]
        listed += [rows.offer(p, q * scale, *rows.described(p)) for p, q in others]
        return Answer(listed, None, explored, propensity, listed[0].seller_id, p_nothing)

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


def listed_positions(
    starts: NDArray[np.int64],
    score: NDArray[np.float64],
    chosen: NDArray[np.int64],
    k: NDArray[np.int64],
) -> NDArray[np.int64]:
    """Ranked positions listed after each unit's action: its other options worth more
    than nothing, best first, up to ``k - 1`` per unit (none when the action is nothing).

    ``starts``: each unit's first ranked position; ``chosen``: the action's position (-1 =
    nothing); ``k``: per unit. Cost: O(n).
    """
    counts = arrays.run_lengths(starts, len(score))
    owner = np.repeat(np.arange(len(starts)), counts)
    other = (score > PROFIT_EPS) & (np.arange(len(score)) != chosen[owner]) & (chosen[owner] >= 0)
    seen = np.cumsum(other)
    before = seen[starts] - other[starts] if len(starts) else seen[:0]
    rank = seen - before[owner] - 1 if len(starts) else seen
    return np.flatnonzero(other & (rank < k[owner] - 1)).astype(np.int64)


class _Rows:
    """Codes, sentences and API objects of the ranked options an answer lists, gathered
    from the arrays in one pass (`needed`: ranked positions) and made only when listed."""

    def __init__(
        self,
        options: Options,
        order: NDArray[np.int64],
        needed: NDArray[np.int64],
        unverified: NDArray[np.bool_],
        assumed_share: float,
        catalog: OfferCatalog,
    ) -> None:
        rows = order[needed]
        self._at = {int(p): i for i, p in enumerate(needed.tolist())}
        self._num: list[list[float]] = options.num[rows].tolist()
        self._offer: list[int] = options.offer[rows].tolist()
        self._unverified: list[bool] = unverified[rows].tolist()
        self.share = assumed_share
        self.catalog = catalog

    def value(self, position: int, column: int) -> float:
        return self._num[self._at[position]][column]

    def codes(self, position: int) -> list[str]:
        at = self._at[position]
        return arrays.reason_codes(int(self._num[at][CASE]), self._unverified[at])

    def described(self, position: int) -> tuple[list[str], list[str]]:
        """The option's reason codes and their sentences."""
        codes = self.codes(position)
        return codes, self.sentences(position, codes)

    def sentences(self, position: int, codes: list[str]) -> list[str]:
        num = self._num[self._at[position]]
        return candidate_sentences(
            codes,
            num[EXPECTED_VALUE],
            num[INCREMENTAL_P],
            num[P_REDEEM],
            num[P_PURCHASE],
            num[REDEMPTION_COST],
            num[MIN_SPEND],
            self.share,
        )

    def text(self, position: int) -> str:
        """The option's sentences as one reason text."""
        return "; ".join(self.sentences(position, self.codes(position)))

    def explain_nothing(self, best: int, case: str, propensity: float) -> tuple[list[str], str]:
        """Codes and sentences of a "nothing", quoting the unit's best option."""
        value = self.value(best, EXPECTED_VALUE)
        codes = self.codes(best)
        if case == arrays.OUTCOME_EXPLORED_NOTHING:
            return [Reason.EXPLORATION.value], exploration_sentence(propensity)
        if case == arrays.OUTCOME_BUDGET:
            return [Reason.OVER_BUDGET.value], budget_sentence(value, self.value(best, SPEND), 0.0)
        if case == arrays.OUTCOME_CAP:
            return [Reason.FREQUENCY_CAP.value], cap_sentence(value)
        if case == arrays.OUTCOME_ANYWAY:
            return [*codes, Reason.NOTHING_BEATS_NO_OFFER.value], self.text(best)
        return (
            [Reason.NOTHING_BEATS_NO_OFFER.value, *codes],
            f"{nothing_sentence(value)}; {self.text(best)}",
        )

    def offer(
        self, position: int, propensity: float, codes: list[str], sentences: list[str]
    ) -> RankedOffer:
        at = self._at[position]
        num, offer = self._num[at], self._offer[at]
        uplift, value_se = num[UPLIFT], num[VALUE_SE]
        return RankedOffer.trusted(
            {
                "offer_id": self.catalog.ids[offer],
                "seller_id": self.catalog.sellers[offer],
                "tool": self.catalog.tools[offer],
                "score": num[SCORE],
                "expected_value": num[EXPECTED_VALUE],
                "value_se": None if math.isnan(value_se) else value_se,
                "p_redeem": num[P_REDEEM],
                "uplift": None if math.isnan(uplift) else uplift,
                "propensity": propensity,
                "reasons": sentences,
                "reason_codes": codes,
            }
        )


def nothing_valid_text(scope: str | None, now: datetime) -> str:
    """Why a request had no offer to rank at all."""
    when = now.strftime(TS_FORMAT) + " UTC"
    if scope is None:
        return f"no offer is valid at {when}"
    return f"seller {scope!r} has no offer valid at {when}"
