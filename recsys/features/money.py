"""Money summed reproducibly.

Float sums depend on the order in which a parallel engine adds the rows, and polars does
not fix that order; last-bit differences then change fitted trees between runs. Money is
summed as integer millionths instead.
"""

from __future__ import annotations

import polars as pl

MICROS = 1_000_000


def to_micros(money: pl.Expr) -> pl.Expr:
    """Money as integer millionths (sum these, then divide by `MICROS`)."""
    return (money * MICROS).round().cast(pl.Int64)
