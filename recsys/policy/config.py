"""The policy's settings and constants: the leaf every policy step imports.

:class:`PolicyConfig` and the numbers the rules share (the profit threshold, the
"would buy anyway" bounds, the platform budget key) live here, so the steps
(`value`, `eligibility`, `budget`, `arrays`, ...) take their parameters from one place
without importing the orchestrator (:mod:`recsys.policy.policy`) that chains them.
Nothing here imports another policy module.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from recsys.config import StrictConfig

DEFAULT_SHIPPING_COST = 5.0
"""Cost of one free-shipping redemption when the offer has no cost of its own."""

PROFIT_EPS = 1e-9
"""An offer must beat sending nothing by more than this (rounding noise is not profit)."""

BASIS_UPLIFT = "uplift"
BASIS_RESPONSE = "response"

WOULD_BUY_ANYWAY_P = 0.5
"""P(purchase without the offer) at or above which a buyer "would buy anyway"."""

NEGLIGIBLE_UPLIFT = 0.005
"""|uplift| at or below which an offer is taken to change nothing (0.5 points)."""

PLATFORM_BUDGET_KEY = "__platform__"
"""Key of ``PolicyConfig.budgets`` for platform-wide offers (``seller_id`` null)."""


class Reason(StrEnum):
    """The reason codes of the policy."""

    POSITIVE_UPLIFT = "POSITIVE_UPLIFT"
    WOULD_BUY_ANYWAY = "WOULD_BUY_ANYWAY"
    NEGATIVE_VALUE = "NEGATIVE_VALUE"
    RESPONSE_ONLY = "RESPONSE_ONLY"
    OVER_BUDGET = "OVER_BUDGET"
    FREQUENCY_CAP = "FREQUENCY_CAP"
    NOT_ELIGIBLE_MIN_SPEND = "NOT_ELIGIBLE_MIN_SPEND"
    MIN_SPEND_UNVERIFIED = "MIN_SPEND_UNVERIFIED"
    OUTSIDE_VALIDITY = "OUTSIDE_VALIDITY"
    OUT_OF_SELLER_SCOPE = "OUT_OF_SELLER_SCOPE"
    EXPLORATION = "EXPLORATION"
    NOTHING_BEATS_NO_OFFER = "NOTHING_BEATS_NO_OFFER"
    NO_ELIGIBLE_OFFER = "NO_ELIGIBLE_OFFER"


REJECTION_ORDER: tuple[Reason, ...] = (
    Reason.FREQUENCY_CAP,
    Reason.NOT_ELIGIBLE_MIN_SPEND,
    Reason.OUT_OF_SELLER_SCOPE,
    Reason.OUTSIDE_VALIDITY,
)
"""Which rejection explains a unit with no eligible offer: the check it got furthest in."""


class PolicyConfig(StrictConfig):
    """Settings of :class:`~recsys.policy.OfferPolicy` (money in the dataset's currency)."""

    send_cost: float = Field(
        default=0.0, ge=0, description="cost of issuing one offer (e.g. an SMS)"
    )
    default_shipping_cost: float = Field(
        default=DEFAULT_SHIPPING_COST,
        ge=0,
        description="cost of a free_shipping redemption without cost",
    )
    assumed_incremental_share: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="response-only fallback: share of redemptions that are new",
    )
    margin_default: float = Field(
        default=0.3, ge=0, le=1, description="margin when a candidate has none"
    )
    max_offers_per_buyer: int | None = Field(
        default=3, ge=1, description="offers per buyer within the cap window; None = no cap"
    )
    cap_window_days: float = Field(default=7.0, gt=0, description="frequency-cap window length")
    max_per_tool: int | None = Field(
        default=2, ge=1, description="offers of one tool per buyer within the window; None = no cap"
    )
    budgets: dict[str, Annotated[float, Field(ge=0)]] | None = Field(
        default=None,
        description=f"spend limit per seller_id ('{PLATFORM_BUDGET_KEY}' = platform-wide)",
    )
    budget_basis: Literal["expected", "worst_case"] = "expected"
    one_offer_per: Literal["seller", "buyer"] = Field(
        default="buyer", description="decision unit: one offer per buyer, or per buyer and seller"
    )
    exploration: Literal["none", "epsilon", "softmax"] = "none"
    epsilon: float = Field(default=0.1, ge=0, le=1)
    temperature: float = Field(default=1.0, gt=0, description="softmax temperature, in money")
    seed: int | None = Field(default=0, description="seed of the default random generator")
