"""Reason codes a seller can read: a stable code plus a sentence with the numbers.

Every decision carries ``reason_codes`` (a list, the main reason first) and
``reason_text`` (the sentences, ``"; "``-joined). Codes are stable identifiers for
dashboards and tests; texts are for people and may be reworded.

All builders are polars expressions, so a batch of a million decisions is explained in
one vectorized pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from recsys.policy.arrays import CODE_TABLE, value_case
from recsys.policy.config import (
    NEGLIGIBLE_UPLIFT,
    REJECTION_ORDER,
    WOULD_BUY_ANYWAY_P,
    Reason,
)
from recsys.policy.value import float_column

__all__ = ["REJECTION_ORDER", "Reason"]


DESCRIPTIONS: dict[Reason, str] = {
    Reason.POSITIVE_UPLIFT: "the offer is expected to cause extra purchases worth its cost",
    Reason.WOULD_BUY_ANYWAY: "the buyer would likely buy anyway: a discount is pure cost",
    Reason.NEGATIVE_VALUE: "the offer's expected cost exceeds the extra margin it brings",
    Reason.RESPONSE_ONLY: "uplift could not be learned; ranked by predicted redemption",
    Reason.OVER_BUDGET: "the seller's budget went to offers worth more per unit of spend",
    Reason.FREQUENCY_CAP: "the buyer has received as many offers as the caps allow",
    Reason.NOT_ELIGIBLE_MIN_SPEND: "the cart is below the offer's minimum spend",
    Reason.MIN_SPEND_UNVERIFIED: "the cart value is unknown, so the minimum spend is unchecked",
    Reason.OUTSIDE_VALIDITY: "the offer is not valid at the decision time",
    Reason.OUT_OF_SELLER_SCOPE: "the offer belongs to another seller",
    Reason.EXPLORATION: "chosen at random, with a known probability, so the engine learns",
    Reason.NOTHING_BEATS_NO_OFFER: "no eligible offer is expected to beat sending nothing",
    Reason.NO_ELIGIBLE_OFFER: "the buyer has no eligible offer",
}
"""One-line meaning of every code (for documentation and the seller page)."""


def fmt(expr: pl.Expr, decimals: int = 2, *, signed: bool = False) -> pl.Expr:
    """A number as text, rounded; ``signed`` puts ``+`` before non-negative values."""
    rounded = expr.round(decimals)
    text = (rounded.cast(pl.Int64) if decimals == 0 else rounded).cast(pl.String)
    if signed:
        return pl.when(expr >= 0).then(pl.lit("+") + text).otherwise(text)
    return text


def pts(expr: pl.Expr, decimals: int = 1) -> pl.Expr:
    """A probability or probability change as percentage points text (0.031 -> "3.1")."""
    return fmt(expr * 100, decimals)


def positive_uplift_text() -> pl.Expr:
    return pl.format(
        "expected {} profit: the offer lifts purchase chance by {} pts",
        fmt(pl.col("expected_value"), signed=True),
        pts(pl.col("incremental_p")),
    )


def would_buy_anyway_text() -> pl.Expr:
    return pl.format(
        "{}% likely to buy without the offer and the offer adds {} pts: its cost of {} per "
        "redemption ({}% redeem) is pure cost, expected {} profit",
        pts(pl.col("p_purchase"), 0),
        pts(pl.col("incremental_p")),
        fmt(pl.col("redemption_cost")),
        pts(pl.col("p_redeem"), 0),
        fmt(pl.col("expected_value"), signed=True),
    )


LOWERS_PURCHASE = -0.0005
"""An uplift at or below this (-0.1 pts once printed) is told as the offer lowering the
purchase chance, not as a cost outweighing extra purchases."""


def negative_value_text() -> pl.Expr:
    """Why an offer is worth less than nothing, by what weighs most: the model expects it
    to lower purchases; or its redemptions cost more than the margin on the purchases it
    adds; or, free to redeem (a reminder), the margin does not cover sending it."""
    value = fmt(pl.col("expected_value"), signed=True)
    lift = pl.col("incremental_p")
    return (
        pl.when(lift <= LOWERS_PURCHASE)
        .then(
            pl.format(
                "expected {} profit: the offer is expected to lower purchase chance by {} pts",
                value,
                pts(-lift),
            )
        )
        .when(pl.col("redemption_cost") * pl.col("p_redeem") > 0)
        .then(
            pl.format(
                "expected {} profit: {}% redeem at a cost of {} each, more than the margin on "
                "the {} pts of extra purchases",
                value,
                pts(pl.col("p_redeem"), 0),
                fmt(pl.col("redemption_cost")),
                pts(lift),
            )
        )
        .otherwise(
            pl.format(
                "expected {} profit: the margin on the {} pts of extra purchases does not cover "
                "the cost of sending it",
                value,
                pts(lift),
            )
        )
    )


def response_only_text(assumed_share: float) -> pl.Expr:
    return pl.format(
        "uplift could not be learned from the data: ranked by response ({}% redeem, "
        "assuming {}% of redemptions are extra sales), expected {} profit",
        pts(pl.col("p_redeem"), 0),
        pl.lit(f"{assumed_share * 100:g}"),
        fmt(pl.col("expected_value"), signed=True),
    )


def min_spend_unverified_text() -> pl.Expr:
    return pl.format(
        "cart value unknown: the offer needs a minimum spend of {}", fmt(pl.col("min_spend"))
    )


def candidate_reason_codes(
    valued: pl.DataFrame,
    case: np.ndarray | None = None,
    *,
    would_buy_anyway_p: float = WOULD_BUY_ANYWAY_P,
    negligible_uplift: float = NEGLIGIBLE_UPLIFT,
) -> pl.DataFrame:
    """Add ``reason_codes`` (list of codes, main first) to valued candidates.

    Needs the columns of :func:`~recsys.policy.expected_incremental_profit`; an optional
    boolean ``min_spend_unverified`` (from eligibility) adds ``MIN_SPEND_UNVERIFIED``.
    The main code is one of POSITIVE_UPLIFT, RESPONSE_ONLY (positive, response basis),
    WOULD_BUY_ANYWAY (non-positive, p_purchase >= ``would_buy_anyway_p``, |uplift| <=
    ``negligible_uplift`` and a non-zero cost) or NEGATIVE_VALUE; a non-positive
    response-basis row adds RESPONSE_ONLY after its main code. The rule is
    :func:`recsys.policy.arrays.value_case` (pass its ``case`` when already computed).
    """
    if case is None:
        case = value_case(
            float_column(valued, "expected_value"),
            (valued["value_basis"] != "response").to_numpy(),
            float_column(valued, "p_purchase"),
            float_column(valued, "incremental_p"),
            float_column(valued, "redemption_cost"),
            would_buy_anyway_p=would_buy_anyway_p,
            negligible_uplift=negligible_uplift,
        )
    unverified = (
        valued["min_spend_unverified"].fill_null(False).to_numpy()
        if "min_spend_unverified" in valued.columns
        else np.zeros(valued.height, dtype=np.bool_)
    )
    index = pl.Series(np.asarray(case, dtype=np.uint32) * 2 + unverified, dtype=pl.UInt32)
    table = pl.Series([list(codes) for codes in CODE_TABLE], dtype=pl.List(pl.String))
    return valued.with_columns(table.gather(index).alias("reason_codes"))


def candidate_reason_text(coded: pl.DataFrame, *, assumed_share: float) -> pl.DataFrame:
    """Add ``reason_text`` (the sentences of ``reason_codes``, ``"; "``-joined).

    Kept apart from the codes because formatting numbers costs far more than the codes:
    apply it to the rows a person will read (the chosen actions, an API's top-k).
    """
    if coded.height == 0:
        return coded.with_columns(pl.lit(None, pl.String).alias("reason_text"))
    main = pl.col("reason_codes").list.first()
    later = pl.col("reason_codes").list.slice(1)
    main_text = text_by_case(
        coded,
        main,
        {
            Reason.POSITIVE_UPLIFT: positive_uplift_text(),
            Reason.RESPONSE_ONLY: response_only_text(assumed_share),
            Reason.WOULD_BUY_ANYWAY: would_buy_anyway_text(),
            Reason.NEGATIVE_VALUE: negative_value_text(),
        },
    )
    response_text = text_by_case(
        coded,
        later.list.contains(Reason.RESPONSE_ONLY.value),
        {True: response_only_text(assumed_share)},
    )
    unverified_text = text_by_case(
        coded,
        later.list.contains(Reason.MIN_SPEND_UNVERIFIED.value),
        {True: min_spend_unverified_text()},
    )
    parts = [main_text.alias("_t0"), response_text.alias("_t1"), unverified_text.alias("_t2")]
    text = pl.concat_str(["_t0", "_t1", "_t2"], separator="; ", ignore_nulls=True)
    return (
        coded.with_columns(parts).with_columns(text.alias("reason_text")).drop("_t0", "_t1", "_t2")
    )


def text_by_case(frame: pl.DataFrame, case: pl.Expr, texts: Mapping[Any, pl.Expr]) -> pl.Series:
    """One string per row: ``texts[case]`` evaluated only on the rows of that case (else null)."""
    return values_by_case(frame, case, texts, pl.String())


def values_by_case(
    frame: pl.DataFrame, case: pl.Expr, exprs: Mapping[Any, pl.Expr], dtype: pl.DataType
) -> pl.Series:
    """One value per row: ``exprs[case]`` evaluated only on the rows of that case (else null).

    ``pl.when`` chains evaluate every branch on every row; with string formatting on a
    million rows that is most of the policy's time, so each branch here runs on its own
    rows, gathering only the columns it reads.
    """
    if frame.height <= SMALL_FRAME_ROWS:
        return _values_by_when(frame, case, exprs, dtype)
    needed = sorted({name for expr in exprs.values() for name in expr.meta.root_names()})
    indexed = frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_i"), *needed)
    indexed = indexed.with_columns(frame.select(case.alias("_case")).to_series())
    parts = [pl.DataFrame(schema={"_i": pl.UInt32, "_v": dtype})]
    covered = pl.lit(False)
    for key, expr in exprs.items():
        hit = pl.col("_case") == pl.lit(getattr(key, "value", key))
        covered = covered | hit
        rows = indexed.filter(hit.fill_null(False))
        if rows.height:
            parts.append(rows.select("_i", expr.cast(dtype).alias("_v")))
    rest = indexed.filter(~covered.fill_null(False))
    parts.append(rest.select("_i", pl.lit(None, dtype=dtype).alias("_v")))
    return pl.concat(parts).sort("_i")["_v"]


SMALL_FRAME_ROWS = 512
"""Up to this many rows `values_by_case` evaluates one `pl.when` chain: on the few rows of
an API request the per-case filters cost more (a fixed ~0.2 ms each) than formatting
every branch on every row."""


def _values_by_when(
    frame: pl.DataFrame, case: pl.Expr, exprs: Mapping[Any, pl.Expr], dtype: pl.DataType
) -> pl.Series:
    if not exprs:
        return pl.Series("_v", [None] * frame.height, dtype=dtype)
    chain: Any = pl
    for key, expr in exprs.items():
        hit = (case == pl.lit(getattr(key, "value", key))).fill_null(False)
        chain = chain.when(hit).then(expr.cast(dtype))
    return frame.select(chain.otherwise(pl.lit(None, dtype=dtype)).alias("_v")).to_series()


def over_budget_text() -> pl.Expr:
    """Needs ``expected_value``, ``spend`` and ``shadow_price`` of the best offer."""
    return pl.format(
        "seller budget used by better offers: the best offer is worth {} but spends {} at a "
        "shadow price of {} per unit of budget",
        fmt(pl.col("expected_value"), signed=True),
        fmt(pl.col("spend")),
        fmt(pl.col("shadow_price"), 3),
    )


def nothing_text() -> pl.Expr:
    """Needs the best offer's ``expected_value``."""
    return pl.format(
        "no eligible offer beats sending nothing (best expected {} profit)",
        fmt(pl.col("expected_value"), signed=True),
    )


def batch_cap_text() -> pl.Expr:
    return pl.format(
        "the buyer's remaining frequency-cap allowance went to better offers (best worth {})",
        fmt(pl.col("expected_value"), signed=True),
    )


def exploration_text() -> pl.Expr:
    """Needs ``propensity`` (probability of the chosen action)."""
    return pl.format(
        "chosen at random to learn buyers' responses (probability {})",
        fmt(pl.col("propensity"), 4),
    )
