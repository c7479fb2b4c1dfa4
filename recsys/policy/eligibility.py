"""Which candidates may be offered at all, and why the others may not.

Checks, in this order (a rejected row carries the first rule it breaks):

1. ``OUTSIDE_VALIDITY`` — the decision time ``as_of`` must lie in ``[start_ts, end_ts)``
   (a null bound is open);
2. ``OUT_OF_SELLER_SCOPE`` — a request made for seller S sees only S's offers and the
   platform-wide ones (``seller_id`` null);
3. ``NOT_ELIGIBLE_MIN_SPEND`` — with a known cart value below the offer's ``min_spend``.
   When the cart value is unknown the row is kept and flagged ``min_spend_unverified``;
4. ``FREQUENCY_CAP`` — from the history of past exposures: at most
   ``max_offers_per_buyer`` offers per buyer and ``max_per_tool`` per tool within the
   last ``cap_window_days`` before ``as_of``. Control rows (``offer_id`` null) do not count.

Eligible rows gain ``min_spend_unverified`` and the buyer's remaining cap allowance
(``offers_left``, ``tool_left``; null = no cap), which the budget step respects when a
buyer may get several offers in one batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from recsys.policy import arrays
from recsys.policy.config import PolicyConfig
from recsys.policy.reasons import Reason, fmt
from recsys.policy.value import float_column

TS = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class RequestContext:
    """What the request knows beyond the candidates.

    ``seller_id``: the request is made for this seller (its page, its campaign); None =
    no seller scope. ``cart_value``: the buyer's current cart, to check minimum spends;
    None = unknown.
    """

    seller_id: str | None = None
    cart_value: float | None = None

    @classmethod
    def coerce(cls, context: RequestContext | Mapping[str, Any] | None) -> RequestContext:
        """A context from itself, a plain mapping with the same keys, or None (empty)."""
        if context is None:
            return cls()
        if isinstance(context, RequestContext):
            return context
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(context) - allowed)
        if unknown:
            raise ValueError(f"context: unknown keys {unknown}; allowed keys: {sorted(allowed)}")
        return cls(**dict(context))


@dataclass(frozen=True)
class EligibilityResult:
    """``eligible`` candidates (plus cap columns) and ``rejected`` ones with a reason."""

    eligible: pl.DataFrame
    rejected: pl.DataFrame


def as_utc(ts: datetime) -> datetime:
    """A timezone-aware UTC datetime; a naive one is read as UTC (the data contract's rule)."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


REQUEST_SELLER = "request_seller_id"
"""Optional candidates column: the seller scope of the row's own request (null: none).

A batch of many API requests is decided in one call, each request with its own scope
and cart; these columns carry them per row, and override the call's `RequestContext`
where not null. They are dropped from the results."""
REQUEST_CART = "request_cart_value"
"""Optional candidates column: the cart value of the row's own request (null: unknown)."""
REQUEST_COLUMNS = (REQUEST_SELLER, REQUEST_CART)


def _per_row(
    candidates: pl.DataFrame, column: str, constant: object, dtype: pl.DataType
) -> pl.Expr:
    """The row's request value where the candidates carry one, else the call's."""
    fallback = pl.lit(constant, dtype=dtype)
    if column not in candidates.columns:
        return fallback
    return pl.coalesce(pl.col(column).cast(dtype), fallback)


def filter_eligible(
    candidates: pl.DataFrame,
    as_of: datetime,
    config: PolicyConfig,
    *,
    history: pl.DataFrame | None = None,
    context: RequestContext | Mapping[str, Any] | None = None,
) -> EligibilityResult:
    """Split validated candidates into eligible and rejected rows (see the module doc).

    ``history`` holds past exposures with ``buyer_id``, ``offer_id``, ``ts`` and, if
    known, ``tool`` (otherwise the tool is looked up from the candidates' offers).
    """
    ctx = RequestContext.coerce(context)
    now = as_utc(as_of)
    cart_value = None if ctx.cart_value is None else float(ctx.cart_value)
    scope = _per_row(candidates, REQUEST_SELLER, ctx.seller_id, pl.String())
    cart = _per_row(candidates, REQUEST_CART, cart_value, pl.Float64())
    frame = _with_cap_allowance(candidates, history, now, config)
    verdict, unverified = _verdicts(frame, scope, cart, now, config)
    code = pl.col("reason_code")
    capped = code == Reason.FREQUENCY_CAP.value
    window = f"{config.cap_window_days:g}"
    cap_text = (
        pl.when((pl.col("offers_left") <= 0).fill_null(False))
        .then(
            pl.format(
                "the buyer already received {} offers in the last {} days (cap {})",
                pl.col("_n_buyer"),
                pl.lit(window),
                pl.lit(str(config.max_offers_per_buyer)),
            )
        )
        .otherwise(
            pl.format(
                "the buyer already received {} {} offers in the last {} days (cap {} per tool)",
                pl.col("_n_tool"),
                pl.col("tool"),
                pl.lit(window),
                pl.lit(str(config.max_per_tool)),
            )
        )
    )
    as_of_text = pl.lit(now.strftime("%Y-%m-%d %H:%M"))
    reason_text = (
        pl.when(code == Reason.OUTSIDE_VALIDITY.value)
        .then(
            pl.format(
                "the offer is valid from {} until {}, not at {}",
                pl.col("start_ts").dt.to_string("%Y-%m-%d %H:%M").fill_null("the start"),
                pl.col("end_ts").dt.to_string("%Y-%m-%d %H:%M").fill_null("further notice"),
                as_of_text,
            )
        )
        .when(code == Reason.OUT_OF_SELLER_SCOPE.value)
        .then(
            pl.format(
                "the offer belongs to seller {}, the request is for seller {}",
                pl.col("seller_id"),
                scope,
            )
        )
        .when(code == Reason.NOT_ELIGIBLE_MIN_SPEND.value)
        .then(
            pl.format(
                "the cart of {} is below the offer's minimum spend of {}",
                fmt(cart),
                fmt(pl.col("min_spend")),
            )
        )
        .when(capped)
        .then(cap_text)
    )
    frame = frame.with_columns(
        pl.Series("reason_code", verdict, dtype=pl.Int8).replace_strict(
            _VERDICT_CODES, return_dtype=pl.String
        ),
        pl.Series("min_spend_unverified", unverified),
    ).with_columns(reason_text.alias("reason_text"))
    helpers = ["_n_buyer", "_n_tool", *(c for c in REQUEST_COLUMNS if c in frame.columns)]
    eligible = frame.filter(pl.col("reason_code").is_null()).drop(
        "reason_code", "reason_text", *helpers
    )
    rejected = frame.filter(pl.col("reason_code").is_not_null()).drop(
        "min_spend_unverified", "offers_left", "tool_left", *helpers
    )
    return EligibilityResult(eligible=eligible, rejected=rejected)


_VERDICT_CODES: dict[int, str | None] = {
    arrays.ELIGIBLE: None,
    **{verdict: reason.value for verdict, reason in arrays.REJECTION_CODES.items()},
}


def _verdicts(
    frame: pl.DataFrame, scope: pl.Expr, cart: pl.Expr, now: datetime, config: PolicyConfig
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`recsys.policy.arrays.eligibility` of the frame's rows (the one implementation
    of the rules): their verdicts and unchecked minimum spends. Cost: O(rows)."""
    request = frame.select(scope.alias("scope"), cart.alias("cart"))
    # Integer codes of sellers and scopes on one scale (null: -1) for the equality test.
    both = pl.concat([frame["seller_id"].cast(pl.String), request["scope"]])
    codes = both.rank("dense").cast(pl.Int64).fill_null(0).to_numpy() - 1
    start = frame["start_ts"].dt.epoch("us").fill_null(arrays.NO_TIME_START).to_numpy()
    end = frame["end_ts"].dt.epoch("us").fill_null(arrays.NO_TIME_END).to_numpy()
    return arrays.eligibility(
        start_us=start,
        end_us=end,
        now_us=int(pl.Series([now]).dt.epoch("us")[0]),
        seller=codes[: frame.height],
        scope=codes[frame.height :],
        min_spend=float_column(frame, "min_spend"),
        cart=float_column(request, "cart"),
        n_buyer=frame["_n_buyer"].to_numpy(),
        n_tool=frame["_n_tool"].to_numpy(),
        max_per_buyer=config.max_offers_per_buyer,
        max_per_tool=config.max_per_tool,
    )


def _with_cap_allowance(
    candidates: pl.DataFrame,
    history: pl.DataFrame | None,
    now: datetime,
    config: PolicyConfig,
) -> pl.DataFrame:
    """Add ``offers_left``/``tool_left`` (Int64, null = no cap) and the counts behind them."""
    if history is not None and history.height:
        recent = _recent_exposures(candidates, history, now, config.cap_window_days)
        counts_b = recent.group_by("buyer_id").agg(pl.len().cast(pl.Int64).alias("_n_buyer"))
        counts_bt = (
            recent.filter(pl.col("tool").is_not_null())
            .group_by("buyer_id", "tool")
            .agg(pl.len().cast(pl.Int64).alias("_n_tool"))
        )
        out = candidates.join(counts_b, on="buyer_id", how="left").join(
            counts_bt, on=["buyer_id", "tool"], how="left", nulls_equal=False
        )
        out = out.with_columns(pl.col("_n_buyer", "_n_tool").fill_null(0))
    else:  # no history: nothing counted yet (and no joins to pay for)
        out = candidates.with_columns(
            pl.lit(0, pl.Int64).alias("_n_buyer"), pl.lit(0, pl.Int64).alias("_n_tool")
        )
    max_b, max_t = config.max_offers_per_buyer, config.max_per_tool
    return out.with_columns(
        (pl.lit(max_b, dtype=pl.Int64) - pl.col("_n_buyer")).alias("offers_left"),
        (pl.lit(max_t, dtype=pl.Int64) - pl.col("_n_tool")).alias("tool_left"),
    )


def _recent_exposures(
    candidates: pl.DataFrame, history: pl.DataFrame, now: datetime, window_days: float
) -> pl.DataFrame:
    """Offer exposures (not control rows) in ``[now - window, now)``, with their tool."""
    missing = [c for c in ("buyer_id", "offer_id", "ts") if c not in history.columns]
    if missing:
        raise ValueError(
            f"history: missing columns {missing} (present: {history.columns}). Fix: pass "
            "past exposures in the data contract's exposures form (buyer_id, offer_id, ts)."
        )
    ts = history.schema["ts"]
    if not isinstance(ts, pl.Datetime):
        raise ValueError(f"history: column 'ts' must be a datetime, got {ts}")
    ts_expr = pl.col("ts").cast(pl.Datetime("us", ts.time_zone))
    ts_expr = (
        ts_expr.dt.replace_time_zone("UTC")
        if ts.time_zone is None
        else ts_expr.dt.convert_time_zone("UTC")
    )
    start = now - timedelta(days=window_days)
    recent = history.with_columns(
        pl.col("buyer_id").cast(pl.String), pl.col("offer_id").cast(pl.String), ts_expr
    ).filter(
        pl.col("offer_id").is_not_null()
        & (pl.col("ts") >= pl.lit(start, dtype=TS))
        & (pl.col("ts") < pl.lit(now, dtype=TS))
    )
    if "tool" in recent.columns:
        return recent.select("buyer_id", "offer_id", pl.col("tool").cast(pl.String))
    tools = candidates.select("offer_id", "tool").unique("offer_id")
    return recent.select("buyer_id", "offer_id").join(tools, on="offer_id", how="left")
