"""Time-window questions answered by sorted searches, never by joining every pair.

"Did the buyer buy from this seller within a week after the exposure?" and "how much did
they spend there in that week?" are questions about a window per row of one table over
the rows of another. Joining every row with every row of the same buyer and filtering
by time materializes rows x (rows of the other table per buyer) — hundreds of millions for
a grocery export whose households each have hundreds of purchase lines and hundreds of
coupons. Here each question is one sorted as-of join (an interval search in each group):

- `next_time`: the first time in a group at or after a moment (any row in a window
  [start, end) exists exactly when the first one at or after `start` is before `end`);
- `window_sums`: the sum of a value over rows in [start, end), as the difference of two
  running sums found by as-of search (money is summed in integer millionths, so the
  difference is exact).

Cost: both sort and materialize the rows of the two tables once (left + right rows),
plus one output value per left row; nothing grows with their product.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

_ROW = "_window_row"


def next_time(
    left: pl.DataFrame,
    right: pl.DataFrame,
    by: Sequence[str],
    at: str,
    time: str,
) -> pl.Series:
    """For each row of `left`, the first `right[time]` of its `by` group at or after
    `left[at]` (null when there is none), in the order of `left`.

    Rows with a null `by` value or a null `at` match nothing (as in an equi-join). The
    answer is named `time`. Materializes len(left) + len(right) rows (right reduced to its
    distinct (by, time) pairs first).
    """
    keys = list(by)
    dtype = right.schema[time]
    if left.height == 0:
        return pl.Series(time, [], dtype=dtype)
    usable = pl.all_horizontal([pl.col(c).is_not_null() for c in (*keys, at)])
    lhs = left.select(*keys, at).with_row_index(_ROW).filter(usable).sort(at)
    rhs = (
        right.select(*keys, time)
        .filter(pl.all_horizontal([pl.col(c).is_not_null() for c in (*keys, time)]))
        .unique()
        .sort(time)
    )
    found = lhs.join_asof(
        rhs,
        left_on=at,
        right_on=time,
        by=keys or None,
        strategy="forward",
        check_sortedness=False,  # both sides are sorted by time just above
        coalesce=False,
    )
    out = pl.Series(time, [None] * left.height, dtype=dtype)
    if found.height:
        out = out.scatter(found[_ROW], found[time])
    return out


def window_sums(
    left: pl.DataFrame,
    right: pl.DataFrame,
    by: Sequence[str],
    start: str,
    end: str,
    time: str,
    micros: str,
) -> pl.Series:
    """For each row of `left`, the sum of `right[micros]` (an Int64 amount in millionths)
    over the rows of its `by` group with `left[start] <= right[time] < left[end]`.

    0 where there are none (or the window is empty). Int64, in the order of `left`.
    Materializes len(left) + len(right) rows: running sums per group, then two as-of
    searches (the sum before `end` minus the sum before `start`).
    """
    keys = list(by)
    if left.height == 0:
        return pl.Series(micros, [], dtype=pl.Int64)
    per_time = (
        right.select(*keys, time, pl.col(micros).cast(pl.Int64))
        .filter(pl.all_horizontal([pl.col(c).is_not_null() for c in (*keys, time)]))
        .group_by(*keys, time)
        .agg(pl.col(micros).sum())
        .sort(*keys, time)
        .with_columns(
            (pl.col(micros).cum_sum().over(keys) if keys else pl.col(micros).cum_sum()).alias(
                "_cum"
            )
        )
        .select(*keys, time, "_cum")
        .sort(time)
    )
    rows = left.select(*keys, start, end).with_row_index(_ROW)

    def before(moment: str) -> pl.Series:
        """Running sum of the group's rows strictly before `left[moment]` (0 if none)."""
        usable = pl.all_horizontal([pl.col(c).is_not_null() for c in (*keys, moment)])
        lhs = rows.select(_ROW, *keys, moment).filter(usable).sort(moment)
        found = lhs.join_asof(
            per_time,
            left_on=moment,
            right_on=time,
            by=keys or None,
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        out = pl.Series("_cum", [0] * left.height, dtype=pl.Int64)
        if found.height:
            out = out.scatter(found[_ROW], found["_cum"].fill_null(0))
        return out

    total = before(end) - before(start)
    empty = (rows[end] <= rows[start]).fill_null(True)
    return total.set(empty, 0).alias(micros)
