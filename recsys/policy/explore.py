"""Exploration with exact propensities, vectorized over every decision unit of a batch.

Each decision unit (by default a buyer) chooses among its eligible offers *and* the
"nothing" action (``offer_id`` null, value 0 unless the input gives one). The schemes:

- :func:`epsilon_greedy` — the exploit action with probability ``1 - epsilon`` plus
  ``epsilon`` spread uniformly over the unit's ``n`` options:
  ``p = epsilon / n + (1 - epsilon) * [exploit]``;
- :func:`softmax` — ``p_i = exp(v_i / T) / sum_j exp(v_j / T)`` at temperature ``T``
  (in the value's units: money).

The probability of the chosen action is returned exactly, so logged decisions support
off-policy evaluation (IPS, SNIPS, DR). Sampling uses the Gumbel-max trick — the row
maximizing ``log p + Gumbel noise`` within a unit is an exact draw from ``p`` — so one
vectorized pass samples a million units with no per-unit Python loop. The random numbers
come from the caller's seeded ``numpy.random.Generator``; rows are put in a canonical order
first, so the same seed gives the same choices whatever the input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.policy import arrays

_NOTHING = "_is_nothing"
_UNIT = "_unit"


@dataclass(frozen=True)
class Exploration:
    """Result of one exploration draw.

    ``chosen``: one row per unit — the unit's keys, ``offer_id`` (null = nothing), the
    value, ``probability`` of the chosen action and ``explored`` (True when the chosen
    action is not the exploit/argmax one). ``probabilities``: every option of every unit
    with its ``probability`` and ``is_exploit`` flag, when requested.
    """

    chosen: pl.DataFrame
    probabilities: pl.DataFrame | None = None


def with_nothing(values: pl.DataFrame, keys: Sequence[str], value: str) -> pl.DataFrame:
    """Add a "nothing" row (``offer_id`` null, value 0) to every unit that lacks one."""
    keys = list(keys)
    _check_columns(values, [*keys, "offer_id", value])
    have = values.filter(pl.col("offer_id").is_null()).select(keys)
    units = values.select(keys).unique()
    if have.height:
        units = units.join(have, on=keys, how="anti", nulls_equal=True)
    nothing = units.with_columns(
        pl.lit(None, dtype=pl.String).alias("offer_id"), pl.lit(0.0).alias(value)
    )
    return pl.concat([values, nothing], how="diagonal_relaxed")


def epsilon_greedy(
    values: pl.DataFrame,
    epsilon: float,
    rng: np.random.Generator,
    *,
    keys: Sequence[str] = ("buyer_id",),
    value: str = "expected_value",
    exploit: str | None = None,
    return_table: bool = False,
) -> Exploration:
    """Epsilon-greedy over each unit's options including nothing (see the module doc).

    The exploit action is the row flagged True in the boolean column ``exploit`` (the unit's
    nothing action when no row is flagged), or by default the highest ``value`` (ties go to
    nothing, then to the smallest ``offer_id``).
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    keys = list(keys)
    table = _canonical(with_nothing(values, keys, value), keys, value)
    if exploit is None:
        is_exploit = pl.int_range(pl.len()).over(_UNIT) == 0
    else:
        flagged = pl.col(exploit).fill_null(False)
        has_flag = flagged.any().over(_UNIT)
        first_flag = flagged & (flagged.cast(pl.Int64).cum_sum().over(_UNIT) == 1)
        is_exploit = pl.when(has_flag).then(first_flag).otherwise(pl.col(_NOTHING))
    table = table.with_columns(is_exploit.alias("is_exploit"))
    probability = arrays.epsilon_probabilities(
        _owner(table), table["is_exploit"].to_numpy(), epsilon
    )
    return _draw(table.with_columns(pl.Series("probability", probability)), rng, return_table)


def softmax(
    values: pl.DataFrame,
    temperature: float,
    rng: np.random.Generator,
    *,
    keys: Sequence[str] = ("buyer_id",),
    value: str = "expected_value",
    return_table: bool = False,
) -> Exploration:
    """Softmax (Boltzmann) choice over each unit's options including nothing.

    Computed as ``exp((v - max v) / T)`` normalized within the unit, which cannot overflow.
    ``is_exploit`` marks the argmax (ties as in :func:`epsilon_greedy`).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    keys = list(keys)
    table = _canonical(with_nothing(values, keys, value), keys, value)
    probability = arrays.softmax_probabilities(_owner(table), table[value].to_numpy(), temperature)
    table = table.with_columns(
        (pl.int_range(pl.len()).over(_UNIT) == 0).alias("is_exploit"),
        pl.Series("probability", probability),
    )
    return _draw(table, rng, return_table)


def _check_columns(frame: pl.DataFrame, needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(
            f"exploration values: missing columns {missing} (present: {frame.columns})"
        )


def _canonical(table: pl.DataFrame, keys: list[str], value: str) -> pl.DataFrame:
    """Rows in a fixed order: by unit, then best value first, nothing before ties, offer_id."""
    value_dtype = table.schema[value]
    if not value_dtype.is_numeric():
        raise ValueError(f"exploration values: column '{value}' must be numeric, got {value_dtype}")
    table = table.with_columns(
        pl.col(value).cast(pl.Float64).fill_null(float("-inf")),
        pl.col("offer_id").is_null().alias(_NOTHING),
    ).sort(
        [*keys, value, _NOTHING, "offer_id"], descending=[False] * len(keys) + [True, True, False]
    )
    # An integer unit id (rows are sorted by unit): windows over it beat string keys.
    new_unit = pl.any_horizontal(
        pl.int_range(pl.len()) == 0, *[pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys]
    )
    return table.with_columns(new_unit.cast(pl.UInt32).cum_sum().alias(_UNIT))


def _owner(table: pl.DataFrame) -> np.ndarray:
    """The unit index (from 0) of each row of a canonical table."""
    return table[_UNIT].cast(pl.Int64).to_numpy() - 1


def _draw(table: pl.DataFrame, rng: np.random.Generator, return_table: bool) -> Exploration:
    """One exact draw per unit (:func:`recsys.policy.arrays.draw`)."""
    picked = arrays.draw(_owner(table), table["probability"].to_numpy(), rng)
    chosen = (
        table[picked]
        .with_columns((~pl.col("is_exploit")).alias("explored"))
        .drop(_NOTHING, _UNIT, "is_exploit")
    )
    probabilities = table.drop(_NOTHING, _UNIT) if return_table else None
    return Exploration(chosen=chosen, probabilities=probabilities)
