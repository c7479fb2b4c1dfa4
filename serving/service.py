"""The ranking service: the pure-Python heart that the Ray Serve app delegates to.

`RankingService` answers the API's questions with a fitted `PromoRanker` and the
`OfferPolicy`, with no Ray and no web framework, so every rule is tested in seconds:

- `rank`: which offers, if any, to give each buyer of a batch, best first. Each request
  is a decision unit, decided on state prepared at model load (`serving.served_state`:
  the offers indexed once, each buyer's valued options for the offers valid now) by the
  policy's array rules (`serving.ranking`, `recsys.policy.arrays`): eligibility per
  request (validity, seller scope, minimum spend against its cart, caps), ranking, and
  exploration (epsilon-greedy, softmax) with exact propensities.
- `record_outcomes`: redemptions reported against decision ids become the contract's
  `redemptions` rows (`serving.outcomes`: any replica's decisions, checked windows,
  stored once).
- `campaigns`: a seller's recommended campaigns within a budget (`serving.campaign_plans`
  over `recsys.campaigns`), and each campaign's target list.

Every decision becomes one `exposures` row of the decision log (`exposure_id` = the
decision id, the exact propensity of the action taken, `policy` = the model version), so
the next training run and off-policy evaluation can use what the service did.

Frequency caps hold across requests: the offers the service gives are remembered
(`serving.history`) and each request is decided with its buyer's recent ones. Two
requests for one buyer in the same batch are decided independently. Budgets are a batch
matter: `rank` does not apply them; `campaigns` plans within the seller's budget.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from recsys.campaigns import (
    AudienceKind,
    CampaignPlan,
)
from recsys.data.schema import EXPOSURES
from recsys.features.pairs import seller_id_of_key
from recsys.models.ranker import PromoRanker
from recsys.policy import PolicyConfig
from recsys.policy.eligibility import as_utc
from recsys.policy.holdout import CONTROL, HOLDOUT_TEXT, HoldoutConfig
from serving.auth import ADMIN_PRINCIPAL, AccessError, ForbiddenError, KeyRing, Principal
from serving.campaign_plans import CampaignPlans, campaigns_response
from serving.decision_index import Decision, DecisionIndex
from serving.decision_log import DecisionLog
from serving.history import ExposureHistory
from serving.holdout import Arms, arm_of, assign_arms, logged_propensities, offer_scale
from serving.outcomes import OutcomeRecorder, UnknownOfferError
from serving.ranking import Answer, Plan, RequestDecider
from serving.schemas import (
    BuyerInfo,
    CampaignsResponse,
    Outcome,
    OutcomesResponse,
    RankRequest,
    RankResponse,
)
from serving.served_state import OfferCatalog, OptionStore, micros

DEFAULT_SCORE_CACHE_ROWS = 1_000_000
"""Option rows kept by the served state (about 100 bytes each)."""

_WARM_UP_BUYER = "__warm_up__"

_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
"""The version (4) and variant (RFC 4122) bits of a random UUID, as `uuid.uuid4` sets them."""


def new_decision_ids(n: int) -> list[str]:
    """`n` new decision ids: random version-4 UUIDs as 32 hex digits, what
    ``uuid.uuid4().hex`` gives, from one read of the OS's randomness for all of them
    (a tenth of the cost of `n` calls to `uuid.uuid4` for a batch of 100).

    >>> import uuid
    >>> [uuid.UUID(i).version for i in new_decision_ids(2)]
    [4, 4]
    """
    raw = os.urandom(16 * n)
    return [
        f"{int.from_bytes(raw[i : i + 16]) & _UUID4_CLEAR | _UUID4_SET:032x}"
        for i in range(0, 16 * n, 16)
    ]


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
class _Batch:
    """The answers of one batch and the decisions that record them."""

    responses: list[RankResponse]
    decisions: list[Decision]
    propensities: list[float]
    arms: list[str | None]

    def exposures(self, model_version: str) -> pl.DataFrame:
        """The decisions as the contract's `exposures` rows, in its exact schema."""
        return pl.DataFrame(
            {
                "exposure_id": [d.decision_id for d in self.decisions],
                "buyer_id": [d.buyer_id for d in self.decisions],
                "offer_id": [d.offer_id for d in self.decisions],
                "ts": [d.ts for d in self.decisions],
                "propensity": self.propensities,
                "policy": [model_version] * len(self.decisions),
                "seller_id": [d.seller_id for d in self.decisions],
                "arm": self.arms,
            },
            schema=EXPOSURES.schema,
        )


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
        Valued model outputs kept for reuse, in rows (`serving.served_state`; 0: score
        every request).
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
        store = ranker.store_
        self._offers = store.offers.select(
            "offer_id",
            seller_id_of_key(pl.col("seller_key")).alias("seller_id"),
            pl.col("tool").fill_null("unknown"),
            "start_ts",
            "end_ts",
        )
        self._catalog = OfferCatalog(self._offers)
        self._offer_seller: dict[str, str | None] = dict(
            zip(self._catalog.ids, self._catalog.sellers, strict=True)
        )
        known = _known_buyers(ranker).sort("buyer_id")
        self._stage_of: dict[str, str | None] = dict(
            zip(known["buyer_id"].to_list(), known["journey_stage"].to_list(), strict=True)
        )
        self._lock = threading.Lock()
        self._seeds = np.random.SeedSequence(seed)
        self._thread_rng = threading.local()
        self._buyer_infos: dict[tuple[str | None, bool], BuyerInfo] = {}
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
        self._purchases_not_logged = 0
        # One decision per request: budgets are a batch matter (OfferPolicy.rank).
        rank_policy = self.policy.model_copy(update={"budgets": None, "one_offer_per": "buyer"})
        self._scores = OptionStore(
            self.ranker.candidates, self._catalog, rank_policy, max_rows=score_cache_rows
        )
        self.history = history if history is not None else ExposureHistory()
        self._tool_of: dict[str, str] = self._catalog.tool_of()
        self._decider = RequestDecider(self._scores, rank_policy, self.history)
        self._plans = CampaignPlans(ranker, self._catalog, self.policy, self.holdout)

    # ----------------------------------------------------------------------- small helpers

    def buyer_known(self, buyer_id: str) -> bool:
        """Whether the model knows `buyer_id` (else its answers are cold-start fallbacks)."""
        return buyer_id in self._stage_of

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
        valid = self._catalog.valid(micros(now))
        known = list(self._stage_of)
        warmed = self._scores.warm(known[:buyers] if buyers is not None else known, valid)
        plan = self._plan(RankRequest(buyer_id=_WARM_UP_BUYER), ADMIN_PRINCIPAL, None)
        self._decide([plan], now)
        if len(valid) == 0 and len(self._catalog):
            # Nothing is valid now: still load the models' code paths.
            offer = self._catalog.ids[0]
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
        plans: list[Plan] = []
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

    def _plan(self, request: RankRequest, principal: Principal, position: int | None) -> Plan:
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
            return Plan(request=request, scope=scope, offer_ids=None)
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
        return Plan(request=request, scope=scope, offer_ids=offer_ids)

    def _decide(self, plans: Sequence[Plan], now: datetime) -> _Batch:
        """Decide every planned request in one vectorized pass (no side effects)."""
        rng = self._rng() if self._decider.config.exploration != "none" else None
        # The holdout is drawn before the model and decided from the request alone;
        # held-out requests are still decided, only for the exact probability of the
        # "nothing" their control rows log.
        arms = assign_arms([(p.request.buyer_id, p.scope) for p in plans], now, self.holdout)
        answers = self._decider.decide(plans, now, rng, offer_scale(arms))
        return self._responses(plans, answers, now, arms)

    def _buyer_info(self, buyer: str) -> BuyerInfo:
        """What an answer says of its buyer; one frozen object per stage, shared."""
        key = (self._stage_of.get(buyer), buyer not in self._stage_of)
        info = self._buyer_infos.get(key)
        if info is None:
            info = self._buyer_infos[key] = BuyerInfo(journey_stage=key[0], cold_start=key[1])
        return info

    def _rng(self) -> np.random.Generator:
        """This thread's exploration generator: one per thread (a generator is not
        thread-safe), each from its own child of the service's seed, made once."""
        rng: np.random.Generator | None = getattr(self._thread_rng, "rng", None)
        if rng is None:
            with self._lock:
                (child,) = self._seeds.spawn(1)
            rng = self._thread_rng.rng = np.random.default_rng(child)
        return rng

    def _responses(
        self, plans: Sequence[Plan], answers: Sequence[Answer], now: datetime, arms: Arms
    ) -> _Batch:
        """Turn the per-request answers into `RankResponse`s and their exposure rows; a
        held-out request gets nothing, and every propensity is the holdout-joint one."""
        responses: list[RankResponse] = []
        decisions: list[Decision] = []
        logged_arms: list[str | None] = []
        propensities = logged_propensities(
            arms,
            np.array([bool(a.offers) for a in answers], dtype=bool),
            np.array([a.propensity for a in answers], dtype=np.float64),
            np.array([a.p_nothing for a in answers], dtype=np.float64),
        ).tolist()
        decision_ids = new_decision_ids(len(plans))
        for i, (plan, answer) in enumerate(zip(plans, answers, strict=True)):
            buyer = plan.request.buyer_id
            arm = arm_of(arms, i)
            held = arm == CONTROL
            offers = [] if held else answer.offers
            decision_id = decision_ids[i]
            responses.append(
                RankResponse.trusted(
                    {
                        "decision_id": decision_id,
                        "model_version": self.model_version,
                        "buyer": self._buyer_info(buyer),
                        "offers": offers,
                        "no_offer_reason": HOLDOUT_TEXT if held else answer.reason,
                        "explored": False if held else answer.explored,
                        "holdout": held,
                    }
                )
            )
            decisions.append(
                Decision(
                    decision_id=decision_id,
                    buyer_id=buyer,
                    offer_id=offers[0].offer_id if offers else None,
                    seller_id=answer.seller if offers else plan.scope,
                    ts=now,
                )
            )
            logged_arms.append(arm)
        return _Batch(responses, decisions, propensities, logged_arms)

    def _record(self, batch: _Batch) -> None:
        """Log the batch's decisions (one append) and remember them for outcomes and caps."""
        if self.decision_log is not None:
            self.decision_log.append_decisions(batch.exposures(self.model_version))
        self.outcomes.index.remember(batch.decisions)
        self.history.add(
            (d.buyer_id, d.offer_id, self._tool_of.get(d.offer_id), d.ts)
            for d in batch.decisions
            if d.offer_id is not None
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
        return self._plans.plan(seller_id, now, budget=budget, audience=audience), now

    def campaign_buyers(self, seller_id: str) -> pl.Series:
        """Buyers a campaign of `seller_id` is planned for (`CampaignPlans.buyers`)."""
        return self._plans.buyers(seller_id)


# --------------------------------------------------------------------------- frame helpers


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


def _quote(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
