"""The offers of the simulated marketplace and the logging policy that issued them.

Each randomized campaign wave gives every seller one offer per slot (see `SLOT_TOOL`);
a manual campaign sent by hand (no propensities, no control group) and the offers
valid at the decision time (scored by the ground truth, never issued) complete the set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.synthetic.catalog import Catalog
from recsys.data.synthetic.params import (
    LOGGING_LOGITS,
    N_SLOTS,
    PERCENT_OFF,
    SLOT_COST,
    SLOT_SCOPED,
    SLOT_TOOL,
    SLOT_VALUE,
    SyntheticConfig,
)

WAVE, MANUAL, DECISION = 0, 1, 2
KIND_NAMES = ("wave", "manual", "decision")


@dataclass(frozen=True)
class Offers:
    """All offers; index = offer code. `slot` is -1 for the manual campaign's offer."""

    tool: np.ndarray
    seller: np.ndarray
    value: np.ndarray
    cost: np.ndarray
    scope_category: np.ndarray  # -1: store-wide
    week: np.ndarray  # week the offer starts (config.weeks for decision offers)
    kind: np.ndarray
    campaign: np.ndarray
    slot: np.ndarray

    def __len__(self) -> int:
        return len(self.tool)

    def for_campaign(self, campaign: int) -> np.ndarray:
        """(n_sellers, N_SLOTS) offer codes of one slotted campaign."""
        codes = np.flatnonzero(self.campaign == campaign)
        return codes.reshape(-1, N_SLOTS)

    def scope_items(self, catalog: Catalog, offer: int) -> np.ndarray:
        """Item codes an item-scoped offer applies to (empty for store-wide offers)."""
        c = self.scope_category[offer]
        if c < 0:
            return np.empty(0, dtype=np.int64)
        mask = (catalog.category == c) & (catalog.seller == self.seller[offer])
        return np.flatnonzero(mask)


def build_offers(config: SyntheticConfig, catalog: Catalog) -> Offers:
    """Offers of every wave, the manual campaign and the decision time, seeded."""
    rng = np.random.default_rng([config.seed, 2])
    cols: dict[str, list[float]] = {k: [] for k in Offers.__dataclass_fields__}

    def add(
        tool: int,
        seller: int,
        value: float,
        cost: float,
        scope: int,
        week: int,
        kind: int,
        campaign: int,
        slot: int,
    ) -> None:
        for key, val in zip(
            (
                "tool",
                "seller",
                "value",
                "cost",
                "scope_category",
                "week",
                "kind",
                "campaign",
                "slot",
            ),
            (tool, seller, value, cost, scope, week, kind, campaign, slot),
            strict=True,
        ):
            cols[key].append(val)

    slotted = [(w, WAVE) for w in config.waves] + [(config.weeks, DECISION)]
    for campaign, (week, kind) in enumerate(slotted):
        for s in range(catalog.n_sellers):
            scope = int(rng.choice(catalog.seller_categories[s]))
            for slot in range(N_SLOTS):
                add(
                    int(SLOT_TOOL[slot]),
                    s,
                    SLOT_VALUE[slot],
                    SLOT_COST[slot],
                    scope if SLOT_SCOPED[slot] else -1,
                    week,
                    kind,
                    campaign,
                    slot,
                )
    add(PERCENT_OFF, 0, 0.10, np.nan, -1, config.manual_week, MANUAL, len(slotted), -1)
    ints = {"tool", "seller", "scope_category", "week", "kind", "campaign", "slot"}
    arrays = {k: np.array(v, dtype=np.int64 if k in ints else np.float64) for k, v in cols.items()}
    return Offers(**arrays)


def logging_probabilities(stage: np.ndarray, control_share: float) -> np.ndarray:
    """(n, 1 + N_SLOTS) probabilities of control and of each slot, rows summing to 1."""
    logits = LOGGING_LOGITS[stage]
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    return np.concatenate(
        [np.full((len(stage), 1), control_share), (1 - control_share) * soft], axis=1
    )
