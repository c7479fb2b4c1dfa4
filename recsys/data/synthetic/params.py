"""The simulator's configuration and its true behavioural parameters.

The matrices here *are* the ground truth: how often buyers in each journey stage order,
how they move between stages, and how much each marketing tool moves each stage. They
are documented in `docs/synthetic.md`; tests check the generated data against them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from recsys.config import StrictConfig
from recsys.data.schema import JOURNEY_STAGES

STAGES: tuple[str, ...] = JOURNEY_STAGES
NEW, BROWSING, CART_ABANDONER, REPEAT, LOYAL, LAPSING, CHURNED = range(len(STAGES))

TOOLS: tuple[str, ...] = ("percent_off", "amount_off", "free_shipping", "points", "reminder")
PERCENT_OFF, AMOUNT_OFF, FREE_SHIPPING, POINTS, REMINDER = range(len(TOOLS))

# Weekly expected number of orders of a buyer of average activity, by stage.
ORDER_RATE = np.array([0.10, 0.03, 0.06, 0.20, 0.70, 0.04, 0.004])
# Weekly expected number of sessions that do not end in an order, by stage.
BROWSE_RATE = np.array([0.60, 0.45, 0.40, 0.15, 0.20, 0.08, 0.01])
# Probability that a browsing session puts an item in the cart, by stage.
CART_PROB = np.array([0.15, 0.08, 0.75, 0.20, 0.20, 0.10, 0.05])
# Probability that a session with a cart reaches checkout without buying, by stage.
ABANDON_AT_CHECKOUT = np.array([0.10, 0.05, 0.40, 0.10, 0.10, 0.10, 0.05])

# Stage transitions at the end of a week, given the buyer ordered (T1) or not (T0).
TRANSITION_NO_ORDER = np.array(
    [
        # new   brows  cart   repeat loyal  lapse  churn
        [0.40, 0.35, 0.20, 0.00, 0.00, 0.00, 0.05],  # new
        [0.00, 0.85, 0.08, 0.00, 0.00, 0.00, 0.07],  # browsing
        [0.00, 0.25, 0.65, 0.00, 0.00, 0.00, 0.10],  # cart_abandoner
        [0.00, 0.00, 0.00, 0.85, 0.00, 0.15, 0.00],  # repeat
        [0.00, 0.00, 0.00, 0.00, 0.93, 0.07, 0.00],  # loyal
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.86, 0.14],  # lapsing
        [0.00, 0.03, 0.00, 0.00, 0.00, 0.00, 0.97],  # churned
    ]
)
TRANSITION_ORDER = np.array(
    [
        [0.00, 0.00, 0.00, 1.00, 0.00, 0.00, 0.00],  # new -> first purchase -> repeat
        [0.00, 0.00, 0.00, 1.00, 0.00, 0.00, 0.00],
        [0.00, 0.00, 0.00, 1.00, 0.00, 0.00, 0.00],
        [0.00, 0.00, 0.00, 0.82, 0.18, 0.00, 0.00],
        [0.00, 0.00, 0.00, 0.00, 1.00, 0.00, 0.00],
        [0.00, 0.00, 0.00, 1.00, 0.00, 0.00, 0.00],  # a lapsing buyer won back
        [0.00, 0.00, 0.00, 1.00, 0.00, 0.00, 0.00],
    ]
)
# Stage of buyers already present when the history starts.
INITIAL_STAGE = np.array([0.00, 0.25, 0.10, 0.30, 0.12, 0.10, 0.13])

# Causal effect: probability that an offer of a tool turns a buyer who would NOT have
# ordered from the seller this week into one who does, by tool (rows) and stage (cols).
# Loyal buyers would buy anyway: every discount to them is pure cost.
EFFECT = np.array(
    [
        # new   brows  cart   repeat loyal  lapse  churn
        [0.04, 0.025, 0.05, 0.03, 0.00, 0.07, 0.004],  # percent_off
        [0.05, 0.015, 0.04, 0.02, 0.00, 0.12, 0.008],  # amount_off
        [0.03, 0.010, 0.16, 0.015, 0.00, 0.02, 0.000],  # free_shipping
        [0.00, 0.000, 0.00, 0.04, 0.00, 0.015, 0.000],  # points
        [0.01, 0.020, 0.05, 0.00, 0.00, 0.01, 0.000],  # reminder
    ]
)
# Where the causal effects' heterogeneity lives (`SyntheticConfig.effects`):
# - "stage": EFFECT[tool, stage] above, the latent journey stage (today's world);
# - "attributes": EFFECT_BY_ACQUISITION[tool, channel], by the buyer's acquisition channel,
#   an attribute written to buyers.parquet; the journey stage does not matter;
# - "uniform": UNIFORM_EFFECT[tool], one effect per tool for every buyer.
# In "stage" and "attributes" money-off tools also move price-sensitive buyers more, an
# offer matters as much as the buyer shops at its seller, and an item-scoped offer as much
# as the buyer likes its category; in "uniform" none of that applies.
EffectsWorld = Literal["stage", "attributes", "uniform"]
EFFECTS_WORLDS: tuple[str, ...] = ("stage", "attributes", "uniform")
ACQUISITION: tuple[str, ...] = ("organic", "search_ads", "social", "deal_site")
ACQUISITION_SHARE = np.array([0.40, 0.25, 0.20, 0.15])
EFFECT_BY_ACQUISITION = np.array(
    [
        # organic search social deal_site
        [0.000, 0.040, 0.010, 0.100],  # percent_off
        [0.005, 0.070, 0.010, 0.090],  # amount_off
        [0.000, 0.030, 0.060, 0.050],  # free_shipping
        [0.030, 0.000, 0.000, 0.020],  # points
        [0.010, 0.010, 0.050, 0.000],  # reminder
    ]
)
UNIFORM_EFFECT = np.array([0.030, 0.035, 0.030, 0.015, 0.012])

# Probability that a buyer holding an offer uses it on an order with the seller.
REDEEM_GIVEN_ORDER = np.array([0.40, 0.45, 0.50, 0.50, 0.0])
# How price sensitivity scales the effect of money-off tools: 0.4 + 1.2 * sensitivity.
PRICE_TOOLS = (PERCENT_OFF, AMOUNT_OFF)

LINES_EXTRA_N, LINES_EXTRA_P = 2, 0.4  # lines per order = 1 + Binomial(2, 0.4)
QTY_EXTRA_P = 0.25  # quantity per line = 1 + Bernoulli(0.25)
MEAN_LINES = 1 + LINES_EXTRA_N * LINES_EXTRA_P
MEAN_QTY = 1 + QTY_EXTRA_P
N_STAPLES = 4
STYLE_PRICE = np.array([0.7, 1.0, 1.6])  # budget, standard, premium
SHIPPING_COST = 4.5  # what the seller pays per free-shipping redemption
SCOPE_RELEVANCE_SCALE = 3.0  # relevance of a category offer = min(1, 3 * taste share)
SELLER_AFFINITY_SCALE = 2.0  # effect of a seller's offer scales with min(1, 2 * share)


class SyntheticConfig(StrictConfig):
    """How large a marketplace to simulate and how its campaigns were run."""

    buyers: int = Field(2000, ge=10, description="number of buyers")
    seed: int = Field(0, ge=0)
    sellers: int | None = Field(None, ge=1, description="default: grows with buyers, 3-20")
    categories: int = Field(16, ge=2)
    items_per_bucket: int = Field(5, ge=1, description="items per seller x category x style")
    weeks: int = Field(20, ge=6, description="weeks of history")
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    wave_weeks: tuple[int, ...] | None = Field(
        None, description="weeks with a randomized campaign; default: 4 spread over the end"
    )
    manual_campaign_week: int | None = Field(None, description="default: weeks - 9")
    participation: float = Field(0.6, gt=0, le=1, description="share of buyers in a wave")
    control_share: float = Field(0.2, gt=0, lt=1, description="share of a wave kept as control")
    send_cost: float = Field(0.02, ge=0, description="cost of issuing one offer")
    effects: EffectsWorld = Field(
        "stage",
        description="where the offers' causal effects vary: by journey stage, by a buyer "
        "attribute (acquisition channel), or uniform (one effect per tool)",
    )
    chunk_buyers: int = Field(50_000, ge=100, description="buyers simulated per chunk")

    @model_validator(mode="after")
    def _check_weeks(self) -> SyntheticConfig:
        for week in self.waves:
            if not 0 <= week < self.weeks:
                raise ValueError(f"wave week {week} is outside 0..{self.weeks - 1}")
        return self

    @property
    def n_sellers(self) -> int:
        return self.sellers or int(np.clip(self.buyers // 4000, 3, 20))

    @property
    def waves(self) -> tuple[int, ...]:
        if self.wave_weeks is not None:
            return self.wave_weeks
        return tuple(self.weeks - k for k in (8, 6, 4, 2))

    @property
    def manual_week(self) -> int:
        return (
            self.manual_campaign_week
            if self.manual_campaign_week is not None
            else (max(0, self.weeks - 9))
        )


# The offers each seller runs in one campaign: five store-wide tools and one
# item-scoped percent-off on one of its categories ("slots").
SLOT_TOOL = np.array([PERCENT_OFF, AMOUNT_OFF, FREE_SHIPPING, POINTS, REMINDER, PERCENT_OFF])
SLOT_VALUE = np.array([0.15, 5.0, np.nan, 0.05, np.nan, 0.20])
SLOT_COST = np.array([np.nan, 5.0, SHIPPING_COST, np.nan, 0.0, np.nan])
SLOT_SCOPED = np.array([False, False, False, False, False, True])
N_SLOTS = len(SLOT_TOOL)
# The logging policy's preferences (softmax logits) over slots by stage: a marketer's
# heuristics, randomized so every slot keeps a known, non-zero probability.
LOGGING_LOGITS = np.array(
    [
        # pct   amt   ship  pts   remind item_pct
        [0.6, 0.3, 0.0, -0.5, 0.0, 0.2],  # new
        [0.2, 0.0, 0.0, -0.5, 0.5, 0.4],  # browsing
        [0.0, 0.0, 0.8, -0.5, 0.6, 0.0],  # cart_abandoner
        [0.2, 0.2, 0.0, 0.5, 0.0, 0.3],  # repeat
        [0.3, 0.0, 0.0, 0.8, 0.0, 0.3],  # loyal
        [0.2, 0.7, 0.0, 0.0, 0.2, 0.0],  # lapsing
        [0.2, 0.5, 0.0, -0.5, 0.3, 0.0],  # churned
    ]
)
