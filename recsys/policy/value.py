"""Expected incremental profit of issuing an offer, against the baseline of sending nothing.

Derivation (one buyer, one offer; V = expected order value, m = margin fraction,
p0 = P(purchase) without the offer, u = uplift, C = cost of one redemption,
s = cost of sending the offer)::

    profit without the offer  = p0 * m * V
    profit with the offer     = (p0 + u) * m * V  -  P(redeem) * C  -  s
    incremental               = m * u * V  -  p_redeem * C  -  s

A redemption can only happen on a purchase, so ``p_redeem * C`` already contains the
discount paid on purchases that would have happened anyway (the "would buy anyway"
buyers): no separate term for it is needed, and a buyer with ``u = 0`` and a high
``p_redeem`` is pure cost. Offering nothing is worth exactly 0 by construction.

When the uplift could not be learned (``uplift`` null: no control group, no logged
propensities), the *response-only* fallback assumes that a share ``a`` (the config's
``assumed_incremental_share``) of the redemptions are purchases the offer caused, i.e.
``u ~= a * p_redeem``::

    incremental ~= m * a * p_redeem * V  -  p_redeem * C  -  s

The column ``value_basis`` says which formula a row used ("uplift" or "response").
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

from recsys.policy.arrays import Valued, decision_score, redemption_cost, spend, value_options
from recsys.policy.config import (
    BASIS_RESPONSE,
    BASIS_UPLIFT,
    DEFAULT_SHIPPING_COST,
    PROFIT_EPS,
    PolicyConfig,
)

__all__ = [
    "BASIS_RESPONSE",
    "BASIS_UPLIFT",
    "DEFAULT_SHIPPING_COST",
    "PROFIT_EPS",
    "decision_scores",
    "expected_incremental_profit",
    "float_column",
    "redemption_cost",
    "value_of",
    "with_score",
    "with_spend",
    "with_value",
]


def float_column(frame: pl.DataFrame, name: str) -> NDArray[np.float64]:
    """A column as a float array, null = NaN (all NaN when the frame lacks it)."""
    if name not in frame.columns:
        return np.full(frame.height, np.nan)
    return frame[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def value_of(candidates: pl.DataFrame, config: PolicyConfig) -> Valued:
    """:func:`recsys.policy.arrays.value_options` of a candidates frame's columns: the one
    implementation of an option's value, score, spend and reason case. Cost: O(rows)."""
    return value_options(
        tool=candidates["tool"].to_numpy(),
        p_redeem=float_column(candidates, "p_redeem"),
        uplift=float_column(candidates, "uplift"),
        p_purchase=float_column(candidates, "p_purchase"),
        order_value=float_column(candidates, "order_value"),
        margin=float_column(candidates, "margin"),
        offer_value=float_column(candidates, "offer_value"),
        offer_cost=float_column(candidates, "offer_cost"),
        score=float_column(candidates, "score"),
        config=config,
    )


def expected_incremental_profit(candidates: pl.DataFrame, config: PolicyConfig) -> pl.DataFrame:
    """Add ``redemption_cost``, ``incremental_p``, ``expected_value``, ``value_basis`` and
    ``score``.

    ``candidates`` is a validated candidates frame (:func:`~recsys.policy.validate_candidates`);
    a null ``margin`` is taken as ``config.margin_default``. ``incremental_p`` is the change
    in purchase probability used: the uplift, or ``assumed_incremental_share * p_redeem``
    in the response-only fallback. See the module docstring for the derivation.
    ``score`` is what the policy decides by: the candidates' own ``score`` where the
    scorer gave one (`decision_scores` of a learned policy), else the expected value.
    Computed by :func:`value_of` (numpy), so a frame and a served request share the rule.
    """
    return with_value(candidates, value_of(candidates, config))


def with_value(candidates: pl.DataFrame, valued: Valued, *extra: Literal["spend"]) -> pl.DataFrame:
    """`candidates` with the columns of :func:`expected_incremental_profit` from `valued`
    (plus ``spend`` when asked)."""
    basis = pl.Series("value_basis", valued.uplift_basis)
    columns = [
        pl.Series("redemption_cost", valued.redemption_cost),
        pl.Series("incremental_p", valued.incremental_p),
        pl.when(pl.lit(basis))
        .then(pl.lit(BASIS_UPLIFT))
        .otherwise(pl.lit(BASIS_RESPONSE))
        .alias("value_basis"),
        pl.Series("expected_value", valued.expected_value),
        pl.Series("score", valued.score),
    ]
    if "spend" in extra:
        columns.append(pl.Series("spend", valued.spend))
    return candidates.with_columns(columns)


def with_score(valued: pl.DataFrame) -> pl.DataFrame:
    """`valued` with ``score``, what the policy decides by
    (:func:`recsys.policy.arrays.decision_score`): its own where a learned policy gave
    one, else the expected value."""
    score = decision_score(float_column(valued, "score"), float_column(valued, "expected_value"))
    return valued.with_columns(pl.Series("score", score))


def with_spend(valued: pl.DataFrame, basis: str, send_cost: float) -> pl.DataFrame:
    """`valued` (with ``p_redeem`` and ``redemption_cost``) plus its budget ``spend``
    (:func:`recsys.policy.arrays.spend`)."""
    out = spend(
        float_column(valued, "p_redeem"), float_column(valued, "redemption_cost"), basis, send_cost
    )
    return valued.with_columns(pl.Series("spend", out))


def decision_scores(
    unit: np.ndarray,
    value: np.ndarray,
    draws: np.ndarray,
    is_default: np.ndarray,
    z: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The number the policy decides by: leave the default only where it surely pays.

    Per candidate row: its decision unit (`unit`, integer codes), expected incremental
    profit over nothing (`value`), draws from that value's uncertainty (B x n, shared
    across rows: draw b of every row comes from the same model draw, so contrasts keep
    their correlation) and whether it is its unit's *default* (the kind its seller would
    send everyone). With d the unit's default (the default row with the highest upper
    bound), or nothing (value 0, no doubt) when the unit has none::

        score = (value_d + z * se_d) + (value - value_d) - z * sd(draws - draws_d)

    so the default scores its upper confidence bound (it is dropped for nothing only
    when even that is negative), and another offer beats it only when the lower bound of
    its gain over the default is positive. Without a default this is the lower bound of
    the value itself. The policy issues a unit's best-scored offer when its score is
    positive. Returns (value_se, advantage_se, score); `advantage_se` is the standard
    error of the gain over the default (of the value, without one). Cost: O(B x n).

    Examples
    --------
    >>> import numpy as np
    >>> unit = np.array([0, 0])
    >>> value, draws = np.array([1.0, 1.5]), np.array([[1.0, 1.0], [1.0, 3.0]])
    >>> _, _, score = decision_scores(unit, value, draws, np.array([True, False]), 1.0)
    >>> score.round(3).tolist()  # the gain of 0.5 is within its doubt (sd 1.414)
    [1.0, 0.086]
    """
    value = np.asarray(value, dtype=np.float64)
    if len(value) == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    draws = np.asarray(draws, dtype=np.float64).reshape(-1, len(value))
    centred = draws - draws.mean(axis=0) if draws.shape[0] > 1 else np.zeros_like(draws)
    se = np.sqrt((centred**2).sum(axis=0) / max(draws.shape[0] - 1, 1))
    ucb = value + z * se
    # The default row of each unit: the default with the highest upper bound.
    default_row = np.full(int(unit.max()) + 1 if len(unit) else 0, -1, dtype=np.int64)
    candidates = np.flatnonzero(is_default)
    if len(candidates):
        order = candidates[np.lexsort((-ucb[candidates], unit[candidates]))]
        first = np.unique(unit[order], return_index=True)[1]
        default_row[unit[order[first]]] = order[first]
    d = default_row[unit] if len(unit) else np.empty(0, dtype=np.int64)
    has = d >= 0
    d_safe = np.where(has, d, 0)
    gap = centred - np.where(has, centred[:, d_safe], 0.0)
    advantage_se = np.sqrt((gap**2).sum(axis=0) / max(draws.shape[0] - 1, 1))
    base = np.where(has, ucb[d_safe] - value[d_safe], 0.0)
    score = base + value - z * advantage_se
    return se, advantage_se, score
