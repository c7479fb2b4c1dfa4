"""Which feature columns a model can be fitted on, and why the others are left out.

A column with no values says nothing, and scikit-learn's histogram gradient boosting
cannot even bin it (`ValueError: window shape cannot be larger than input array shape`,
scikit-learn 1.9) — also when it has values overall but none in one cross-validation
fold's training part. A column with a single value (no variance) says nothing either.
`usable_columns` keeps the columns with at least `min_values` values (so that every fold
of a few-fold split almost surely sees some: with 20 values the chance that a 3-fold
split leaves a training part without any is below 1e-9) and at least two distinct ones,
and names each column it leaves out with the reason, for the run's report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

MIN_VALUES = 20
"""Values a column needs to be fitted on (see the module docstring)."""


@dataclass(frozen=True)
class ColumnCheck:
    """The columns kept, and each one left out with the reason."""

    kept: list[str]
    dropped: dict[str, str] = field(default_factory=dict)

    def notes(self, model: str) -> list[str]:
        """One line per column left out, for a fit report."""
        return [f"{model}: feature {name} left out ({why})" for name, why in self.dropped.items()]


def usable_columns(
    frame: pl.DataFrame, columns: Sequence[str], min_values: int = MIN_VALUES
) -> ColumnCheck:
    """The `columns` of `frame` a model can learn from (module docstring).

    Values are counted as Float64, NaN as missing. A column absent from `frame` has no
    values. One pass over the frame.
    """
    present = [c for c in columns if c in frame.columns]
    value = {c: pl.col(c).cast(pl.Float64).fill_nan(None) for c in present}
    stats = (
        frame.select(
            *[v.count().alias(f"{c}\0n") for c, v in value.items()],
            *[v.n_unique().alias(f"{c}\0u") for c, v in value.items()],
            *[v.null_count().alias(f"{c}\0z") for c, v in value.items()],
        ).row(0, named=True)
        if present
        else {}
    )
    kept: list[str] = []
    dropped: dict[str, str] = {}
    for c in columns:
        if c not in present or stats[f"{c}\0n"] == 0:
            dropped[c] = "no values"
            continue
        n = int(stats[f"{c}\0n"])
        distinct = int(stats[f"{c}\0u"]) - (1 if stats[f"{c}\0z"] else 0)
        if distinct < 2:
            dropped[c] = "a single value, no variance"
        elif n < min_values:
            dropped[c] = f"only {n} values, fewer than {min_values}"
        else:
            kept.append(c)
    return ColumnCheck(kept, dropped)
