"""The ranking service: the pure-Python heart that the Ray Serve app delegates to.

`RankingService` answers the API's questions with a fitted `PromoRanker` and the
`OfferPolicy`, with no Ray and no web framework, so every rule is tested in seconds:

- `rank`: which offers, if any, to give each buyer of a batch, best first. The batch is
  scored in one vectorized pass: every (request, offer) pair goes through
  `PromoRanker.candidates` once (unique pairs only) and `OfferPolicy.decide` once, with
  the *request* as the decision unit, so two requests for one buyer are two decisions.
  Each row carries its request's seller scope and cart, which the policy's eligibility
  checks per row (validity, scope, minimum spend, caps: one set of rules and words).
  Exploration (epsilon-greedy, softmax) and its exact propensities come from the policy.
- `record_outcomes`: redemptions reported against decision ids become the contract's
  `redemptions` rows (`serving.outcomes`: any replica's decisions, checked windows,
  stored once).
- `campaigns`: a seller's recommended campaigns within a budget (`recsys.campaigns`:
  audiences x offers, compared with no campaign and coupon-to-all), and each campaign's
  target list; cached per seller, model version, set of valid offers and budget.

Every decision becomes one `exposures` row of the decision log (`exposure_id` = the
decision id, the exact propensity of the action taken, `policy` = the model version), so
the next training run and off-policy evaluation can use what the service did.

Frequency caps hold across requests: the offers the service gives are remembered
(`serving.history`) and each request is decided with its buyer's recent ones. Two
requests for one buyer in the same batch are decided independently. Budgets are a batch
matter: `rank` does not apply them; `campaigns` plans within the seller's budget.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from recsys.campaigns import (
    AudienceKind,
    CampaignPlan,
    PlannerConfig,
    plan_campaigns,
    stage_audiences,
    taste_audiences,
)
from recsys.data.schema import EXPOSURES
from recsys.features.pairs import seller_id_of_key
from recsys.models.ranker import PromoRanker
from recsys.policy import (
    DESCRIPTIONS,
    OfferPolicy,
    PolicyConfig,
    Reason,
)
from recsys.policy.eligibility import REQUEST_CART, REQUEST_SELLER, as_utc, valid_at
from recsys.policy.holdout import CONTROL, HoldoutConfig
from recsys.policy.small import candidate_text, decide_small, first_rejection
from recsys.policy.small import supports as small_path_supports
from recsys.policy.value import PROFIT_EPS
from serving.answers import (
    TS_FORMAT,
    UNIT,
    listed_answers,
    nothing_probabilities,
    rejection_summary,
)
from serving.auth import ADMIN_PRINCIPAL, AccessError, ForbiddenError, KeyRing, Principal
from serving.decision_index import Decision, DecisionIndex
from serving.decision_log import DecisionLog
from serving.history import ExposureHistory
from serving.holdout import Arms, assign_arms, hold_out
from serving.outcomes import OutcomeRecorder, UnknownOfferError
from serving.schemas import (
    Alternative,
    BuyerInfo,
    Campaign,
    CampaignsResponse,
    GainPoint,
    Outcome,
    OutcomesResponse,
    RankedOffer,
    RankRequest,
    RankResponse,
)
from serving.score_cache import ScoreCache

DEFAULT_SCORE_CACHE_ROWS = 1_000_000
"""Candidate rows kept by the score cache (about 0.3 KB each)."""

CAMPAIGN_CACHE_SIZE = 64
"""Campaign plans kept (one per seller, model version, offer set, budget and audience)."""

SELLER_SCORE_CACHE_SIZE = 16
"""Scored candidate frames of sellers kept for planning (one per seller and offer set)."""

_WARM_UP_BUYER = "__warm_up__"


def now_utc() -> datetime:
    """The current time, timezone-aware UTC (the service's default clock)."""
    return datetime.now(UTC)


def clock_from(start: datetime) -> Callable[[], datetime]:
    """A clock that reads `start` now and runs at the real pace from there (`as_of`)."""
    began = time.monotonic()
    start = as_utc(start)
    return lambda: start + timedelta(seconds=time.monotonic() - began)


class UnknownOffersError(ValueError):
    """A request named offer ids the served model does not know (HTTP 422)."""

    def __init__(self, message: str, offer_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.offer_ids = list(offer_ids)


__all__ = ["Decision", "RankingService", "UnknownOffersError"]


@dataclass(frozen=True)
class _Plan:
    """One checked request: its seller scope and its explicit offers (None: all valid)."""

    request: RankRequest
    scope: str | None
    offer_ids: tuple[str, ...] | None


@dataclass(frozen=True)
class _Batch:
    """The answers of one batch and the decision-log rows that record them."""

    responses: list[RankResponse]
    exposures: pl.DataFrame


SMALL_BATCH_REQUESTS = 8
"""Batches of up to this many requests are decided row by row (`recsys.policy.small`):
a single request's fixed cost falls from ~50 ms of frame operations to a few ms; larger
batches amortize the frame path's fixed cost over their rows."""


@dataclass(frozen=True)
class _Answers:
    """What each request (by unit id) is answered with, from either decision path.

    ``offers_of``: listed offers of a unit whose action is an offer (first = the action);
    ``chosen``: (explored, propensity, reason text) of every decided unit; ``rejection``:
    why a unit has no eligible offer; ``has_pairs``: units that had offers to rank;
    ``p_nothing``: the policy's probability of "nothing" per unit (absent: 1).
    """

    offers_of: dict[str, list[RankedOffer]]
    chosen: dict[str, tuple[bool, float, str | None]]
    rejection: dict[str, str]
    has_pairs: set[str]
    p_nothing: dict[str, float]


class RankingService:
    """Ranks offers for buyers, records outcomes and plans campaigns (see module doc).

    Parameters
    ----------
    ranker
        A fitted ranker whose feature store holds the offers table.
    model_version
        Written into every answer and decision-log row (`policy` column).
    decision_log
        Where decisions and outcomes go; None: not logged (tests, dry runs).
    policy
        The serving policy (exploration, budgets, ...); None: the ranker's own.
    clock
        The decision time (offer validity, log timestamps); tests pass a fixed one.
    seed
        Seed of the exploration draws; None: fresh OS entropy, so a restarted replica
        does not replay the random choices of the previous one.
    max_remembered_decisions
        Decisions kept in memory for `record_outcomes` (oldest forgotten first), when
        `outcomes` is not given.
    score_cache_rows
        Model outputs kept for reuse (`serving.score_cache`; 0: score every request).
    history
        The offers given lately, for the policy's frequency caps across requests; pass
        the replica's own so it outlives a model swap. None: a fresh one.
    outcomes
        Where outcomes are checked and stored (`serving.outcomes`); pass the replica's
        own, over the shared decision log, so it outlives a model swap. None: a fresh one
        over `decision_log`'s directory.
    holdout
        The per-seller control group kept out of every offer (`recsys.policy.holdout`);
        None: no holdout (the serve config's default holds 5 % out).
    """

    def __init__(
        self,
        ranker: PromoRanker,
        model_version: str,
        decision_log: DecisionLog | None = None,
        policy: PolicyConfig | None = None,
        clock: Callable[[], datetime] = now_utc,
        seed: int | None = None,
        max_remembered_decisions: int = 1_000_000,
        score_cache_rows: int = DEFAULT_SCORE_CACHE_ROWS,
        history: ExposureHistory | None = None,
        outcomes: OutcomeRecorder | None = None,
        holdout: HoldoutConfig | None = None,
    ) -> None:
        ranker.check_is_fitted("RankingService")
        if ranker.store_ is None:
            raise ValueError(
                "the ranker was fitted without an offers table, so it has no offers to "
                "rank; train it on a dataset with offers (see DATA_CONTRACT.md)"
            )
        if max_remembered_decisions < 1:
            raise ValueError(
                f"max_remembered_decisions must be at least 1 (got {max_remembered_decisions})"
            )
        self.ranker = ranker
        self.model_version = model_version
        self.decision_log = decision_log
        self.policy = policy if policy is not None else ranker.config.policy
        self.clock = clock
        self.max_remembered_decisions = max_remembered_decisions
        self.holdout = holdout if holdout is not None else HoldoutConfig(share=0.0)
        # One decision per request: budgets are a batch matter (OfferPolicy.rank).
        self._rank_policy = OfferPolicy(
            self.policy.model_copy(update={"budgets": None, "one_offer_per": "buyer"})
        )
        store = ranker.store_
        self._offers = store.offers.select(
            "offer_id",
            seller_id_of_key(pl.col("seller_key")).alias("seller_id"),
            pl.col("tool").fill_null("unknown"),
            "start_ts",
            "end_ts",
        )
        self._offer_seller: dict[str, str | None] = dict(
            zip(self._offers["offer_id"], self._offers["seller_id"], strict=True)
        )
        self._known_buyers = _known_buyers(ranker).sort("buyer_id")
        self._lock = threading.Lock()
        self._seeds = np.random.SeedSequence(seed)
        if outcomes is None:
            index = DecisionIndex(
                None if decision_log is None else decision_log.directory,
                max_decisions=max_remembered_decisions,
                clock=self.clock,
                own_owner=(lambda: None) if decision_log is None else (lambda: decision_log.owner),
            )
            outcomes = OutcomeRecorder(index, decision_log)
        self.outcomes = outcomes
        self.outcome_window = timedelta(days=ranker.config.response.horizon_days)
        outcomes.index.ensure_keep(self.outcome_window)
        self._campaign_cache: OrderedDict[tuple[object, ...], CampaignPlan] = OrderedDict()
        self._seller_score_cache: OrderedDict[tuple[object, ...], pl.DataFrame] = OrderedDict()
        self._purchases_not_logged = 0
        self._scores = ScoreCache(self.ranker.candidates, max_rows=score_cache_rows)
        self.history = history if history is not None else ExposureHistory()
        self._tool_of: dict[str, str] = dict(
            zip(self._offers["offer_id"], self._offers["tool"], strict=True)
        )
        self.small_batch_requests = (
            SMALL_BATCH_REQUESTS if small_path_supports(self._rank_policy.config) else 0
        )
        self._capped = (
            self.policy.max_offers_per_buyer is not None or self.policy.max_per_tool is not None
        )

    # ----------------------------------------------------------------------- small helpers

    def buyer_known(self, buyer_id: str) -> bool:
        """Whether the model knows `buyer_id` (else its answers are cold-start fallbacks)."""
        ids = self._known_buyers["buyer_id"]
        at = int(ids.search_sorted(buyer_id))
        return at < len(ids) and ids[at] == buyer_id

    @property
    def remembered_decisions(self) -> int:
        """Decisions currently kept in memory for `record_outcomes`."""
        return len(self.outcomes.index)

    @property
    def purchases_not_logged(self) -> int:
        """Purchase outcomes accepted without an offer, hence only counted (see
        `record_outcomes`)."""
        with self._lock:
            return self._purchases_not_logged

    def decision(self, decision_id: str) -> Decision | None:
        """The remembered decision `decision_id`, or None (memory only: no disk read)."""
        return self.outcomes.index.find([decision_id]).get(decision_id)

    def warm_up(self, buyers: int | None = None) -> int:
        """Rank one dummy request (not logged, not remembered), so the first real one is
        fast, and score up to `buyers` known buyers (default: as many as the score cache
        holds) against every offer valid now; how many were scored."""
        now = self._now()
        valid = tuple(self._valid_offers(now)["offer_id"])
        known = self._known_buyers["buyer_id"]
        warmed = self._scores.warm(
            (known.head(buyers) if buyers is not None else known).to_list(), valid
        )
        plan = self._plan(RankRequest(buyer_id=_WARM_UP_BUYER), ADMIN_PRINCIPAL, None)
        self._decide([plan], now)
        if self._valid_offers(now).height == 0 and self._offers.height:
            # Nothing is valid now: still load the models' code paths.
            offer = self._offers["offer_id"][0]
            self.ranker.candidates(
                pl.DataFrame({"buyer_id": [_WARM_UP_BUYER], "offer_id": [offer]})
            )
        return warmed

    def seed_history(self, exposures: pl.DataFrame) -> int:
        """Remember the recent offers of a decision log's `exposures` for the frequency
        caps (a restarted replica keeps its buyers' caps); how many were recent."""
        return self.history.seed(exposures, self._tool_of, self._now())

    def _now(self) -> datetime:
        return as_utc(self.clock())

    # ----------------------------------------------------------------------- ranking

    def check_request(self, request: RankRequest, principal: Principal) -> None:
        """Raise what `rank` would raise for this request alone, and do nothing else.

        `ForbiddenError` (403) for another seller's scope or offers, `UnknownOffersError`
        (422) for offer ids the model does not know. The app calls it before dynamic
        batching, so one caller's bad request never fails the others of its batch.
        """
        self._plan(request, principal, None)

    def rank(
        self, requests: Sequence[RankRequest], principals: Sequence[Principal]
    ) -> list[RankResponse]:
        """Answer a batch of requests, in order; `principals[i]` is who asked `requests[i]`.

        Every request is checked before anything is decided: the first bad one raises
        (`ForbiddenError`, `UnknownOffersError`) and nothing is logged. One `exposures`
        row per answer goes to the decision log, in one append.
        """
        if len(requests) != len(principals):
            raise ValueError(
                f"rank needs one principal per request (got {len(requests)} requests and "
                f"{len(principals)} principals)"
            )
        many = len(requests) > 1
        plans = [
            self._plan(r, p, i if many else None)
            for i, (r, p) in enumerate(zip(requests, principals, strict=True))
        ]
        if not plans:
            return []
        batch = self._decide(plans, self._now())
        self._record(batch)
        return batch.responses

    def rank_each(
        self, requests: Sequence[RankRequest], principals: Sequence[Principal]
    ) -> list[RankResponse | AccessError | UnknownOffersError]:
        """Like `rank`, but a bad request gets its error in its place instead of failing
        the batch; the good ones are answered (and logged) in one pass.

        For a dynamically batched endpoint, where one batch holds many callers' requests.
        """
        if len(requests) != len(principals):
            raise ValueError(
                f"rank_each needs one principal per request (got {len(requests)} requests "
                f"and {len(principals)} principals)"
            )
        out: list[RankResponse | AccessError | UnknownOffersError | None] = []
        plans: list[_Plan] = []
        slots: list[int] = []
        for request, principal in zip(requests, principals, strict=True):
            try:
                plans.append(self._plan(request, principal, None))
            except (AccessError, UnknownOffersError) as exc:
                out.append(exc)
            else:
                slots.append(len(out))
                out.append(None)  # answered below
        if plans:
            batch = self._decide(plans, self._now())
            self._record(batch)
            for slot, response in zip(slots, batch.responses, strict=True):
                out[slot] = response
        return [answer for answer in out if answer is not None]

    def _plan(self, request: RankRequest, principal: Principal, position: int | None) -> _Plan:
        """Check one request's scope and offers; its plan, or the error to answer with."""
        where = f"request {position}: " if position is not None else ""
        if principal.admin:
            scope = request.seller_id
        else:
            if request.seller_id is not None and request.seller_id != principal.seller_id:
                try:
                    KeyRing.authorize(principal, request.seller_id)
                except ForbiddenError as exc:
                    raise ForbiddenError(where + exc.message) from None
            scope = principal.seller_id
        if request.offer_ids is None:
            return _Plan(request=request, scope=scope, offer_ids=None)
        offer_ids = tuple(dict.fromkeys(request.offer_ids))
        unknown = [o for o in offer_ids if o not in self._offer_seller]
        foreign = [
            o
            for o in offer_ids
            if o in self._offer_seller and not principal.may_access(self._offer_seller[o])
        ]
        if foreign:
            raise ForbiddenError(
                f"{where}this API key belongs to seller {principal.seller_id!r} and may rank "
                f"only that seller's offers, not {_quote(foreign)} (another seller's or "
                "platform-wide); remove them from offer_ids or use an admin key"
            )
        if unknown:
            raise UnknownOffersError(
                f"{where}unknown offer ids {_quote(unknown)}: the served model "
                f"({self.model_version}) knows {len(self._offer_seller)} offers; pass offer "
                "ids from its catalog, or omit offer_ids to rank every offer valid now",
                unknown,
            )
        return _Plan(request=request, scope=scope, offer_ids=offer_ids)

    def _valid_offers(self, now: datetime) -> pl.DataFrame:
        """Offers valid at `now`: start_ts <= now < end_ts, a null bound being open."""
        return self._offers.filter(valid_at(now))

    def _decide(self, plans: Sequence[_Plan], now: datetime) -> _Batch:
        """Decide every planned request in one vectorized pass (no side effects)."""
        units = pl.DataFrame(
            {
                UNIT: [f"{i:07d}" for i in range(len(plans))],
                "buyer_id": [p.request.buyer_id for p in plans],
                "scope": [p.scope for p in plans],
                "cart_value": [
                    p.request.context.cart_value if p.request.context else None for p in plans
                ],
                "k": [p.request.k for p in plans],
            },
            schema={
                UNIT: pl.String,
                "buyer_id": pl.String,
                "scope": pl.String,
                "cart_value": pl.Float64,
                "k": pl.Int64,
            },
        )
        # The holdout is drawn before the model; held-out requests are still scored, only
        # for the exact probability of "nothing" their control rows log.
        arms = assign_arms([(p.request.buyer_id, p.scope) for p in plans], now, self.holdout)
        valid = self._valid_offers(now)
        pairs = self._pairs(plans, units, valid)
        scored = self._scored(plans, pairs, valid)
        if pairs.height and len(plans) <= self.small_batch_requests:
            answers = self._decide_small(units, pairs, scored, now)
            if answers is not None:
                return self._responses(plans, units, answers, now, arms)
        decisions = None
        rejected = pl.DataFrame(
            schema={name: pl.String for name in (UNIT, "offer_id", "reason_code", "reason_text")}
        )
        if pairs.height:
            rows = self._rows(pairs, scored, units)
            history = None
            if self._capped:
                history = self.history.frame_for(
                    list(zip(units[UNIT], units["buyer_id"], strict=True)), now
                )
            decisions = self._rank_policy.decide(rows, now, history=history, rng=self._rng())
            # Requests none of whose offers passed eligibility: explained by their rejections.
            rejected = (
                decisions.rejected.join(
                    decisions.ranked.select("buyer_id"), on="buyer_id", how="anti"
                )
                .rename({"buyer_id": UNIT})
                .select(UNIT, "offer_id", "reason_code", "reason_text")
            )
        listed, nothing = listed_answers(decisions, units, self._rank_policy.config)
        p_nothing = nothing_probabilities(decisions)
        answers = self._answers_from_frames(pairs, rejected, listed, nothing, p_nothing)
        return self._responses(plans, units, answers, now, arms)

    def _decide_small(
        self, units: pl.DataFrame, pairs: pl.DataFrame, scored: pl.DataFrame, now: datetime
    ) -> _Answers | None:
        """The few requests of a small batch decided row by row (`recsys.policy.small`):
        the same answers as the frame path at a fraction of its fixed cost. None when a
        pair has no score (the frame path checks candidates and says what is wrong)."""
        config = self._rank_policy.config
        score_of = {(row["buyer_id"], row["offer_id"]): row for row in scored.to_dicts()}
        request_of = {
            unit: (scope, cart)
            for unit, scope, cart in units.select(UNIT, "scope", "cart_value").iter_rows()
        }
        rows: list[dict[str, object]] = []
        for unit, buyer, offer in pairs.select(UNIT, "buyer_id", "offer_id").iter_rows():
            score = score_of.get((buyer, offer))
            if score is None:
                return None
            scope, cart = request_of[unit]
            rows.append({**score, "buyer_id": unit, REQUEST_SELLER: scope, REQUEST_CART: cart})
        history: list[tuple[str, str | None, datetime, str | None]] = []
        if self._capped:
            frame = self.history.frame_for(
                list(zip(units[UNIT], units["buyer_id"], strict=True)), now
            )
            if frame is not None:
                history = list(frame.select("buyer_id", "offer_id", "ts", "tool").iter_rows())
        decided = decide_small(rows, now, config, history, rng=self._rng())
        k_of = dict(zip(units[UNIT], units["k"], strict=True))
        share = config.assumed_incremental_share
        offers_of: dict[str, list[RankedOffer]] = {}
        for unit in decided:
            if unit.offer is None:
                continue
            others = [
                row
                for row in unit.ranked
                if row["score"] > PROFIT_EPS and row["offer_id"] != unit.offer["offer_id"]
            ][: k_of[unit.buyer_id] - 1]
            probability = unit.probabilities or {}
            offers_of[unit.buyer_id] = [
                _ranked_offer(unit.offer, unit.propensity, unit.reason_codes, unit.reason_text),
                *(
                    _ranked_offer(
                        row,
                        probability.get(row["offer_id"], 0.0),
                        row["reason_codes"],
                        candidate_text(row, share),
                    )
                    for row in others
                ),
            ]
        return _Answers(
            offers_of=offers_of,
            chosen={u.buyer_id: (u.explored, u.propensity, u.reason_text) for u in decided},
            rejection={
                u.buyer_id: f"{first.offer_id}: {first.text}"
                for u in decided
                if not u.ranked and (first := first_rejection(u.rejected))
            },
            has_pairs={u.buyer_id for u in decided},
            p_nothing={
                u.buyer_id: u.probabilities.get(None, 0.0)
                if u.probabilities is not None
                else float(u.offer is None)
                for u in decided
            },
        )

    def _rng(self) -> np.random.Generator:
        with self._lock:
            (child,) = self._seeds.spawn(1)
        return np.random.default_rng(child)

    def _pairs(
        self, plans: Sequence[_Plan], units: pl.DataFrame, valid: pl.DataFrame
    ) -> pl.DataFrame:
        """(unit, buyer_id, offer_id) of every request: its offers, or all valid in scope."""
        schema: dict[str, pl.DataType] = {
            UNIT: pl.String(),
            "buyer_id": pl.String(),
            "offer_id": pl.String(),
        }
        explicit = pl.DataFrame(
            {
                UNIT: [u for u, p in zip(units[UNIT], plans, strict=True) if p.offer_ids],
                "offer_id": [list(p.offer_ids) for p in plans if p.offer_ids],
            },
            schema={UNIT: pl.String, "offer_id": pl.List(pl.String)},
        ).explode("offer_id")
        explicit = explicit.join(units.select(UNIT, "buyer_id"), on=UNIT, how="left")
        default = units.filter(pl.Series([p.offer_ids is None for p in plans]))
        valid = valid.select("offer_id", "seller_id")
        scoped = default.filter(pl.col("scope").is_not_null()).join(
            valid, left_on="scope", right_on="seller_id", how="inner"
        )
        everything = default.filter(pl.col("scope").is_null()).join(valid, how="cross")
        return pl.concat(
            [
                frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())
                for frame in (explicit, scoped, everything)
            ],
            how="vertical",
        )

    def _scored(
        self, plans: Sequence[_Plan], pairs: pl.DataFrame, valid: pl.DataFrame
    ) -> pl.DataFrame:
        """The model's candidate rows of every pair: a request for the offers valid in
        its scope from the score cache, one naming its offers scored afresh."""
        if pairs.height == 0:
            return self.ranker.candidates(pairs.select("buyer_id", "offer_id"))
        parts: list[pl.DataFrame] = []
        default = [(p.request.buyer_id, p.scope) for p in plans if p.offer_ids is None]
        if default:
            ids = valid["offer_id"].to_list()
            sellers = valid["seller_id"].to_list()
            offers_of: dict[str | None, tuple[str, ...]] = {None: tuple(ids)}
            for scope in {scope for _, scope in default if scope is not None}:
                offers_of[scope] = tuple(o for o, s in zip(ids, sellers, strict=True) if s == scope)
            parts.append(self._scores.candidates(default, offers_of))
        explicit = [(p.request.buyer_id, o) for p in plans if p.offer_ids for o in p.offer_ids]
        if explicit:
            asked = pl.DataFrame(
                {"buyer_id": [b for b, _ in explicit], "offer_id": [o for _, o in explicit]},
                schema={"buyer_id": pl.String, "offer_id": pl.String},
            )
            parts.append(self.ranker.candidates(asked.unique(maintain_order=True)))
        scored = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical_relaxed")
        if len(parts) > 1 or len({scope for _, scope in default}) > 1:
            scored = scored.unique(["buyer_id", "offer_id"], keep="first", maintain_order=True)
        return scored

    def _rows(self, pairs: pl.DataFrame, scored: pl.DataFrame, units: pl.DataFrame) -> pl.DataFrame:
        """The candidate rows of every pair with the request as the decision unit (its id
        as `buyer_id`), carrying the request's seller scope and cart, which the policy's
        eligibility checks per row (`recsys.policy.eligibility.REQUEST_COLUMNS`)."""
        request = units.select(
            UNIT, pl.col("scope").alias(REQUEST_SELLER), pl.col("cart_value").alias(REQUEST_CART)
        )
        return (
            pairs.join(request, on=UNIT, how="left")
            .join(scored, on=["buyer_id", "offer_id"], how="left")
            .with_columns(pl.col(UNIT).alias("buyer_id"))
            .drop(UNIT)
        )

    def _answers_from_frames(
        self,
        pairs: pl.DataFrame,
        rejected: pl.DataFrame,
        listed: pl.DataFrame,
        nothing: pl.DataFrame,
        p_nothing: dict[str, float],
    ) -> _Answers:
        """The batch path's decided frames as per-request answers."""
        offers_of: dict[str, list[RankedOffer]] = {}
        for row in listed.iter_rows(named=True):
            offers_of.setdefault(row[UNIT], []).append(
                _ranked_offer(row, row["propensity"], row["reason_codes"], row["reason_text"])
            )
        return _Answers(
            offers_of=offers_of,
            chosen={
                row[UNIT]: (bool(row["explored"]), float(row["propensity"]), row["reason_text"])
                for row in nothing.iter_rows(named=True)
            },
            rejection=rejection_summary(rejected),
            has_pairs=set(pairs[UNIT].unique().to_list()),
            p_nothing=p_nothing,
        )

    def _responses(
        self,
        plans: Sequence[_Plan],
        units: pl.DataFrame,
        answers: _Answers,
        now: datetime,
        arms: Arms,
    ) -> _Batch:
        """Turn the per-request answers into `RankResponse`s and their exposure rows; a
        held-out request gets nothing, every propensity is the holdout-joint one."""
        stages = units.select(UNIT, "buyer_id").join(self._known_buyers, on="buyer_id", how="left")
        stage_of = dict(zip(stages[UNIT], stages["journey_stage"], strict=True))
        known_of = dict(zip(stages[UNIT], stages["known"].fill_null(False), strict=True))
        offers_of, chosen = answers.offers_of, answers.chosen
        rejection, has_pairs = answers.rejection, answers.has_pairs
        responses: list[RankResponse] = []
        exposure: dict[str, list[object]] = {name: [] for name in EXPOSURES.schema}
        for i, (unit, plan) in enumerate(zip(units[UNIT], plans, strict=True)):
            offers = offers_of.get(unit, [])
            reason: str | None = None
            explored = False
            propensity = 1.0
            if offers:
                first = offers[0]
                explored, propensity, _ = chosen[unit]
                seller = first.seller_id
            else:
                seller = plan.scope
                if unit in rejection:  # no offer passed eligibility: certainly nothing
                    reason = rejection[unit]
                elif unit in chosen:  # the policy chose nothing
                    explored, propensity, reason = chosen[unit]
                elif unit not in has_pairs:
                    reason = _nothing_valid_text(plan, now)
                else:  # cannot happen: every pair is either decided or rejected
                    reason = DESCRIPTIONS[Reason.NO_ELIGIBLE_OFFER]
            offers, reason, explored, propensity, arm = hold_out(
                arms, i, offers, reason, explored, propensity, answers.p_nothing.get(unit, 1.0)
            )
            if not offers:
                seller = plan.scope
            decision_id = uuid.uuid4().hex
            responses.append(
                RankResponse(
                    decision_id=decision_id,
                    model_version=self.model_version,
                    buyer=BuyerInfo(journey_stage=stage_of[unit], cold_start=not known_of[unit]),
                    offers=offers,
                    no_offer_reason=reason,
                    explored=explored,
                    holdout=arm == CONTROL,
                )
            )
            for name, value in (
                ("exposure_id", decision_id),
                ("buyer_id", plan.request.buyer_id),
                ("offer_id", offers[0].offer_id if offers else None),
                ("ts", now),
                ("propensity", propensity),
                ("policy", self.model_version),
                ("seller_id", seller),
                ("arm", arm),
            ):
                exposure[name].append(value)
        return _Batch(responses, pl.DataFrame(exposure, schema=EXPOSURES.schema))

    def _record(self, batch: _Batch) -> None:
        """Log the batch's decisions (one append) and remember them for outcomes and caps."""
        if self.decision_log is not None:
            self.decision_log.append_exposures(batch.exposures)
        self.outcomes.index.add_decisions(batch.exposures)
        self.history.add(
            (buyer, offer, self._tool_of.get(offer), ts)
            for buyer, offer, ts in batch.exposures.select("buyer_id", "offer_id", "ts").iter_rows()
            if offer is not None
        )

    # ----------------------------------------------------------------------- outcomes

    def record_outcomes(
        self, outcomes: Sequence[Outcome], principal: Principal
    ) -> OutcomesResponse:
        """Record what happened after decisions; all accepted or none (on an error).

        See `serving.outcomes.OutcomeRecorder.record`: a decision made by any replica
        sharing the decision log takes its outcomes; a redemption becomes a
        `redemptions` row, its offer the one given, else the decision's; `exposure_id`
        is the decision id when the redeemed offer is the decision's own (the contract's
        "exposure redeemed"), else null. A purchase naming an offer is a redemption of
        it; a purchase without one cannot be a contract row (an `events` purchase needs
        its item, and the seller's event export holds it anyway), so it is kept in the
        outcome ledger only and counted (`purchases_not_logged`). An outcome stored
        already (same decision, type and order id) is accepted again, not stored again.

        Raises `ForbiddenError` when a seller key reports on another seller's decision
        or offer, `OutcomeError` (a `ValueError`) naming unknown decisions, times
        outside their outcome window and redemptions of a "nothing" decision without an
        offer id, and `UnknownOffersError` for an offer id the model does not know.
        """
        try:
            done = self.outcomes.record(
                outcomes,
                principal,
                now=self._now(),
                window=self.outcome_window,
                offer_seller=self._offer_seller,
                model_version=self.model_version,
            )
        except UnknownOfferError as exc:
            raise UnknownOffersError(str(exc), exc.offer_ids) from None
        with self._lock:
            self._purchases_not_logged += done.purchases_only
        return OutcomesResponse(accepted=done.accepted, duplicates=done.duplicates)

    # ----------------------------------------------------------------------- campaigns

    def campaigns(
        self,
        seller_id: str,
        principal: Principal,
        *,
        budget: float | None = None,
        audience: AudienceKind = "journey_stage",
        limit_buyers: int = 10,
    ) -> CampaignsResponse:
        """The seller's recommended campaigns within `budget` (see `campaign_plan`), with
        the plan's comparison and gain curve, as the API answers it."""
        if limit_buyers < 0:
            raise ValueError(f"limit_buyers must be >= 0 (got {limit_buyers})")
        plan, now = self.campaign_plan(seller_id, principal, budget=budget, audience=audience)
        return campaigns_response(plan, self.model_version, now, limit_buyers)

    def campaign_targets(
        self,
        seller_id: str,
        principal: Principal,
        campaign_id: str,
        *,
        budget: float | None = None,
        audience: AudienceKind = "journey_stage",
    ) -> pl.DataFrame:
        """One campaign's target list in the contract's pairs form (buyer_id, offer_id,
        then its expected figures); `ValueError` naming the plan's campaigns if unknown."""
        plan, _ = self.campaign_plan(seller_id, principal, budget=budget, audience=audience)
        return plan.target_list(campaign_id)

    def campaign_plan(
        self,
        seller_id: str,
        principal: Principal,
        *,
        budget: float | None = None,
        audience: AudienceKind = "journey_stage",
    ) -> tuple[CampaignPlan, datetime]:
        """The seller's plan (`recsys.campaigns.plan_campaigns`) and the time it is for.

        The seller's known buyers (any history with it in the feature store; every buyer
        when it has none) are scored against its offers valid now. `budget` None takes
        the serving policy's budget for the seller, if it has one. Scores are cached per
        seller, model version and set of valid offers (an offer starting or ending
        refreshes them); plans per budget and audience on top.
        """
        KeyRing.authorize(principal, seller_id)
        if budget is None and self.policy.budgets is not None:
            budget = self.policy.budgets.get(seller_id)
        now = self._now()
        offers = self._valid_offers(now).filter(pl.col("seller_id") == seller_id).sort("offer_id")
        offer_key = (seller_id, self.model_version, tuple(offers["offer_id"]))
        plan_key = (*offer_key, budget, audience)
        with self._lock:
            cached = self._campaign_cache.get(plan_key)
            if cached is not None:
                self._campaign_cache.move_to_end(plan_key)
                return cached, now
        scored = self._seller_scores(offer_key, seller_id, offers)
        plan = plan_campaigns(
            scored,
            self._audiences(scored, audience),
            seller_id,
            now,
            policy=self.policy,
            budget=budget,
            config=PlannerConfig(audience=audience),
        )
        with self._lock:
            self._campaign_cache[plan_key] = plan
            while len(self._campaign_cache) > CAMPAIGN_CACHE_SIZE:
                self._campaign_cache.popitem(last=False)
        return plan, now

    def campaign_buyers(self, seller_id: str) -> pl.Series:
        """Buyers a campaign of `seller_id` is planned for: those with history at the
        seller, or every known buyer when it has none (sorted ids)."""
        store = self.ranker.store_
        assert store is not None  # checked in __init__
        at_seller = store.buyer_seller.filter(pl.col("seller_key") == seller_id)["buyer_id"]
        if at_seller.len():
            return at_seller.unique().sort()
        everyone = store.buyers["buyer_id"] if store.buyers is not None else None
        if everyone is None or everyone.len() == 0:
            everyone = store.buyer_seller["buyer_id"]
        return everyone.unique().sort()

    def _seller_scores(
        self, key: tuple[object, ...], seller_id: str, offers: pl.DataFrame
    ) -> pl.DataFrame:
        """The model's candidates for the seller's buyers x its valid offers (cached)."""
        with self._lock:
            cached = self._seller_score_cache.get(key)
            if cached is not None:
                self._seller_score_cache.move_to_end(key)
                return cached
        buyers = self.campaign_buyers(seller_id)
        pairs = buyers.to_frame("buyer_id").join(offers.select("offer_id"), how="cross")
        scored = self.ranker.candidates(pairs)
        with self._lock:
            self._seller_score_cache[key] = scored
            while len(self._seller_score_cache) > SELLER_SCORE_CACHE_SIZE:
                self._seller_score_cache.popitem(last=False)
        return scored

    def _audiences(self, scored: pl.DataFrame, kind: AudienceKind) -> pl.DataFrame:
        if kind == "journey_stage":
            return stage_audiences(scored.select("buyer_id", "journey_stage"))
        store = self.ranker.store_
        assert store is not None
        return taste_audiences(
            scored["buyer_id"], store.buyer_category, PlannerConfig().min_audience_size
        )


def campaigns_response(
    plan: CampaignPlan, model_version: str, as_of: datetime, limit_buyers: int = 10
) -> CampaignsResponse:
    """The API's answer for a plan: campaigns with a sample of their buyers, the
    comparison with no campaign and coupon-to-all, and the gain curve."""
    tops = (
        plan.targets.group_by("campaign_id", maintain_order=True)
        .agg(pl.col("buyer_id").head(limit_buyers).alias("top"))
        .iter_rows()
    )
    top_of = dict(tops)
    totals = plan.totals
    return CampaignsResponse(
        seller_id=plan.seller_id,
        model_version=model_version,
        as_of=as_of,
        audience=plan.audience_kind,
        budget=plan.budget,
        budget_basis=plan.budget_basis,
        spend=float(totals["spend"] or 0.0),
        shadow_price=plan.shadow_price,
        buyers=plan.buyers,
        campaigns=[
            Campaign(**row, top_buyer_ids=top_of.get(row["campaign_id"], []))
            for row in plan.campaigns.iter_rows(named=True)
        ],
        comparison=[Alternative(**row) for row in plan.alternatives.iter_rows(named=True)],
        gain_curve=[GainPoint(**row) for row in plan.gain_curve.iter_rows(named=True)],
        not_recommended=list(plan.not_recommended),
    )


# --------------------------------------------------------------------------- frame helpers


def _ranked_offer(
    row: dict[str, Any], propensity: float, codes: Sequence[str], text: str | None
) -> RankedOffer:
    """A listed offer from a decided candidate row (either path), its reasons split."""
    return RankedOffer(
        offer_id=row["offer_id"],
        seller_id=row["seller_id"],
        tool=row["tool"],
        score=row["score"],
        expected_value=row["expected_value"],
        value_se=row.get("value_se"),
        p_redeem=row["p_redeem"],
        uplift=row["uplift"],
        propensity=propensity,
        reasons=text.split("; ") if text else [],
        reason_codes=list(codes),
    )


def _known_buyers(ranker: PromoRanker) -> pl.DataFrame:
    """(buyer_id, journey_stage, known) of every buyer the model knows, as
    `PromoRanker.candidates` decides it: a journey stage, else orders in the store."""
    store = ranker.store_
    assert store is not None
    if store.buyers is not None and "journey_stage" in store.buyers.columns:
        known = store.buyers.filter(pl.col("journey_stage").is_not_null()).select(
            "buyer_id", "journey_stage"
        )
    else:
        known = (
            store.buyer_seller.filter(pl.col("bs_orders") > 0)
            .select("buyer_id")
            .unique()
            .with_columns(pl.lit(None, pl.String).alias("journey_stage"))
        )
    return known.unique("buyer_id", keep="first").with_columns(pl.lit(True).alias("known"))


def _nothing_valid_text(plan: _Plan, now: datetime) -> str:
    when = now.strftime(TS_FORMAT) + " UTC"
    if plan.scope is None:
        return f"no offer is valid at {when}"
    return f"seller {plan.scope!r} has no offer valid at {when}"


def _quote(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
