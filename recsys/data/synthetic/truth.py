"""Exact expected outcomes of issuing an offer to a buyer, from the true parameters.

The weekly simulation draws orders from the same quantities, so these expectations are
the truth that a policy's incremental profit is measured against:

- orders at seller s in a week ~ Poisson(lam_s), lam_s = ORDER_RATE[stage] * activity * share_s;
  p0 = P(at least one) = 1 - exp(-lam_s);
- an offer adds one order, only when there was none, with probability e, so
  p1 = p0 + (1 - p0) * e, with e = EFFECT[tool, stage] * price modifier
  * min(1, 2 share_s) * scope relevance;
  (`causal_effect`: that is the "stage" world; the "attributes" world takes the effect by
  the buyer's acquisition channel instead of the stage, the "uniform" world one per tool);
- the first order at s uses the offer with probability REDEEM_GIVEN_ORDER[tool]
  (an item-scoped offer needs a scoped item in it: base orders include one with the
  scope's relevance, induced orders always);
- profit = margin * revenue - discount cost of redemptions - send cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.synthetic.campaigns import Offers
from recsys.data.synthetic.catalog import Catalog
from recsys.data.synthetic.params import (
    AMOUNT_OFF,
    EFFECT,
    EFFECT_BY_ACQUISITION,
    FREE_SHIPPING,
    MEAN_LINES,
    MEAN_QTY,
    ORDER_RATE,
    PERCENT_OFF,
    POINTS,
    PRICE_TOOLS,
    REDEEM_GIVEN_ORDER,
    SCOPE_RELEVANCE_SCALE,
    SELLER_AFFINITY_SCALE,
    SHIPPING_COST,
    UNIFORM_EFFECT,
    EffectsWorld,
)
from recsys.data.synthetic.population import Buyers


@dataclass(frozen=True)
class Expectation:
    """Per (buyer, offer) pair: true probabilities and expected profits for one week."""

    p_control: np.ndarray
    p_treated: np.ndarray
    p_redeem: np.ndarray
    effect: np.ndarray  # probability of an induced order (e in the module docstring)
    relevance: np.ndarray
    order_value: np.ndarray
    profit_control: np.ndarray
    profit_treated: np.ndarray

    @property
    def incremental_profit(self) -> np.ndarray:
        return self.profit_treated - self.profit_control


def price_modifier(tool: np.ndarray, price_sensitivity: np.ndarray) -> np.ndarray:
    """Money-off tools move price-sensitive buyers more (mean multiplier 1)."""
    return np.where(np.isin(tool, PRICE_TOOLS), 0.4 + 1.2 * price_sensitivity, 1.0)


def scope_relevance(buyers: Buyers, rows: np.ndarray, category: np.ndarray) -> np.ndarray:
    """How much a buyer cares about an item-scoped offer's category (1 for store-wide)."""
    taste = buyers.cat_pref[rows, np.maximum(category, 0)]
    return np.where(category < 0, 1.0, np.minimum(1.0, SCOPE_RELEVANCE_SCALE * taste))


def scoped_price(
    buyers: Buyers, catalog: Catalog, rows: np.ndarray, seller: np.ndarray, category: np.ndarray
) -> np.ndarray:
    """Expected price of the scoped item a buyer picks (style by taste, item by popularity)."""
    prices = catalog.sub_mean_price[np.maximum(category, 0), :, seller]  # (n, St)
    return (buyers.style_pref[rows] * prices).sum(axis=1)


def causal_effect(
    effects: EffectsWorld,
    buyers: Buyers,
    rows: np.ndarray,
    stage: np.ndarray,
    tool: np.ndarray,
    share: np.ndarray,
    relevance: np.ndarray,
) -> np.ndarray:
    """P(the offer adds an order | the buyer would not have ordered), per row, in a world.

    "stage": EFFECT[tool, stage]; "attributes": EFFECT_BY_ACQUISITION[tool, channel]; both
    times the price modifier, the seller-share factor and the scope relevance. "uniform":
    UNIFORM_EFFECT[tool], the same for every buyer.
    """
    if effects == "uniform":
        return UNIFORM_EFFECT[tool]
    base = (
        EFFECT[tool, stage]
        if effects == "stage"
        else EFFECT_BY_ACQUISITION[tool, buyers.acquisition[rows]]
    )
    return (
        base
        * price_modifier(tool, buyers.price_sensitivity[rows])
        * np.minimum(1.0, SELLER_AFFINITY_SCALE * share)
        * relevance
    )


def expected_outcomes(
    buyers: Buyers,
    catalog: Catalog,
    offers: Offers,
    rows: np.ndarray,
    stage: np.ndarray,
    offer: np.ndarray,
    send_cost: float,
    effects: EffectsWorld = "stage",
) -> Expectation:
    """Expectations for buyers `rows` (in their `stage`) each given `offer` (codes), in the
    `effects` world (see `causal_effect`)."""
    tool = offers.tool[offer]
    seller = offers.seller[offer]
    category = offers.scope_category[offer]
    value = np.nan_to_num(offers.value[offer])
    share = buyers.share[rows, seller]
    lam = ORDER_RATE[stage] * buyers.activity[rows] * share
    p0 = 1.0 - np.exp(-lam)
    relevance = scope_relevance(buyers, rows, category)
    effect = causal_effect(effects, buyers, rows, stage, tool, share, relevance)
    p1 = p0 + (1.0 - p0) * effect
    p_coupon_order = p0 * relevance + (p1 - p0)
    p_redeem = REDEEM_GIVEN_ORDER[tool] * p_coupon_order
    line_price = buyers.expected_price[rows, seller]
    order_value = MEAN_LINES * MEAN_QTY * line_price
    scoped = category >= 0
    scope_line = MEAN_QTY * np.where(
        scoped, scoped_price(buyers, catalog, rows, seller, category), 0
    )
    swap_gain = np.where(scoped, scope_line - MEAN_QTY * line_price, 0.0)
    discount = np.select(
        [
            (tool == PERCENT_OFF) & scoped,
            (tool == PERCENT_OFF) | (tool == POINTS),
            tool == AMOUNT_OFF,
            tool == FREE_SHIPPING,
        ],
        [value * scope_line, value * order_value, value, np.full(len(rows), SHIPPING_COST)],
        default=0.0,
    )
    margin = catalog.seller_margin[seller]
    revenue_treated = (lam + (p1 - p0)) * order_value + p_coupon_order * swap_gain
    return Expectation(
        p_control=p0,
        p_treated=p1,
        p_redeem=p_redeem,
        effect=effect,
        relevance=relevance,
        order_value=order_value,
        profit_control=margin * lam * order_value,
        profit_treated=margin * revenue_treated - p_redeem * discount - send_cost,
    )
