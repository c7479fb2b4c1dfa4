"""A served model's campaign plans per seller, computed on demand and kept in one cache.

The seller's known buyers (any history with it in the feature store; every buyer when it
has none) are scored against its offers valid now and planned by
`recsys.campaigns.plan_campaigns` (audiences x offers, compared with no campaign and
coupon-to-all). Buyers the serving holdout keeps in the seller's control group for the
current period are left out of every plan and target list: a campaign sent to them would
treat the control the lift is measured against. Scored candidates are kept per seller
and set of valid offers (an offer starting or ending refreshes them), plans per budget,
audience and holdout period on top, both in one `cachetools` LRU sized in rows. A new
champion gets a new service, hence new plans.
"""

from __future__ import annotations

import threading
from datetime import datetime

import polars as pl
from cachetools import LRUCache

from recsys.campaigns import (
    AudienceKind,
    CampaignPlan,
    PlannerConfig,
    plan_campaigns,
    stage_audiences,
    taste_audiences,
)
from recsys.models.ranker import PromoRanker
from recsys.policy.config import PolicyConfig
from recsys.policy.holdout import HoldoutConfig, assign_control, holdout_period
from serving.schemas import Alternative, Campaign, CampaignsResponse, GainPoint
from serving.served_state import OfferCatalog, micros

CACHE_ROWS = 5_000_000
"""Rows kept across cached scores and plans (a scored pair or a plan's target row)."""


def _rows(entry: pl.DataFrame | CampaignPlan) -> int:
    """An entry's weight in the cache: its rows (at least 1)."""
    frame = entry if isinstance(entry, pl.DataFrame) else entry.targets
    return max(frame.height, 1)


class CampaignPlans:
    """Campaign plans of one served model (see the module doc); thread-safe."""

    def __init__(
        self,
        ranker: PromoRanker,
        catalog: OfferCatalog,
        policy: PolicyConfig,
        holdout: HoldoutConfig,
        max_rows: int = CACHE_ROWS,
    ) -> None:
        self.ranker = ranker
        self.catalog = catalog
        self.policy = policy
        self.holdout = holdout
        self._kept: LRUCache[tuple[object, ...], pl.DataFrame | CampaignPlan] = LRUCache(
            maxsize=max_rows, getsizeof=_rows
        )
        self._lock = threading.Lock()

    def plan(
        self,
        seller_id: str,
        now: datetime,
        *,
        budget: float | None,
        audience: AudienceKind = "journey_stage",
    ) -> CampaignPlan:
        """The seller's plan within `budget` for the offers valid at `now`, without the
        buyers held out at `now` (cached per holdout period)."""
        code = self.catalog.scope_code(seller_id)
        offers = tuple(
            self.catalog.ids[i]
            for i in self.catalog.valid(micros(now))
            if self.catalog.seller_code[i] == code
        )
        period = holdout_period(now, self.holdout.period_days) if self.holdout.enabled else None
        plan_key = ("plan", seller_id, offers, budget, audience, period)
        cached = self._get(plan_key)
        if isinstance(cached, CampaignPlan):
            return cached
        scored = self._without_held_out(self._scores(seller_id, offers), seller_id, now)
        plan = plan_campaigns(
            scored,
            self._audiences(scored, audience),
            seller_id,
            now,
            policy=self.policy,
            budget=budget,
            config=PlannerConfig(audience=audience),
        )
        self._put(plan_key, plan)
        return plan

    def buyers(self, seller_id: str) -> pl.Series:
        """Buyers a campaign of `seller_id` is planned for: those with history at the
        seller, or every known buyer when it has none (sorted ids)."""
        store = self.ranker.store_
        assert store is not None  # a served ranker has a feature store
        at_seller = store.buyer_seller.filter(pl.col("seller_key") == seller_id)["buyer_id"]
        if at_seller.len():
            return at_seller.unique().sort()
        everyone = store.buyers["buyer_id"] if store.buyers is not None else None
        if everyone is None or everyone.len() == 0:
            everyone = store.buyer_seller["buyer_id"]
        return everyone.unique().sort()

    def _scores(self, seller_id: str, offers: tuple[str, ...]) -> pl.DataFrame:
        """The model's candidates for the seller's buyers x `offers` (cached)."""
        key = ("scores", seller_id, offers)
        cached = self._get(key)
        if isinstance(cached, pl.DataFrame):
            return cached
        pairs = (
            self.buyers(seller_id)
            .to_frame("buyer_id")
            .join(
                pl.DataFrame({"offer_id": list(offers)}, schema={"offer_id": pl.String}),
                how="cross",
            )
        )
        scored = self.ranker.candidates(pairs)
        self._put(key, scored)
        return scored

    def _without_held_out(
        self, scored: pl.DataFrame, seller_id: str, now: datetime
    ) -> pl.DataFrame:
        """`scored` without the rows of buyers in the seller's control group at `now`
        (the same assignment `/v1/rank` draws for a request scoped to the seller)."""
        if not self.holdout.enabled or scored.height == 0:
            return scored
        buyers = scored["buyer_id"].unique().sort()
        control, _ = assign_control(buyers.to_list(), [seller_id] * buyers.len(), now, self.holdout)
        return scored.filter(~pl.col("buyer_id").is_in(buyers.filter(pl.Series(control)).implode()))

    def _get(self, key: tuple[object, ...]) -> pl.DataFrame | CampaignPlan | None:
        with self._lock:
            return self._kept.get(key)

    def _put(self, key: tuple[object, ...], entry: pl.DataFrame | CampaignPlan) -> None:
        with self._lock:
            if _rows(entry) <= self._kept.maxsize:
                self._kept[key] = entry

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
