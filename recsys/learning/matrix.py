"""Numeric matrices from feature frames, robust to the columns real data brings.

A source may have a feature column with no values at all (a shop without minimum spends),
one with a single value everywhere, or a categorical attribute with thousands of levels.
Gradient boosting in scikit-learn fails on the first (an all-missing column breaks its
binning) and learns nothing from the second; the third would swamp it. `FeatureSpec.fit`
decides once, on training data, which columns a model reads, and says why it left the
others out; `FeatureSpec.matrix` then builds the same columns for any frame (absent
columns and unknown categories become missing values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recsys.features.matrix import usable_columns

MAX_LEVELS = 64
"""Categorical columns keep at most this many levels (the most frequent); the rest are
missing. Boosting needs fewer than 255, and rarer levels carry too few rows to learn."""


@dataclass(frozen=True)
class FeatureSpec:
    """The columns a model reads: numeric ones, then categorical ones coded 0..k-1."""

    numeric: tuple[str, ...]
    categorical: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(column, its levels) pairs; a value's code is its position in the levels."""
    dropped: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """(column, reason) of candidate columns left out."""

    @classmethod
    def fit(
        cls,
        frame: pl.DataFrame,
        numeric: Sequence[str],
        categorical: Sequence[str] = (),
        max_levels: int = MAX_LEVELS,
    ) -> FeatureSpec:
        """Keep the numeric columns a booster can learn from in any fold
        (`recsys.features.matrix.usable_columns`: enough values, at least two distinct)
        and the categorical ones with at least two levels (their `max_levels` most
        frequent)."""
        check = usable_columns(frame, numeric)
        kept = check.kept
        dropped: list[tuple[str, str]] = list(check.dropped.items())
        cats: list[tuple[str, tuple[str, ...]]] = []
        for name in categorical:
            if name not in frame.columns:
                dropped.append((name, "not in the data"))
                continue
            counts = (
                frame.select(pl.col(name).cast(pl.String).drop_nulls().value_counts(sort=True))
                .unnest(name)
                .head(max_levels)
            )
            levels = tuple(sorted(str(v) for v in counts[name].to_list()))
            if len(levels) < 2:
                dropped.append((name, "fewer than two levels"))
            else:
                cats.append((name, levels))
        return cls(tuple(kept), tuple(cats), tuple(dropped))

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.numeric, *(name for name, _ in self.categorical))

    @property
    def categorical_mask(self) -> list[bool]:
        """Per matrix column: is it categorical (scikit-learn's `categorical_features`)."""
        return [False] * len(self.numeric) + [True] * len(self.categorical)

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        """float64 matrix of `columns`; absent columns, nulls and unknown levels are NaN.

        Costs one copy of the selected columns.
        """
        exprs = [
            pl.col(c).cast(pl.Float64) if c in frame.columns else pl.lit(None, pl.Float64).alias(c)
            for c in self.numeric
        ]
        for name, levels in self.categorical:
            if name in frame.columns:
                exprs.append(
                    pl.col(name)
                    .cast(pl.String)
                    .replace_strict(
                        list(levels),
                        [float(i) for i in range(len(levels))],
                        default=None,
                        return_dtype=pl.Float64,
                    )
                    .alias(name)
                )
            else:
                exprs.append(pl.lit(None, pl.Float64).alias(name))
        if not exprs:
            return np.empty((frame.height, 0))
        out = frame.select(exprs).to_numpy(writable=True).astype(np.float64, copy=False)
        out[~np.isfinite(out)] = np.nan
        return out

    def notes(self) -> list[str]:
        """One sentence per column left out, for a fit report."""
        return [f"feature {name!r} not used: {why}" for name, why in self.dropped]
