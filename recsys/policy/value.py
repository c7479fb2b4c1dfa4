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

import numpy as np
import polars as pl

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
    "redemption_cost",
    "spend_expr",
    "with_score",
]

IntoExpr = pl.Expr | str


def _expr(x: IntoExpr) -> pl.Expr:
    return pl.col(x) if isinstance(x, str) else x


def redemption_cost(
    tool: IntoExpr = "tool",
    offer_value: IntoExpr = "offer_value",
    offer_cost: IntoExpr = "offer_cost",
    order_value: IntoExpr = "order_value",
    *,
    default_shipping_cost: float = DEFAULT_SHIPPING_COST,
) -> pl.Expr:
    """Cost to the seller of one redemption, as a polars expression (strings = column names).

    - ``offer_cost`` when it is not null (the contract's explicit cost wins);
    - ``percent_off`` and ``points``: ``offer_value * order_value`` (value is a fraction);
    - ``amount_off``: ``min(offer_value, order_value)`` (a discount cannot exceed the order);
    - ``free_shipping``: ``default_shipping_cost``;
    - ``reminder`` and any other tool: 0.

    A discount tool whose ``offer_value`` is null and has no cost counts as 0: give the
    scorer an ``offer_cost`` for such offers.

    Examples
    --------
    >>> import polars as pl
    >>> df = pl.DataFrame({"tool": ["percent_off", "amount_off", "free_shipping", "reminder"],
    ...                    "offer_value": [0.1, 30.0, None, None],
    ...                    "offer_cost": [None, None, None, None],
    ...                    "order_value": [50.0, 20.0, 50.0, 50.0]})
    >>> df.select(redemption_cost(default_shipping_cost=4.0))["redemption_cost"].to_list()
    [5.0, 20.0, 4.0, 0.0]
    """
    tool_e, value_e = _expr(tool), _expr(offer_value).fill_null(0.0)
    order_e = _expr(order_value)
    derived = (
        pl.when(tool_e.is_in(["percent_off", "points"]))
        .then(value_e * order_e)
        .when(tool_e == "amount_off")
        .then(pl.min_horizontal(value_e, order_e))
        .when(tool_e == "free_shipping")
        .then(pl.lit(float(default_shipping_cost)))
        .otherwise(pl.lit(0.0))
    )
    return _expr(offer_cost).fill_null(derived).cast(pl.Float64).alias("redemption_cost")


def expected_incremental_profit(candidates: pl.DataFrame, config: PolicyConfig) -> pl.DataFrame:
    """Add ``redemption_cost``, ``incremental_p``, ``expected_value``, ``value_basis`` and
    ``score``.

    ``candidates`` is a validated candidates frame (:func:`~recsys.policy.validate_candidates`);
    a null ``margin`` is taken as ``config.margin_default``. ``incremental_p`` is the change
    in purchase probability used: the uplift, or ``assumed_incremental_share * p_redeem``
    in the response-only fallback. See the module docstring for the derivation.
    ``score`` is what the policy decides by: the candidates' own ``score`` where the
    scorer gave one (`decision_scores` of a learned policy), else the expected value.
    """
    margin = pl.col("margin").fill_null(config.margin_default)
    has_uplift = pl.col("uplift").is_not_null() & pl.col("uplift").is_not_nan()
    incremental = (
        pl.when(has_uplift)
        .then(pl.col("uplift"))
        .otherwise(config.assumed_incremental_share * pl.col("p_redeem"))
    )
    out = candidates.with_columns(
        redemption_cost(default_shipping_cost=config.default_shipping_cost),
        incremental.alias("incremental_p"),
        pl.when(has_uplift)
        .then(pl.lit(BASIS_UPLIFT))
        .otherwise(pl.lit(BASIS_RESPONSE))
        .alias("value_basis"),
    )
    value = (
        margin * pl.col("incremental_p") * pl.col("order_value")
        - pl.col("p_redeem") * pl.col("redemption_cost")
        - config.send_cost
    )
    return with_score(out.with_columns(value.alias("expected_value")))


def with_score(valued: pl.DataFrame) -> pl.DataFrame:
    """`valued` with ``score``, what the policy decides by: its own where a learned
    policy gave one, else the expected value."""
    given = pl.col("score") if "score" in valued.columns else pl.lit(None, pl.Float64)
    return valued.with_columns(pl.coalesce(given, pl.col("expected_value")).alias("score"))


def spend_expr(basis: str, send_cost: float) -> pl.Expr:
    """Budget spend of issuing one offer (needs a ``redemption_cost`` column).

    ``"expected"``: ``p_redeem * redemption_cost + send_cost`` — what the seller pays on
    average; ``"worst_case"``: ``redemption_cost + send_cost`` — as if every offer were
    redeemed, so the budget can never be overrun whatever buyers do.
    """
    if basis == "expected":
        cost = pl.col("p_redeem") * pl.col("redemption_cost")
    elif basis == "worst_case":
        cost = pl.col("redemption_cost")
    else:
        raise ValueError(f"budget_basis must be 'expected' or 'worst_case', got {basis!r}")
    return (cost + send_cost).alias("spend")


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
