"""Features built from contract tables: the buyer x item interaction matrix, offer scopes."""

from recsys.features.interactions import (
    EventWeights,
    IdIndex,
    Interactions,
    InteractionStats,
    OfferItems,
    build_interactions,
    build_offer_items,
)

__all__ = [
    "EventWeights",
    "IdIndex",
    "InteractionStats",
    "Interactions",
    "OfferItems",
    "build_interactions",
    "build_offer_items",
]
