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

from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from recsys.policy.policy import PolicyConfig

DEFAULT_SHIPPING_COST = 5.0
"""Cost of one free-shipping redemption when the offer has no cost of its own."""

PROFIT_EPS = 1e-9
"""An offer must beat sending nothing by more than this (rounding noise is not profit)."""

BASIS_UPLIFT = "uplift"
BASIS_RESPONSE = "response"

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
    """Add ``redemption_cost``, ``incremental_p``, ``expected_value`` and ``value_basis``.

    ``candidates`` is a validated candidates frame (:func:`~recsys.policy.validate_candidates`);
    a null ``margin`` is taken as ``config.margin_default``. ``incremental_p`` is the change
    in purchase probability used: the uplift, or ``assumed_incremental_share * p_redeem``
    in the response-only fallback. See the module docstring for the derivation.
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
    return out.with_columns(
        (
            margin * pl.col("incremental_p") * pl.col("order_value")
            - pl.col("p_redeem") * pl.col("redemption_cost")
            - config.send_cost
        ).alias("expected_value")
    )


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
