"""Reason codes a seller can read: a stable code plus a sentence with the numbers.

Every decision carries ``reason_codes`` (a list, the main reason first) and
``reason_text`` (the sentences, ``"; "``-joined). Codes are stable identifiers for
dashboards and tests; texts are for people and may be reworded.

All builders are polars expressions, so a batch of a million decisions is explained in
one vectorized pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import polars as pl

from recsys.policy.config import NEGLIGIBLE_UPLIFT, PROFIT_EPS, WOULD_BUY_ANYWAY_P


class Reason(StrEnum):
    """The reason codes of the policy."""

    POSITIVE_UPLIFT = "POSITIVE_UPLIFT"
    WOULD_BUY_ANYWAY = "WOULD_BUY_ANYWAY"
    NEGATIVE_VALUE = "NEGATIVE_VALUE"
    RESPONSE_ONLY = "RESPONSE_ONLY"
    OVER_BUDGET = "OVER_BUDGET"
    FREQUENCY_CAP = "FREQUENCY_CAP"
    NOT_ELIGIBLE_MIN_SPEND = "NOT_ELIGIBLE_MIN_SPEND"
    MIN_SPEND_UNVERIFIED = "MIN_SPEND_UNVERIFIED"
    OUTSIDE_VALIDITY = "OUTSIDE_VALIDITY"
    OUT_OF_SELLER_SCOPE = "OUT_OF_SELLER_SCOPE"
    EXPLORATION = "EXPLORATION"
    NOTHING_BEATS_NO_OFFER = "NOTHING_BEATS_NO_OFFER"
    NO_ELIGIBLE_OFFER = "NO_ELIGIBLE_OFFER"


REJECTION_ORDER: tuple[Reason, ...] = (
    Reason.FREQUENCY_CAP,
    Reason.NOT_ELIGIBLE_MIN_SPEND,
    Reason.OUT_OF_SELLER_SCOPE,
    Reason.OUTSIDE_VALIDITY,
)
"""Which rejection explains a unit with no eligible offer: the check it got furthest in."""


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


def negative_value_text() -> pl.Expr:
    return pl.format(
        "expected {} profit: {}% redeem at a cost of {} each, more than the margin on the "
        "{} pts of extra purchases",
        fmt(pl.col("expected_value"), signed=True),
        pts(pl.col("p_redeem"), 0),
        fmt(pl.col("redemption_cost")),
        pts(pl.col("incremental_p")),
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
    response-basis row adds RESPONSE_ONLY after its main code.
    """
    positive = pl.col("expected_value") > PROFIT_EPS
    response = pl.col("value_basis") == "response"
    anyway = (
        ~response
        & (pl.col("p_purchase") >= would_buy_anyway_p)
        & (pl.col("incremental_p").abs() <= negligible_uplift)
        & (pl.col("redemption_cost") > 0)
    )
    unverified = (
        pl.col("min_spend_unverified").fill_null(False)
        if "min_spend_unverified" in valued.columns
        else pl.lit(False)
    )
    # Index into _CANDIDATE_CODE_TABLE: main case * 2 + unverified (lists built once).
    case = (
        pl.when(positive & ~response)
        .then(0)
        .when(positive)
        .then(1)
        .when(anyway)
        .then(2)
        .when(response)
        .then(4)
        .otherwise(3)
    )
    index = (case * 2 + unverified.cast(pl.Int64)).cast(pl.UInt32)
    table = pl.Series(_CANDIDATE_CODE_TABLE, dtype=pl.List(pl.String))
    return valued.with_columns(pl.lit(table).gather(index).alias("reason_codes"))


_MAIN_CODES: tuple[tuple[Reason, ...], ...] = (
    (Reason.POSITIVE_UPLIFT,),
    (Reason.RESPONSE_ONLY,),
    (Reason.WOULD_BUY_ANYWAY,),
    (Reason.NEGATIVE_VALUE,),
    (Reason.NEGATIVE_VALUE, Reason.RESPONSE_ONLY),
)
_CANDIDATE_CODE_TABLE: list[list[str]] = [
    [r.value for r in (*main, *extra)]
    for main in _MAIN_CODES
    for extra in ((), (Reason.MIN_SPEND_UNVERIFIED,))
]


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
