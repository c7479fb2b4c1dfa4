"""Targeting metrics: how well a score orders buyer-offer pairs by their outcome.

A seller who can only issue a limited number of coupons wants the pairs most likely to
redeem first. ``gain_at_k`` answers "if only the top-scored k % of pairs are issued, what
share of all redemptions do we keep?"; ``roc_auc`` summarises the whole ordering; the
calibration functions check that ``p_redeem`` can be read as a probability, which the
policy needs to turn scores into expected profit.

Ties are handled by averaging: pairs with equal scores are treated as one block, and a
cut that falls inside a block captures that block's outcomes in proportion to the part of
the block it includes. This is the expected result of breaking the ties at random, so a
constant scorer is worth exactly random targeting and the result never depends on the
input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)
"""Targeting depths reported by default: the top 1 %, 5 %, 10 %, 20 % and 50 %."""


def _as_1d(name: str, values: ArrayLike, n: int | None = None) -> NDArray[np.float64]:
    """``values`` as a finite 1-D float array, checked against the expected length ``n``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but the first argument has {n}; "
            "pass one value per scored row"
        )
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name} has {bad} non-finite (NaN or infinite) rows; drop or fill them")
    return arr


def _check_binary(name: str, values: NDArray[np.float64]) -> None:
    """Raise unless every value is 0 or 1."""
    bad = int(np.count_nonzero((values != 0) & (values != 1)))
    if bad:
        raise ValueError(f"{name} must be 0 or 1; {bad} rows hold other values")


def _check_unit_interval(name: str, values: NDArray[np.float64]) -> None:
    """Raise unless every value lies in [0, 1]."""
    bad = int(np.count_nonzero((values < 0) | (values > 1)))
    if bad:
        raise ValueError(f"{name} must lie in [0, 1]; {bad} rows are outside it")


def _sort_into_tie_groups(
    scores: NDArray[np.float64],
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Order rows by descending score and find where each block of tied scores ends.

    Returns
    -------
    order
        Row indices sorted by descending score. The order inside a tie block is arbitrary
        (an unstable sort is about twice as fast); callers only read sums at block ends.
    ends
        For each tie block, the number of sorted rows up to and including the block;
        the last entry is ``len(scores)``.
    """
    order = np.argsort(-scores)
    ranked = scores[order]
    ends = np.flatnonzero(ranked[1:] != ranked[:-1]) + 1
    ends = np.append(ends, ranked.shape[0]).astype(np.intp)
    return order, ends


def _cumulative_at_groups(
    sorted_values: NDArray[np.float64], ends: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Cumulative sum of already sorted values, read at 0 and at each tie-block end."""
    cum = np.cumsum(sorted_values)
    return np.concatenate(([0.0], cum[ends - 1]))


def _check_fraction(name: str, fraction: float, allow_zero: bool = True) -> float:
    """``fraction`` as a float in [0, 1] (or (0, 1] when ``allow_zero`` is False)."""
    value = float(fraction)
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {fraction!r}")
    return value


def _gain_points(
    scores: ArrayLike, outcomes: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], float, int]:
    """Breakpoints (rows targeted, outcome captured) of the gain curve, the total and n."""
    s = _as_1d("scores", scores)
    y = _as_1d("outcomes", outcomes, s.shape[0])
    negative = int(np.count_nonzero(y < 0))
    if negative:
        raise ValueError(f"outcomes must be >= 0 (counts or amounts); {negative} rows are negative")
    if s.shape[0] == 0:
        raise ValueError("scores is empty; gain needs at least one scored row")
    order, ends = _sort_into_tie_groups(s)
    captured = _cumulative_at_groups(y[order], ends)
    targeted = np.concatenate(([0.0], ends.astype(np.float64)))
    return targeted, captured, float(captured[-1]), s.shape[0]


def gain_at_k(
    scores: ArrayLike,
    outcomes: ArrayLike,
    fractions: tuple[float, ...] | list[float] = DEFAULT_FRACTIONS,
) -> dict[float, float]:
    """Share of all positive outcomes captured by the top-scored fraction of rows.

    Parameters
    ----------
    scores
        One score per row (buyer-offer pair); higher means "issue first".
    outcomes
        Non-negative outcome per row: 0/1 redemption, or a count or amount to weight rows.
    fractions
        Targeting depths in [0, 1], e.g. ``0.1`` for the top 10 % of rows.

    Returns
    -------
    dict
        ``{fraction: captured share}``. The number of rows targeted is ``fraction * n``,
        not rounded; rows with tied scores are averaged (see the module docstring), and
        between whole rows the share is interpolated linearly. All values are NaN when the
        outcomes sum to zero (nothing to capture).

    Examples
    --------
    >>> gain_at_k([0.9, 0.8, 0.1, 0.0], [1, 1, 0, 0], fractions=(0.25, 0.5))
    {0.25: 0.5, 0.5: 1.0}
    >>> gain_at_k([1, 1, 1, 1], [1, 0, 0, 0], fractions=(0.5,))  # constant = random
    {0.5: 0.5}
    """
    targeted, captured, total, n = _gain_points(scores, outcomes)
    checked = [_check_fraction("fractions", f) for f in fractions]
    if total <= 0:
        return {f: float("nan") for f in checked}
    values = np.interp(np.asarray(checked) * n, targeted, captured) / total
    return {f: float(v) for f, v in zip(checked, values, strict=True)}


def gain_curve(
    scores: ArrayLike, outcomes: ArrayLike, n_points: int = 101
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Cumulative gain curve for plotting: share targeted against share captured.

    Parameters
    ----------
    scores, outcomes
        As in :func:`gain_at_k`.
    n_points
        Number of evenly spaced points on the x axis, from 0 to 1 inclusive (at least 2).

    Returns
    -------
    x, y
        ``x`` the share of rows targeted, ``y`` the share of the outcome captured
        (``y`` is all NaN when the outcomes sum to zero). Random targeting is the diagonal.
    """
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    targeted, captured, total, n = _gain_points(scores, outcomes)
    x = np.linspace(0.0, 1.0, n_points)
    if total <= 0:
        return x, np.full(n_points, np.nan)
    return x, np.interp(x * n, targeted, captured) / total


def roc_auc(scores: ArrayLike, outcomes: ArrayLike) -> float:
    """Area under the ROC curve: P(a random positive scores above a random negative).

    Computed from average ranks (the Mann-Whitney statistic), so ties count one half,
    exactly as scikit-learn's ``roc_auc_score``.

    Returns
    -------
    float
        The AUC, or NaN (without a warning) when ``outcomes`` holds only one class, since
        the ordering can then not be judged.

    Examples
    --------
    >>> roc_auc([0.9, 0.4, 0.6, 0.1], [1, 0, 1, 0])
    1.0
    >>> roc_auc([0.3, 0.2], [1, 1])
    nan
    """
    s = _as_1d("scores", scores)
    y = _as_1d("outcomes", outcomes, s.shape[0])
    _check_binary("outcomes", y)
    n_pos = int(np.count_nonzero(y))
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Average 1-based ascending ranks: a tie block spanning sorted positions
    # [start, end) gets rank (start + 1 + end) / 2 for every member.
    order = np.argsort(s)
    ranked = s[order]
    ends = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]) + 1, ranked.shape[0])
    starts = np.concatenate(([0], ends[:-1]))
    block_rank = (starts + 1 + ends) / 2.0
    rank_sum = float(np.dot(np.repeat(block_rank, ends - starts), y[order]))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


@dataclass(frozen=True, eq=False)
class CalibrationTable:
    """Predicted against observed rates per probability bin.

    Attributes
    ----------
    bin_edges
        ``n_bins + 1`` edges; bin ``b`` holds ``bin_edges[b] <= p < bin_edges[b + 1]``
        (the last bin also holds ``p == bin_edges[-1]``).
    mean_predicted
        Mean predicted probability per bin (NaN for an empty bin).
    observed_rate
        Mean outcome per bin (NaN for an empty bin).
    count
        Rows per bin.
    """

    bin_edges: NDArray[np.float64]
    mean_predicted: NDArray[np.float64]
    observed_rate: NDArray[np.float64]
    count: NDArray[np.int64]


def calibration_table(
    p_pred: ArrayLike,
    outcomes: ArrayLike,
    n_bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> CalibrationTable:
    """Bin predictions and compare each bin's mean prediction with its observed rate.

    Parameters
    ----------
    p_pred
        Predicted probabilities in [0, 1].
    outcomes
        Observed outcomes in [0, 1] (usually 0/1).
    n_bins
        Number of bins; empty bins are kept (count 0, NaN means) so the shape is fixed.
    strategy
        ``"uniform"``: equal-width bins on [0, 1]. ``"quantile"``: edges at quantiles of
        ``p_pred`` so bins hold similar counts — better for redemption probabilities,
        which crowd near zero. Tied predictions always share a bin, so quantile bins can
        be uneven or empty.

    Examples
    --------
    >>> t = calibration_table([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], n_bins=2)
    >>> t.mean_predicted.round(2).tolist(), t.observed_rate.tolist(), t.count.tolist()
    ([0.15, 0.85], [0.0, 1.0], [2, 2])
    """
    p = _as_1d("p_pred", p_pred)
    y = _as_1d("outcomes", outcomes, p.shape[0])
    _check_unit_interval("p_pred", p)
    _check_unit_interval("outcomes", y)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        if p.shape[0] == 0:
            raise ValueError("p_pred is empty; quantile bins need at least one prediction")
        edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    bins = np.searchsorted(edges[1:-1], p, side="right")
    count = np.bincount(bins, minlength=n_bins).astype(np.int64)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    safe = np.maximum(count, 1)
    mean_p = np.where(count > 0, sum_p / safe, np.nan)
    rate = np.where(count > 0, sum_y / safe, np.nan)
    return CalibrationTable(edges, mean_p, rate, count)


def expected_calibration_error(
    p_pred: ArrayLike,
    outcomes: ArrayLike,
    n_bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> float:
    """Count-weighted mean gap between predicted and observed rate over the bins.

    ``ECE = sum_b (n_b / n) * |mean_predicted_b - observed_rate_b|`` with the bins of
    :func:`calibration_table`; 0 is perfectly calibrated. NaN for empty input.

    Examples
    --------
    >>> round(expected_calibration_error([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1], n_bins=2), 6)
    0.25
    """
    table = calibration_table(p_pred, outcomes, n_bins=n_bins, strategy=strategy)
    n = int(table.count.sum())
    if n == 0:
        return float("nan")
    filled = table.count > 0
    gaps = np.abs(table.mean_predicted[filled] - table.observed_rate[filled])
    return float(np.sum(table.count[filled] * gaps) / n)


def brier_score(p_pred: ArrayLike, outcomes: ArrayLike) -> float:
    """Mean squared error of predicted probabilities; lower is better.

    Examples
    --------
    >>> brier_score([1.0, 0.5], [1, 0])
    0.125
    """
    p = _as_1d("p_pred", p_pred)
    y = _as_1d("outcomes", outcomes, p.shape[0])
    _check_unit_interval("p_pred", p)
    _check_unit_interval("outcomes", y)
    if p.shape[0] == 0:
        return float("nan")
    return float(np.mean((p - y) ** 2))


def log_loss(p_pred: ArrayLike, outcomes: ArrayLike, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the outcomes; lower is better.

    Predictions are clipped to ``[eps, 1 - eps]`` first, so a confident wrong prediction
    costs ``-log(eps)`` (about 34.5 by default) instead of infinity.

    Examples
    --------
    >>> round(log_loss([0.5, 0.5], [1, 0]), 4)
    0.6931
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
    p = _as_1d("p_pred", p_pred)
    y = _as_1d("outcomes", outcomes, p.shape[0])
    _check_unit_interval("p_pred", p)
    _check_unit_interval("outcomes", y)
    if p.shape[0] == 0:
        return float("nan")
    clipped = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(clipped) + (1.0 - y) * np.log1p(-clipped)))
