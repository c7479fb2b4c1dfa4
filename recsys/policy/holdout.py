"""The live policy's holdout: a stable per-seller control group, decided before the model.

A share ``s`` of every seller's buyers (default 5 %) is held out: they get no offer, so
the program's lift is measured against them (`recsys.evaluation.incrementality`) and
uplift stays learnable from served logs alone (every logged "nothing" has a known,
positive probability). The assignment is a salted hash of (salt, period, seller, buyer)
mapped to [0, 1): a buyer is in the seller's control group when the draw is below the
seller's share. It depends on nothing the model says, and it is stable: every request
of a buyer to a seller in one period (``period_days`` long, counted from the Unix epoch)
lands in the same arm; the next period draws afresh (every buyer at once).

Exact joint propensities. A decision is drawn in two stages: the holdout (control with
probability ``s``), then, for treated buyers, the policy's own exploration. The logged
action is the offer given, "nothing" being one action whatever its cause, so
``P(offer o) = (1 - s) * p(o)`` and ``P(nothing) = s + (1 - s) * p(nothing)``, where ``p``
is the treated policy's probability (exploration included). A control row and a treated
"nothing" of the same buyer therefore log the same propensity; the ``arm`` column of the
decision log tells them apart for the incrementality report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from pydantic import Field, field_validator

from recsys.config import StrictConfig

CONTROL = "control"
TREATED = "treated"
"""Values of the decision log's ``arm`` column (null: decided without a holdout)."""

HOLDOUT_TEXT = (
    "held out: this buyer is in the seller's control group for the period, so the "
    "engine's effect can be measured against buyers who get no offer"
)
"""The answer's ``no_offer_reason`` for a held-out buyer."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCALE = float(2**64)


class HoldoutConfig(StrictConfig):
    """Who is held out: a share per seller, a salt and the period a buyer stays in its arm.

    ``share`` applies to every seller not named in ``sellers`` (``seller_id -> share``);
    a request without a seller scope uses ``share`` under the platform key. ``share`` 0
    turns the holdout off. Changing ``salt`` re-draws every buyer at once.
    """

    share: float = Field(0.05, ge=0.0, lt=1.0, description="control share of each seller")
    sellers: dict[str, float] = Field(
        default_factory=dict, description="per-seller control shares, overriding `share`"
    )
    salt: str = Field("promo-holdout", min_length=1, description="hash salt of the assignment")
    period_days: int = Field(28, ge=1, description="days a buyer stays in or out")

    @field_validator("sellers")
    @classmethod
    def _shares_in_range(cls, sellers: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in sellers.items() if not 0.0 <= v < 1.0}
        if bad:
            raise ValueError(f"per-seller shares must be in [0, 1), got {bad}")
        return sellers

    @property
    def enabled(self) -> bool:
        """Whether any seller holds buyers out."""
        return self.share > 0 or any(v > 0 for v in self.sellers.values())

    def share_of(self, sellers: Sequence[str]) -> np.ndarray:
        """The control share of each seller key (float64 array). Cost: one dict lookup each."""
        return np.fromiter(
            (self.sellers.get(s, self.share) for s in sellers), dtype=np.float64, count=len(sellers)
        )


def holdout_period(ts: datetime, period_days: int) -> int:
    """The period index of ``ts`` (whole ``period_days`` since the Unix epoch, UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int((ts - _EPOCH).total_seconds() // (period_days * 86400))


def holdout_draws(
    buyers: Sequence[str], sellers: Sequence[str], period: int, salt: str
) -> np.ndarray:
    """A uniform draw in [0, 1) per (buyer, seller), fixed by ``salt`` and ``period``.

    blake2b of ``salt|period|seller|buyer`` (64 bits): stable across processes, machines
    and library versions, unlike Python's ``hash`` or a dataframe library's hash. Cost:
    about 1 µs per pair (a Python loop; a request batch holds at most a few thousand).
    """
    if len(buyers) != len(sellers):
        raise ValueError(f"holdout: {len(buyers)} buyers but {len(sellers)} sellers")
    prefix = f"{salt}|{period}|".encode()
    out = np.empty(len(buyers), dtype=np.float64)
    for i, (buyer, seller) in enumerate(zip(buyers, sellers, strict=True)):
        digest = hashlib.blake2b(
            prefix + seller.encode() + b"|" + buyer.encode(), digest_size=8
        ).digest()
        out[i] = int.from_bytes(digest, "big") / _SCALE
    return out


def assign_control(
    buyers: Sequence[str], sellers: Sequence[str], ts: datetime, config: HoldoutConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Which (buyer, seller) pairs are held out at ``ts``, and each pair's control share.

    Returns ``(control, share)``: a boolean and a float64 array, one entry per pair.
    Decided before, and independently of, the model. Cost: :func:`holdout_draws`.
    """
    share = config.share_of(sellers)
    if not config.enabled or len(buyers) == 0:
        return np.zeros(len(buyers), dtype=bool), share
    draws = holdout_draws(buyers, sellers, holdout_period(ts, config.period_days), config.salt)
    return draws < share, share


def joint_propensity(
    share: np.ndarray, is_nothing: np.ndarray, p_action: np.ndarray, p_nothing: np.ndarray
) -> np.ndarray:
    """Exact probability of each logged action under holdout-then-policy (module doc).

    ``share``: the unit's control share; ``is_nothing``: the logged action is "nothing"
    (held out, or chosen by the policy); ``p_action``: the treated policy's probability
    of the logged offer (unused for "nothing"); ``p_nothing``: the treated policy's
    probability of "nothing" for the unit (1 when it had no eligible offer).

    >>> joint_propensity(np.array([0.1, 0.1]), np.array([False, True]),
    ...                  np.array([0.8, 0.0]), np.array([0.2, 0.2])).round(3).tolist()
    [0.72, 0.28]
    """
    share = np.asarray(share, dtype=np.float64)
    treated = 1.0 - share
    return np.where(
        np.asarray(is_nothing, dtype=bool),
        share + treated * np.asarray(p_nothing, dtype=np.float64),
        treated * np.asarray(p_action, dtype=np.float64),
    )
