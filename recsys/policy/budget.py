"""Per-seller budgets over a batch of decisions, solved with a shadow price.

Every candidate has a *spend* (``budget_basis``: ``"expected"`` = ``p_redeem * cost +
send_cost``, ``"worst_case"`` = ``cost + send_cost``) charged to its seller's budget
(platform-wide offers to the key :data:`PLATFORM_BUDGET_KEY`). A *decision unit* gets at
most one offer: the buyer (``one_offer_per="buyer"``) or the buyer x seller pair
(``"seller"``).

The batch problem — maximize the total decision score (``score``: the expected value,
or the learned policy's conservative score, `recsys.policy.value.decision_scores`)
subject to each seller's total spend <= budget — is solved by Lagrangian relaxation:

1. For prices ``lambda_s >= 0`` each unit independently takes the action maximizing
   ``value - lambda_s * spend``, or nothing (worth 0) when no action is positive.
   A seller's spend falls as its price rises, so ``lambda_s`` is the smallest price at
   which the seller's spend fits its budget (0 when the budget does not bind), found by
   :func:`recsys.policy.pricing.smallest_fitting_prices` for all sellers together,
   vectorized over the whole batch; with ``one_offer_per="buyer"`` sellers compete for
   the same units, and sellers that end up over budget are searched again (prices only
   rise, so this stops).
2. Repair: a seller still over budget (possible only through that competition) keeps its
   picks with the best value per unit of spend that fit.
3. Greedy fill: units left without an offer take their best remaining positive-value
   action that still fits the seller's remaining budget, best value first, in vectorized
   rounds until nothing more fits — the Lagrangian choice can leave part of a budget
   unused when one price flips many equal candidates at once.

Spend never exceeds a budget: every step only accepts an action that fits. Without
budgets the result is the plain per-unit argmax over positive values. The returned
``shadow_price`` is each seller's ``lambda_s``: the value a unit more budget would buy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import NDArray

from recsys.policy.config import PLATFORM_BUDGET_KEY, PROFIT_EPS, PolicyConfig
from recsys.policy.pricing import above_ceiling, price_ceiling, smallest_fitting_prices
from recsys.policy.value import with_score, with_spend

MAX_OUTER_ROUNDS = 5
"""Rounds of the price search when sellers compete for the same units (see `_shadow_prices`)."""


@dataclass(frozen=True)
class Allocation:
    """The batch's chosen actions and each seller's budget outcome.

    ``picks``: the chosen rows (input columns plus ``spend``, ``shadow_price``), at most one
    per decision unit. ``sellers``: ``budget_key``, ``budget`` (null = unlimited),
    ``spend``, ``shadow_price``, ``n_picks`` for every seller with a pick or a budget.
    """

    picks: pl.DataFrame
    sellers: pl.DataFrame


def unit_keys(one_offer_per: str) -> list[str]:
    """Columns identifying a decision unit: ``["buyer_id"]`` or ``["buyer_id", "seller_id"]``."""
    if one_offer_per == "buyer":
        return ["buyer_id"]
    if one_offer_per == "seller":
        return ["buyer_id", "seller_id"]
    raise ValueError(f"one_offer_per must be 'seller' or 'buyer', got {one_offer_per!r}")


def allocate(valued: pl.DataFrame, config: PolicyConfig) -> Allocation:
    """Choose at most one action per decision unit under the per-seller budgets.

    ``valued`` holds eligible candidates with ``score`` and ``redemption_cost``
    (:func:`~recsys.policy.expected_incremental_profit`); optional ``offers_left`` /
    ``tool_left`` columns (from eligibility) cap how many offers a buyer may still get
    when one buyer can receive several (``one_offer_per="seller"``).
    """
    keys = unit_keys(config.one_offer_per)
    budgets = dict(config.budgets or {})
    bkeys = sorted(budgets)
    pos = (
        with_spend(with_score(valued), config.budget_basis, config.send_cost)
        .with_row_index("_row")
        .filter(pl.col("score") > PROFIT_EPS)
    )
    caps = config.one_offer_per == "seller" and any(
        c in pos.columns for c in ("offers_left", "tool_left")
    )
    # The solver works on a narrow frame sorted by unit, best action first.
    cap_cols = [c for c in ("offers_left", "tool_left") if caps and c in pos.columns]
    work = pos.select(
        "_row",
        *dict.fromkeys([*keys, "buyer_id", "tool", "offer_id", "score", "spend"]),
        pl.col("seller_id").fill_null(PLATFORM_BUDGET_KEY).alias("_bkey"),
        *cap_cols,
    ).sort([*keys, "score", "offer_id"], descending=[False] * len(keys) + [True, False])
    new_unit = pl.any_horizontal(
        pl.int_range(pl.len()) == 0, *[pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys]
    )
    work = work.with_columns(
        (new_unit.cast(pl.Int64).cum_sum() - 1).alias("_unit"),
        pl.col("_bkey")
        .replace_strict(bkeys, list(range(len(bkeys))), default=-1, return_dtype=pl.Int64)
        .alias("_bidx"),
    )

    if work.height:
        unit = work["_unit"].to_numpy().astype(np.int64)
        value = work["score"].to_numpy()
        spend = work["spend"].to_numpy()
        bidx = work["_bidx"].to_numpy()
        budget_arr = np.array([budgets[k] for k in bkeys], dtype=np.float64)
        lam = _shadow_prices(unit, value, spend, bidx, budget_arr)
        chosen = _choose(unit, _starts(unit), value - np.append(lam, 0.0)[bidx] * spend)
        picks = work.filter(pl.Series(chosen))
    else:
        lam = np.zeros(len(bkeys))
        picks = work
    lam_frame = pl.DataFrame(
        {"_bkey": bkeys, "shadow_price": lam.astype(np.float64)},
        schema={"_bkey": pl.String, "shadow_price": pl.Float64},
    )
    if caps:
        picks = _within_allowance(picks)
    if budgets or caps:
        # Without budgets or caps every unit already has its best action: nothing to
        # repair or fill (a served request, where each frame operation counts).
        picks = _repair(picks, budgets)
        picks = _greedy_fill(work, picks, budgets, caps)
        picks = _repair(picks, budgets)
    sellers = _seller_summary(picks, budgets, lam_frame)
    chosen_rows = picks.select("_row", "_bkey").join(lam_frame, on="_bkey", how="left")
    out = (
        pos.join(chosen_rows, on="_row", how="inner")
        .with_columns(pl.col("shadow_price").fill_null(0.0))
        .sort("_row")
        .drop("_row", "_bkey")
    )
    return Allocation(picks=out, sellers=sellers)


def _starts(unit: NDArray[np.int64]) -> NDArray[np.int64]:
    """Index of the first row of each unit (rows sorted by unit)."""
    return np.flatnonzero(np.r_[True, unit[1:] != unit[:-1]]).astype(np.int64)


def _choose(
    unit: NDArray[np.int64], starts: NDArray[np.int64], adj: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Per unit, the first row with the largest adjusted value, if that value is positive."""
    if adj.size == 0:
        return np.zeros(0, dtype=bool)
    unit_best = np.maximum.reduceat(adj, starts)
    best = unit_best[unit]
    is_max = (adj == best) & (best > 0)
    if np.count_nonzero(is_max) == np.count_nonzero(unit_best > 0):
        return is_max  # no ties: one maximum per unit
    cum = np.cumsum(is_max)
    before = np.concatenate([[0], cum[starts[1:] - 1]])
    return is_max & (cum - before[unit] == 1)


def _spend_by_seller(
    mask: NDArray[np.bool_], spend: NDArray[np.float64], bidx: NDArray[np.int64], n: int
) -> NDArray[np.float64]:
    sel = mask & (bidx >= 0)
    return np.bincount(bidx[sel], weights=spend[sel], minlength=n).astype(np.float64)


def _shadow_prices(
    unit: NDArray[np.int64],
    value: NDArray[np.float64],
    spend: NDArray[np.float64],
    bidx: NDArray[np.int64],
    budget: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Smallest per-seller prices at which each budgeted seller's chosen spend fits.

    One vectorized price search (:func:`~recsys.policy.pricing.smallest_fitting_prices`)
    over all sellers per round. With ``one_offer_per="buyer"`` a seller's spend also
    depends on the others' prices (they compete for the same units), so a seller pushed
    back over budget by another's higher price is searched again from its current price,
    for at most :data:`MAX_OUTER_ROUNDS` rounds (prices only rise, so this stops).
    """
    n = budget.size
    lam = np.zeros(n)
    if n == 0:
        return lam
    starts = _starts(unit)
    # _choose keeps a row whose adjusted value is > 0: above the ratio, by a hair.
    top = above_ceiling(price_ceiling(value, spend, bidx, n))

    def spend_at(prices: NDArray[np.float64]) -> NDArray[np.float64]:
        chosen = _choose(unit, starts, value - np.append(prices, 0.0)[bidx] * spend)
        return _spend_by_seller(chosen, spend, bidx, n)

    for _ in range(MAX_OUTER_ROUNDS):
        raised = smallest_fitting_prices(spend_at, budget, top, low=lam)
        if np.array_equal(raised, lam):
            break
        lam = raised
    return lam


def _within_allowance(new: pl.DataFrame, *, rank: bool = True) -> pl.DataFrame:
    """Keep the best rows of ``new`` that fit the buyers' cap allowance.

    ``offers_left`` / ``tool_left`` are the room each buyer (and buyer x tool) has left;
    null means no cap. With ``rank=True`` the rows compete: a buyer with room for one more
    offer keeps only its best row. With ``rank=False`` each row is checked on its own.
    """
    out = new.sort(["score", "offer_id"], descending=[True, False]) if rank else new
    used_bt = pl.int_range(pl.len()).over("buyer_id", "tool") if rank else pl.lit(0)
    used_b = pl.int_range(pl.len()).over("buyer_id") if rank else pl.lit(0)
    if "tool_left" in new.columns:
        out = out.filter((used_bt < pl.col("tool_left")).fill_null(True))
    if "offers_left" in new.columns:
        out = out.filter((used_b < pl.col("offers_left")).fill_null(True))
    return out


def _consume(frame: pl.DataFrame, taken: pl.DataFrame) -> pl.DataFrame:
    """Lower the buyers' room in ``frame`` by the offers in ``taken``."""
    n_b = taken.group_by("buyer_id").agg(pl.len().cast(pl.Int64).alias("_n_b"))
    n_bt = taken.group_by("buyer_id", "tool").agg(pl.len().cast(pl.Int64).alias("_n_bt"))
    out = frame.join(n_b, on="buyer_id", how="left").join(n_bt, on=["buyer_id", "tool"], how="left")
    updates = []
    if "offers_left" in frame.columns:
        updates.append(pl.col("offers_left") - pl.col("_n_b").fill_null(0))
    if "tool_left" in frame.columns:
        updates.append(pl.col("tool_left") - pl.col("_n_bt").fill_null(0))
    return out.with_columns(updates).drop("_n_b", "_n_bt")


def _repair(picks: pl.DataFrame, budgets: dict[str, float]) -> pl.DataFrame:
    """Drop a seller's worst value-per-spend picks until its spend fits its budget exactly."""
    if not budgets or not picks.height:
        return picks
    budget_of = pl.col("_bkey").replace_strict(
        list(budgets), list(budgets.values()), default=None, return_dtype=pl.Float64
    )
    ratio = pl.when(pl.col("spend") > 0).then(pl.col("score") / pl.col("spend"))
    ordered = picks.with_columns(budget_of.alias("_budget"), ratio.alias("_ratio")).sort(
        ["_bkey", "_ratio", "score"], descending=[False, True, True], nulls_last=False
    )
    while True:
        kept = ordered.filter(
            pl.col("_budget").is_null()
            | (pl.col("spend").cum_sum().over("_bkey") <= pl.col("_budget"))
        )
        totals = kept.group_by("_bkey").agg(pl.col("spend").sum(), pl.col("_budget").first())
        over = totals.filter(pl.col("spend") > pl.col("_budget"))
        if not over.height:
            return kept.drop("_budget", "_ratio")
        # Floating-point sums can differ from cumulative sums by an ulp: drop one more.
        last = (
            kept.filter(pl.col("_bkey").is_in(over["_bkey"].implode()))
            .group_by("_bkey")
            .agg(pl.col("_unit").last())
        )
        ordered = kept.join(last, on=["_bkey", "_unit"], how="anti")


def _greedy_fill(
    pool: pl.DataFrame, picks: pl.DataFrame, budgets: dict[str, float], caps: bool
) -> pl.DataFrame:
    """Give units without a pick their best action that still fits, best value first.

    Vectorized rounds: each unit proposes its best fitting action, each seller accepts
    its proposals best first while their running spend fits the room left. Every round
    accepts at least the best proposal, and rows that no longer fit are dropped for good
    (room only shrinks), so the loop ends.
    """
    spent = picks.group_by("_bkey").agg(pl.col("spend").sum().alias("_spent"))
    room = (
        pl.DataFrame(
            {"_bkey": list(budgets), "_room": list(budgets.values())},
            schema={"_bkey": pl.String, "_room": pl.Float64},
        )
        .join(spent, on="_bkey", how="left")
        .select("_bkey", pl.col("_room") - pl.col("_spent").fill_null(0.0))
    )
    remaining = pool.join(picks.select("_unit"), on="_unit", how="anti")
    if caps:
        remaining = _consume(remaining, picks)
    accepted = [picks]
    while remaining.height:
        remaining = (
            remaining.join(room, on="_bkey", how="left")
            .filter(pl.col("_room").is_null() | (pl.col("spend") <= pl.col("_room")))
            .drop("_room")
        )
        if caps:
            remaining = _within_allowance(remaining, rank=False)
        best = (
            remaining.filter(pl.int_range(pl.len()).over("_unit") == 0)
            .join(room, on="_bkey", how="left")
            .sort(["score", "offer_id"], descending=[True, False])
        )
        accept = best.filter(
            pl.col("_room").is_null() | (pl.col("spend").cum_sum().over("_bkey") <= pl.col("_room"))
        ).drop("_room")
        if caps:
            accept = _within_allowance(accept)
        if not accept.height:
            break
        accepted.append(accept.select(picks.columns))
        used = accept.group_by("_bkey").agg(pl.col("spend").sum().alias("_used"))
        room = room.join(used, on="_bkey", how="left").select(
            "_bkey", pl.col("_room") - pl.col("_used").fill_null(0.0)
        )
        remaining = remaining.join(accept.select("_unit"), on="_unit", how="anti")
        if caps:
            remaining = _consume(remaining, accept)
    return pl.concat(accepted)


def _seller_summary(
    picks: pl.DataFrame, budgets: dict[str, float], lam_frame: pl.DataFrame
) -> pl.DataFrame:
    budget_frame = pl.DataFrame(
        {"budget_key": list(budgets), "budget": list(budgets.values())},
        schema={"budget_key": pl.String, "budget": pl.Float64},
    )
    used = picks.group_by("_bkey").agg(
        pl.col("spend").sum(), pl.len().cast(pl.Int64).alias("n_picks")
    )
    if not budgets:  # every row is an unbudgeted seller's: no budget, no price
        return used.select(
            pl.col("_bkey").alias("budget_key"),
            pl.lit(None, pl.Float64).alias("budget"),
            "spend",
            "n_picks",
            pl.lit(0.0).alias("shadow_price"),
        ).sort("budget_key")
    keys = pl.concat([budget_frame.select("budget_key"), used.select(budget_key="_bkey")]).unique()
    return (
        keys.join(budget_frame, on="budget_key", how="left")
        .join(used.rename({"_bkey": "budget_key"}), on="budget_key", how="left")
        .join(lam_frame.rename({"_bkey": "budget_key"}), on="budget_key", how="left")
        .with_columns(
            pl.col("spend").fill_null(0.0),
            pl.col("n_picks").fill_null(0),
            pl.col("shadow_price").fill_null(0.0),
        )
        .sort("budget_key")
    )
