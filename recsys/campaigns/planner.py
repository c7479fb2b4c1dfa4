"""The seller's campaign plan: which audience gets which offer, within a budget.

`plan_campaigns` turns the scored candidates of one seller (its buyers x its valid
offers, as `PromoRanker.candidates` gives them) into campaigns a seller can run:

1. `OfferPolicy.decide` picks at most one offer per buyer, maximizing total expected
   incremental profit with the seller's budget as the constraint (Lagrangian shadow
   price, repair and greedy fill: the best plan that fits, never a truncated list, and
   never over budget in the policy's ``budget_basis``).
2. The picks are grouped by audience x offer (`recsys.campaigns.audiences`): a campaign
   is "these buyers of this audience get this offer". An audience may run two campaigns
   when some of its buyers are worth more with another offer.
3. Each campaign, the whole plan and its alternatives — "no campaign" and "coupon to
   every customer" with each of the seller's offers — get the same figures: buyers,
   expected incremental orders, incremental revenue, redemptions, discount cost, send
   cost, budget spend, expected profit and ROI, with a range.

The range covers the randomness of buyers' responses given the model's probabilities
and the model's own uncertainty. A buyer's incremental order is a Bernoulli(uplift) worth
margin x order value and a redemption a Bernoulli(p_redeem) costing the discount, so the
responses add variance sum((m V)^2 u (1 - u) + C^2 p (1 - p)) (covariances dropped). The
model's error is shared by the buyers of a campaign (one estimated effect moves all their
values together), so its standard error is taken as sum(value_se) -- the errors fully
correlated, an upper bound -- and added in quadrature. The range is the normal interval
of the config's coverage. Offers are chosen by the policy's decision score (a learned
policy's conservative score: `recsys.policy.value.decision_scores`).

A campaign's target list is in the data contract's *pairs* form (buyer_id, offer_id),
with the expected figures of each pair as extra columns, so it can be scored again or
loaded into a mailing tool as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist
from typing import Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray
from pydantic import Field

from recsys.campaigns.audiences import AudienceKind
from recsys.config import StrictConfig
from recsys.evaluation.targeting import gain_curve
from recsys.policy import DESCRIPTIONS, OfferPolicy, PolicyConfig, Reason
from recsys.policy.budget import Allocation, allocate
from recsys.policy.eligibility import RequestContext
from recsys.policy.pricing import price_ceiling, smallest_fitting_prices
from recsys.policy.value import PROFIT_EPS


class PlannerConfig(StrictConfig):
    """How a seller's plan is built and reported."""

    audience: AudienceKind = Field(
        default="journey_stage", description="what groups buyers into campaign audiences"
    )
    min_audience_size: int = Field(
        default=20, ge=1, description="taste audiences smaller than this are pooled"
    )
    interval: float = Field(
        default=0.9, gt=0, lt=1, description="coverage of each figure's uncertainty range"
    )
    offers_per_audience: Literal["one", "best_per_buyer"] = Field(
        default="one",
        description="one offer per audience (simple campaigns), or each buyer's best offer",
    )
    gain_points: int = Field(default=21, ge=2, le=1001, description="points of the gain curve")


SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "buyers": pl.Int64(),
    "incremental_orders": pl.Float64(),
    "incremental_revenue": pl.Float64(),
    "redemptions": pl.Float64(),
    "discount_cost": pl.Float64(),
    "send_cost": pl.Float64(),
    "spend": pl.Float64(),
    "profit": pl.Float64(),
    "profit_low": pl.Float64(),
    "profit_high": pl.Float64(),
    "roi": pl.Float64(),
    "roi_low": pl.Float64(),
    "roi_high": pl.Float64(),
}
"""Figures every campaign and every alternative carries (money in the data's currency;
ROI = profit / (discount + send cost), null when the campaign costs nothing)."""

CAMPAIGN_SCHEMA: dict[str, pl.DataType] = {
    "campaign_id": pl.String(),
    "audience": pl.String(),
    "audience_size": pl.Int64(),
    "offer_id": pl.String(),
    "tool": pl.String(),
    **SUMMARY_SCHEMA,
}
ALTERNATIVE_SCHEMA: dict[str, pl.DataType] = {
    "name": pl.String(),
    "kind": pl.String(),
    "offer_id": pl.String(),
    "tool": pl.String(),
    **SUMMARY_SCHEMA,
    "within_budget": pl.Boolean(),
}
TARGET_SCHEMA: dict[str, pl.DataType] = {
    "campaign_id": pl.String(),
    "buyer_id": pl.String(),
    "offer_id": pl.String(),
    "p_redeem": pl.Float64(),
    "incremental_p": pl.Float64(),
    "expected_value": pl.Float64(),
    "spend": pl.Float64(),
}
GAIN_SCHEMA: dict[str, pl.DataType] = {
    "share_targeted": pl.Float64(),
    "share_redemptions": pl.Float64(),
}

PLAN = "plan"
NOTHING = "nothing"
COUPON_TO_ALL = "coupon_to_all"


class UnknownCampaignError(ValueError):
    """A campaign id that is not in the plan (HTTP 404 in the API)."""


@dataclass(frozen=True)
class CampaignPlan:
    """One seller's plan and what it is compared with (frames follow the *_SCHEMA dicts).

    ``campaigns`` best first; ``targets`` one row per targeted buyer; ``alternatives``
    the plan, "no campaign" and coupon-to-all with each offer; ``gain_curve`` the share
    of expected redemptions caught when targeting buyers by expected profit;
    ``shadow_price`` the expected profit one more unit of budget would buy (0 when the
    budget does not bind); ``not_recommended`` the offers nobody gets, with the reason.
    """

    seller_id: str
    audience_kind: AudienceKind
    budget: float | None
    budget_basis: str
    buyers: int
    campaigns: pl.DataFrame
    targets: pl.DataFrame
    alternatives: pl.DataFrame
    gain_curve: pl.DataFrame
    shadow_price: float
    not_recommended: tuple[str, ...]

    @property
    def totals(self) -> dict[str, float | int | None]:
        """The plan's own figures (the ``plan`` row of ``alternatives``)."""
        return self.alternatives.filter(pl.col("kind") == PLAN).row(0, named=True)

    def target_list(self, campaign_id: str) -> pl.DataFrame:
        """The campaign's buyers in the contract's pairs form, best expected profit first."""
        if campaign_id not in set(self.campaigns["campaign_id"].to_list()):
            known = ", ".join(repr(c) for c in self.campaigns["campaign_id"].to_list()) or "none"
            raise UnknownCampaignError(
                f"no campaign {campaign_id!r} in seller {self.seller_id!r}'s plan at this "
                f"budget; its campaigns are: {known}"
            )
        return self.targets.filter(pl.col("campaign_id") == campaign_id).drop("campaign_id")


def plan_campaigns(
    candidates: pl.DataFrame,
    audiences: pl.DataFrame,
    seller_id: str,
    as_of: datetime,
    *,
    policy: PolicyConfig | None = None,
    budget: float | None = None,
    config: PlannerConfig | None = None,
) -> CampaignPlan:
    """The best plan for `seller_id` within `budget` (None: no limit); see the module doc.

    ``candidates``: scored (buyer, offer) rows, a valid candidates frame; only the
    seller's own offers are planned (its budget pays for nothing else). ``audiences``:
    (buyer_id, audience) for every candidate buyer (`recsys.campaigns.audiences`).
    """
    config = config or PlannerConfig()
    policy = policy or PolicyConfig()
    if budget is not None and not (math.isfinite(budget) and budget >= 0):
        raise ValueError(
            f"budget must be a finite amount >= 0, or none for no limit (got {budget})"
        )
    own = candidates.filter(pl.col("seller_id") == seller_id)
    assigned = _audience_lookup(audiences, own)
    planning = policy.model_copy(
        update={
            "exploration": "none",
            "one_offer_per": "buyer",
            "budgets": None if budget is None else {seller_id: float(budget)},
        }
    )
    # Every eligible option, valued; the budget is applied below, per audience.
    context = RequestContext(seller_id=seller_id)
    ranked = OfferPolicy(planning).value(own, as_of, context=context)
    valued = _with_variance(ranked, planning).join(assigned, on="buyer_id", how="left")
    if config.offers_per_audience == "one":
        picked, shadow = _one_offer_per_audience(valued, planning, seller_id)
    else:
        allocation = allocate(valued, planning)
        picked, shadow = allocation.picks, _shadow_price(allocation, seller_id)
    picked = valued.join(
        picked.select("buyer_id", "offer_id"), on=["buyer_id", "offer_id"], how="semi"
    ).with_columns(_campaign_id().alias("campaign_id"))
    z = NormalDist().inv_cdf(0.5 + config.interval / 2)
    campaigns = _campaigns(picked, assigned, planning, z)
    return CampaignPlan(
        seller_id=seller_id,
        audience_kind=config.audience,
        budget=budget,
        budget_basis=planning.budget_basis,
        buyers=assigned.height,
        campaigns=campaigns,
        targets=picked.sort(
            ["campaign_id", "expected_value", "buyer_id"], descending=[False, True, False]
        ).select(list(TARGET_SCHEMA)),
        alternatives=_alternatives(picked, valued, planning, budget, z),
        gain_curve=_gain_curve(valued, config.gain_points),
        shadow_price=shadow,
        not_recommended=tuple(_not_recommended(valued, own, campaigns, shadow)),
    )


def _one_offer_per_audience(
    valued: pl.DataFrame, policy: PolicyConfig, seller_id: str
) -> tuple[pl.DataFrame, float]:
    """Picks when each audience runs one offer, and the budget's shadow price.

    The budgeted problem chooses an offer per audience and the buyers it goes to. It is
    solved by Lagrangian relaxation, like the policy's own budgets: at a price ``lam``
    per unit of spend, each audience takes the offer with the largest sum over its
    buyers of ``max(0, value - lam * spend)`` and gives it to the buyers where that is
    positive. Spend falls as ``lam`` rises, so ``lam`` is the smallest price that fits
    the budget (`recsys.policy.pricing.smallest_fitting_prices`, the policy's own price
    search, with one budget); the policy's budget allocation then picks the buyers of
    those offers exactly (repair and greedy fill), so the plan never spends over the
    budget.
    """
    budget = (policy.budgets or {}).get(seller_id)
    codes = valued.select(
        pl.col("audience").rank("dense").cast(pl.Int64).alias("a") - 1,
        pl.struct("audience", "offer_id").rank("dense").cast(pl.Int64).alias("g") - 1,
    )
    audience, group = codes["a"].to_numpy(), codes["g"].to_numpy()
    value = valued["score"].to_numpy()
    spend = valued["spend"].to_numpy()
    group_audience = np.zeros(int(group.max()) + 1 if len(group) else 0, dtype=np.int64)
    group_audience[group] = audience

    def chosen_rows(price: float) -> NDArray[np.bool_]:
        net = np.maximum(value - price * spend, 0.0)
        worth = np.bincount(group, weights=net, minlength=len(group_audience))
        best = np.full(int(audience.max()) + 1 if len(audience) else 0, -1, dtype=np.int64)
        order = np.lexsort((-worth, group_audience))  # per audience, most worth first
        first = np.ones(len(order), dtype=bool)
        first[1:] = group_audience[order][1:] != group_audience[order][:-1]
        leaders = order[first]
        leaders = leaders[worth[leaders] > PROFIT_EPS]
        best[group_audience[leaders]] = leaders
        return (best[audience] == group) & (net > PROFIT_EPS)

    price = 0.0
    if budget is not None:
        charged = np.zeros(len(spend), dtype=np.int64)  # every row charged to the one budget
        price = float(
            smallest_fitting_prices(
                lambda p: np.array([spend[chosen_rows(float(p[0]))].sum()]),
                np.array([float(budget)]),
                price_ceiling(value, spend, charged, 1),
            )[0]
        )
    offers = valued.filter(pl.Series(chosen_rows(price))).select("audience", "offer_id").unique()
    allocation = allocate(valued.join(offers, on=["audience", "offer_id"], how="semi"), policy)
    return allocation.picks, max(price, _shadow_price(allocation, seller_id))


def _shadow_price(allocation: Allocation, seller_id: str) -> float:
    row = allocation.sellers.filter(pl.col("budget_key") == seller_id)
    return float(row["shadow_price"][0]) if row.height else 0.0


# --------------------------------------------------------------------------- pieces


def _audience_lookup(audiences: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """(buyer_id, audience) for every candidate buyer; a buyer without one is an error."""
    missing_cols = [c for c in ("buyer_id", "audience") if c not in audiences.columns]
    if missing_cols:
        raise ValueError(f"audiences lacks column(s) {missing_cols}; it has {audiences.columns}")
    lookup = audiences.select("buyer_id", pl.col("audience").cast(pl.String)).unique(
        "buyer_id", keep="first"
    )
    buyers = candidates.select("buyer_id").unique()
    unassigned = buyers.join(lookup, on="buyer_id", how="anti")["buyer_id"]
    if unassigned.len():
        shown = ", ".join(repr(b) for b in unassigned.head(5).to_list())
        raise ValueError(
            f"{unassigned.len()} candidate buyer(s) have no audience (e.g. {shown}); give "
            "every candidate buyer one (recsys.campaigns.audiences)"
        )
    nulls = lookup.join(buyers, on="buyer_id", how="semi").filter(pl.col("audience").is_null())
    if nulls.height:
        raise ValueError(f"{nulls.height} buyer(s) have a null audience; name every audience")
    return lookup.join(buyers, on="buyer_id", how="semi")


def _with_variance(ranked: pl.DataFrame, policy: PolicyConfig) -> pl.DataFrame:
    """Each option's profit variance from the randomness of the buyer's response."""
    u = pl.col("incremental_p").clip(0.0, 1.0)
    p = pl.col("p_redeem").clip(0.0, 1.0)
    gain = pl.col("margin").fill_null(policy.margin_default) * pl.col("order_value")
    return ranked.with_columns(
        (gain.pow(2) * u * (1 - u) + pl.col("redemption_cost").pow(2) * p * (1 - p))
        .fill_null(0.0)
        .alias("_variance")
    )


def _campaign_id() -> pl.Expr:
    """A stable, URL-safe id: the audience's slug and the offer id."""
    slug = (
        pl.col("audience")
        .str.to_lowercase()
        .str.replace_all(r"[^a-z0-9]+", "-")
        .str.strip_chars("-")
    )
    return pl.format("{}.{}", slug, pl.col("offer_id"))


def _figures(send_cost: float, z: float) -> list[pl.Expr]:
    """The SUMMARY_SCHEMA aggregations over option rows (one group = one campaign)."""
    profit = pl.col("expected_value").sum()
    sd = (pl.col("_variance").sum() + pl.col("value_se").fill_null(0.0).sum().pow(2)).sqrt()
    cost = (pl.col("p_redeem") * pl.col("redemption_cost")).sum() + pl.len() * send_cost
    return [
        pl.len().cast(pl.Int64).alias("buyers"),
        pl.col("incremental_p").sum().alias("incremental_orders"),
        (pl.col("incremental_p") * pl.col("order_value")).sum().alias("incremental_revenue"),
        pl.col("p_redeem").sum().alias("redemptions"),
        (pl.col("p_redeem") * pl.col("redemption_cost")).sum().alias("discount_cost"),
        (pl.len() * send_cost).cast(pl.Float64).alias("send_cost"),
        pl.col("spend").sum().alias("spend"),
        profit.alias("profit"),
        (profit - z * sd).alias("profit_low"),
        (profit + z * sd).alias("profit_high"),
        _ratio(profit, cost).alias("roi"),
        _ratio(profit - z * sd, cost).alias("roi_low"),
        _ratio(profit + z * sd, cost).alias("roi_high"),
    ]


def _typed(schema: dict[str, pl.DataType]) -> list[pl.Expr]:
    """The schema's columns, in its order and types."""
    return [pl.col(c).cast(t) for c, t in schema.items()]


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when(den > PROFIT_EPS).then(num / den).otherwise(None)


def _campaigns(
    picked: pl.DataFrame, assigned: pl.DataFrame, policy: PolicyConfig, z: float
) -> pl.DataFrame:
    sizes = assigned.group_by("audience").agg(pl.len().cast(pl.Int64).alias("audience_size"))
    if picked.height == 0:
        return pl.DataFrame(schema=CAMPAIGN_SCHEMA)
    return (
        picked.group_by("campaign_id", "audience", "offer_id", "tool")
        .agg(_figures(policy.send_cost, z))
        .join(sizes, on="audience", how="left")
        .sort(["profit", "campaign_id"], descending=[True, False])
        .select(_typed(CAMPAIGN_SCHEMA))
    )


def _alternatives(
    picked: pl.DataFrame,
    valued: pl.DataFrame,
    policy: PolicyConfig,
    budget: float | None,
    z: float,
) -> pl.DataFrame:
    """The plan, "no campaign", and each offer given to every eligible buyer."""
    figures = _figures(policy.send_cost, z)
    plan = picked.select(figures).with_columns(
        pl.lit("the engine's plan").alias("name"),
        pl.lit(PLAN).alias("kind"),
        pl.lit(None, pl.String).alias("offer_id"),
        pl.lit(None, pl.String).alias("tool"),
    )
    nothing = (
        picked.clear()
        .select(figures)
        .with_columns(
            pl.lit("no campaign").alias("name"),
            pl.lit(NOTHING).alias("kind"),
            pl.lit(None, pl.String).alias("offer_id"),
            pl.lit(None, pl.String).alias("tool"),
        )
    )
    blanket = (
        valued.group_by("offer_id", "tool")
        .agg(figures)
        .sort("offer_id")
        .with_columns(
            pl.format("coupon to every customer: {} ({})", "offer_id", "tool").alias("name"),
            pl.lit(COUPON_TO_ALL).alias("kind"),
        )
    )
    limit = float("inf") if budget is None else budget
    frame = pl.concat(
        [part.select(list(ALTERNATIVE_SCHEMA)[:-1]) for part in (plan, nothing, blanket)],
        how="vertical_relaxed",
    )
    # Sums over no rows are 0 (the plan and "no campaign" of a plan that gives nothing).
    return frame.with_columns(
        (pl.col("spend") <= limit * (1 + 1e-9) + 1e-9).alias("within_budget")
    ).select(_typed(ALTERNATIVE_SCHEMA))


def _gain_curve(valued: pl.DataFrame, points: int) -> pl.DataFrame:
    """Share of expected redemptions caught when buyers are targeted by their best
    offer's expected profit (random targeting is the diagonal)."""
    best = valued.filter(pl.col("rank") == 1)
    if best.height == 0 or float(best["p_redeem"].sum()) <= 0:
        return pl.DataFrame(schema=GAIN_SCHEMA)
    x, y = gain_curve(best["expected_value"].to_numpy(), best["p_redeem"].to_numpy(), points)
    return pl.DataFrame({"share_targeted": x, "share_redemptions": y}, schema=GAIN_SCHEMA)


def _not_recommended(
    valued: pl.DataFrame, own: pl.DataFrame, campaigns: pl.DataFrame, shadow_price: float
) -> list[str]:
    """`"<offer_id>: <reason>"` for every seller offer the plan gives nobody."""
    used = set(campaigns["offer_id"].to_list())
    offered = sorted(set(own["offer_id"].to_list()) - used)
    best = dict(valued.group_by("offer_id").agg(pl.col("expected_value").max()).iter_rows())
    out = []
    for offer_id in offered:
        value = best.get(offer_id)
        if value is None:
            reason = "no buyer is eligible for it now"
        elif value <= PROFIT_EPS:
            reason = (
                f"no buyer is expected to bring more profit with it than without "
                f"(best expected {value:+.2f})"
            )
        elif shadow_price > 0:
            reason = f"{DESCRIPTIONS[Reason.OVER_BUDGET]} (best expected {value:+.2f})"
        else:
            reason = (
                "another offer is worth more in every audience it would pay for "
                f"(best expected {value:+.2f} for one buyer)"
            )
        out.append(f"{offer_id}: {reason}")
    return out
