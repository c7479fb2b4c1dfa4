"""The holdout applied to a batch's answers: a held-out request gets nothing, and every
logged propensity becomes the exact holdout-joint one (`recsys.policy.holdout`).

Per-request cost: one salted hash per request (`assign_arms`); the propensities of a
batch are one vectorized call (`logged_propensities`), and the listed offers are built
with their holdout-joint propensity (`offer_scale`), not copied; no frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from recsys.features.pairs import PLATFORM
from recsys.policy.holdout import (
    CONTROL,
    TREATED,
    HoldoutConfig,
    assign_control,
    joint_propensity,
)


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


def offer_scale(arms: Arms) -> np.ndarray:
    """Per request, the factor of its listed offers' propensities: the treated share
    ``1 - share`` (an offer is listed only if the request was not held out), or 1 without
    a holdout."""
    return 1.0 - arms.share if arms.enabled else np.ones(len(arms.control))


def logged_propensities(
    arms: Arms, offered: np.ndarray, propensity: np.ndarray, p_nothing: np.ndarray
) -> np.ndarray:
    """Each request's logged propensity under the holdout, in one vectorized pass.

    ``offered``: the policy's answer lists an offer; ``propensity``: the policy's
    probability of that action; ``p_nothing``: its probability of "nothing". A held-out
    request logs "nothing" with ``share + (1 - share) * p_nothing``; a treated one its
    action's holdout-joint probability (`joint_propensity`). Without a holdout the
    policy's own propensities are returned unchanged.
    """
    propensity = np.asarray(propensity, dtype=np.float64)
    if not arms.enabled:
        return propensity
    is_nothing = arms.control | ~np.asarray(offered, dtype=bool)
    return joint_propensity(arms.share, is_nothing, propensity, p_nothing)


def arm_of(arms: Arms, i: int) -> str | None:
    """Request ``i``'s arm as logged: ``control``, ``treated``, or None without a holdout."""
    if not arms.enabled:
        return None
    return CONTROL if arms.control[i] else TREATED
