"""The rules of one table's rows: event types, minimum values, propensities, percent-off
values, offer dates, and the primary key (checked once per table, over all its files)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from recsys.data.errors import MAX_EXAMPLES, Violation
from recsys.data.messages import ALSO_IN, article, mask_violation
from recsys.data.schema import EVENT_TYPES, TableSpec
from recsys.data.sources import Origin


def _check_event_types(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """`event_type` must be one of the contract's event types."""
    if "event_type" not in frame.columns:
        return []
    col = frame["event_type"]
    mask = col.is_not_null() & ~col.is_in(list(EVENT_TYPES))
    if not mask.any():
        return []
    top = col.filter(mask).value_counts(sort=True).head(MAX_EXAMPLES)
    found = ", ".join(f"{v!r} x{n}" for v, n in top.iter_rows())
    return mask_violation(
        origin,
        "event_type",
        f"an unknown event type (allowed: {', '.join(EVENT_TYPES)})",
        f"map your source's event names to the contract's (unknown values: {found})",
        mask,
        frame.select("event_type"),
    )


def _check_min_values(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """Numeric columns with a `min_value` (prices, amounts, quantities) respect it."""
    out: list[Violation] = []
    for col in spec.columns:
        if col.min_value is None or col.name not in frame.columns:
            continue
        out += mask_violation(
            origin,
            col.name,
            f"{article(col.name)} {col.name} below {col.min_value:g}",
            f"{col.name} must be at least {col.min_value:g}",
            frame[col.name] < col.min_value,
            frame.select(col.name),
        )
    return out


def _check_propensity(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """A logged propensity is a probability in (0, 1]."""
    if "propensity" not in frame.columns:
        return []
    p = frame["propensity"]
    return mask_violation(
        origin,
        "propensity",
        "a propensity outside (0, 1]",
        "propensity is the probability the logging policy chose this row's offer; "
        "leave it null when unknown",
        (p <= 0) | (p > 1),
        frame.select("propensity"),
    )


def _check_percent_off(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """A `percent_off` offer's value is a fraction in (0, 1]."""
    if not {"tool", "value"} <= set(frame.columns):
        return []
    value = frame["value"]
    mask = (frame["tool"] == "percent_off") & ((value <= 0) | (value > 1))
    return mask_violation(
        origin,
        "value",
        "a percent_off value outside (0, 1]",
        "percent_off values are fractions: 10 % is 0.1",
        mask,
        frame.select("tool", "value"),
    )


def _check_dates(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """An offer cannot end before it starts."""
    if not {"start_ts", "end_ts"} <= set(frame.columns):
        return []
    return mask_violation(
        origin,
        "start_ts",
        "a start_ts after their end_ts",
        "an offer must start before it ends; check for swapped columns",
        frame["start_ts"] > frame["end_ts"],
        frame.select("start_ts", "end_ts"),
    )


ROW_CHECKS: tuple[Callable[[pl.DataFrame, TableSpec, Origin], list[Violation]], ...] = (
    _check_event_types,
    _check_min_values,
    _check_propensity,
    _check_percent_off,
    _check_dates,
)
"""Rules of each row; the primary key is checked once per table, over all its files."""


def check_primary_key(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """Primary key values (single or composite) are unique; null keys are reported elsewhere.

    Every row of a duplicated key is counted. When the table comes from several files,
    each row quoted also names a file holding the same key (`also_in`): the first other
    occurrence's file, or for the first occurrence the second's.
    """
    key = list(spec.primary_key)
    if not key or not set(key) <= set(frame.columns):
        return []
    keys = frame.select(key)
    complete = keys.select(pl.all_horizontal(pl.all().is_not_null())).to_series()
    dup = keys.select(pl.struct(key).is_duplicated()).to_series() & complete
    label = ", ".join(key)
    rule = f"a duplicate {label}" if len(key) == 1 else f"a duplicate key ({label})"
    hint = f"({label}) is the primary key of {spec.name}: keep one row per key"
    if len(origin.labels) > 1 and dup.any():
        rule += f" across the {spec.name} files"
        hint += (
            " in all of its files; a decision log read twice (in the dataset's "
            f"{spec.name}/ and given again as a decision log, or copied) repeats every decision"
        )
        keys = keys.with_columns(_also_in(keys, dup, origin))
    return mask_violation(origin, label, rule, hint, dup, keys)


def _also_in(keys: pl.DataFrame, dup: pl.Series, origin: Origin) -> pl.Series:
    """For each duplicated row, the file of another row with its key (null elsewhere)."""
    rows = dup.arg_true()
    files = np.asarray(origin.labels, dtype=object)[origin.file_of(rows.to_numpy())]
    found = keys.filter(dup).with_columns(
        rows.alias("_row"), pl.Series("_file", files.tolist(), dtype=pl.String)
    )
    by_key = found.group_by(keys.columns).agg(
        pl.col("_row").first().alias("_first_row"),
        pl.col("_file").first().alias("_first"),
        pl.col("_file").get(1).alias("_second"),
    )
    other = found.join(by_key, on=keys.columns, how="left", maintain_order="left").select(
        pl.when(pl.col("_row") == pl.col("_first_row"))
        .then(pl.col("_second"))
        .otherwise(pl.col("_first"))
    )
    out = pl.Series(ALSO_IN, [None] * keys.height, dtype=pl.String)
    return out.scatter(rows, other.to_series())


def check_rows(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """Every rule of each row of `frame` (not the primary key, checked per table)."""
    out: list[Violation] = []
    for check in ROW_CHECKS:
        out += check(frame, spec, origin)
    return out
