"""The holdout applied to a batch's answers: a held-out request gets nothing, and every
logged propensity becomes the exact holdout-joint one (`recsys.policy.holdout`).

Per-request cost: one salted hash per request (`assign_arms`) and a few float operations
per answer (`hold_out`); no frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from recsys.features.pairs import PLATFORM
from recsys.policy.holdout import (
    CONTROL,
    HOLDOUT_TEXT,
    TREATED,
    HoldoutConfig,
    assign_control,
    joint_propensity,
)
from serving.schemas import RankedOffer


@dataclass(frozen=True)
class Arms:
    """Each request's arm: ``control`` (held out) and its seller's control ``share``;
    ``enabled`` False when no holdout is configured (propensities left as they are)."""

    control: np.ndarray
    share: np.ndarray
    enabled: bool


def assign_arms(
    requests: Sequence[tuple[str, str | None]], now: datetime, config: HoldoutConfig
) -> Arms:
    """The arm of every (buyer, seller scope) request; an unscoped request is held out of
    the platform's offers under the platform key."""
    buyers = [buyer for buyer, _ in requests]
    sellers = [scope if scope is not None else PLATFORM for _, scope in requests]
    control, share = assign_control(buyers, sellers, now, config)
    return Arms(control=control, share=share, enabled=config.enabled)


def hold_out(
    arms: Arms,
    i: int,
    offers: list[RankedOffer],
    reason: str | None,
    explored: bool,
    propensity: float,
    p_nothing: float,
) -> tuple[list[RankedOffer], str | None, bool, float, str | None]:
    """Request ``i``'s answer under the holdout: (offers, no-offer reason, explored,
    logged propensity, arm).

    A held-out request gets no offers and the holdout's reason; its propensity is
    ``share + (1 - share) * p_nothing``. A treated one keeps its answer, each listed
    offer's propensity times ``1 - share`` and a "nothing" the same formula as control.
    Without a holdout everything is returned unchanged with arm None.
    """
    if not arms.enabled:
        return offers, reason, explored, propensity, None
    share = float(arms.share[i])
    if arms.control[i]:
        offers, reason, explored = [], HOLDOUT_TEXT, False
    joint = joint_propensity(
        np.array([share]), np.array([not offers]), np.array([propensity]), np.array([p_nothing])
    )
    offers = [o.model_copy(update={"propensity": o.propensity * (1.0 - share)}) for o in offers]
    arm = CONTROL if arms.control[i] else TREATED
    return offers, reason, explored, float(joint[0]), arm
