"""Uplift metrics: does a score put the buyers an offer *changes* first?

An offer is worth issuing when it causes a purchase that would not have happened
otherwise. On randomized data (or logged data with known propensities) we can measure
that per targeting depth by comparing the treated and control rows among the top-scored
rows. This module gives the Qini curve and coefficient (Radcliffe 2007), the uplift curve
and its area (AUUC), and the observed uplift in the top fraction.

Conventions shared by every function here:

- Rows are ordered by descending score. Tied scores form one block: the curves are
  evaluated at block ends and drawn as straight lines between them, so the result does
  not depend on input order and a constant score is the random-targeting line.
- The x axis is the share of *rows* targeted (the population), never a weighted share.
- With ``propensity`` (the probability of the arm each row actually received) every row
  is weighted by ``1 / propensity``, so the treated and the control rows each stand for
  the whole population (inverse-propensity weighting). Without it every weight is 1.
- A prefix with no control rows (or no treated rows) has no estimate of the other arm;
  that arm's term is taken as 0 there, without any division by zero or warning. Such
  prefixes are only the first few rows on randomized data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from recsys.evaluation.targeting import (
    _as_1d,
    _check_binary,
    _check_fraction,
    _cumulative_at_groups,
    _sort_into_tie_groups,
)


@dataclass(frozen=True, eq=False)
class _Prefix:
    """Weighted cumulative sums at 0 and at each tie-block end, in descending-score order."""

    rows: NDArray[np.float64]
    n_t: NDArray[np.float64]
    n_c: NDArray[np.float64]
    y_t: NDArray[np.float64]
    y_c: NDArray[np.float64]
    n: int


def _inputs(
    scores: ArrayLike,
    outcome: ArrayLike,
    treatment: ArrayLike,
    propensity: ArrayLike | None,
) -> tuple[
    NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64] | None
]:
    """Validated ``scores, outcome, treatment, weights`` arrays (``None``: all weights 1)."""
    s = _as_1d("scores", scores)
    if s.shape[0] == 0:
        raise ValueError("scores is empty; uplift metrics need at least one row")
    y = _as_1d("outcome", outcome, s.shape[0])
    t = _as_1d("treatment", treatment, s.shape[0])
    _check_binary("treatment", t)
    w = None
    if propensity is not None:
        p = _as_1d("propensity", propensity, s.shape[0])
        bad = int(np.count_nonzero((p <= 0) | (p > 1)))
        if bad:
            raise ValueError(
                f"propensity must lie in (0, 1] (probability of the arm received); "
                f"{bad} rows are outside it"
            )
        w = 1.0 / p
    return s, y, t, w


def _prefix(
    scores: NDArray[np.float64],
    outcome: NDArray[np.float64],
    treatment: NDArray[np.float64],
    weights: NDArray[np.float64] | None,
) -> _Prefix:
    """Prefix sums; ``weights=None`` means every weight is 1 (saves a gather)."""
    order, ends = _sort_into_tie_groups(scores)
    t = treatment[order]
    wt = t if weights is None else weights[order] * t
    wc = (1.0 - t) if weights is None else weights[order] - wt
    y = outcome[order]
    return _Prefix(
        rows=np.concatenate(([0.0], ends.astype(np.float64))),
        n_t=_cumulative_at_groups(wt, ends),
        n_c=_cumulative_at_groups(wc, ends),
        y_t=_cumulative_at_groups(wt * y, ends),
        y_c=_cumulative_at_groups(wc * y, ends),
        n=scores.shape[0],
    )


def _safe_ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    """``num / den`` where ``den > 0``, else 0 (no warning)."""
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _qini_values(pre: _Prefix) -> NDArray[np.float64]:
    """Radcliffe's ``Q(k) = Y_t(k) - Y_c(k) * N_t(k) / N_c(k)`` at each breakpoint."""
    return pre.y_t - _safe_ratio(pre.y_c * pre.n_t, pre.n_c)


def _uplift_values(pre: _Prefix) -> NDArray[np.float64]:
    """``U(k) = (mean_t(k) - mean_c(k)) * n(k)`` at each breakpoint."""
    return (_safe_ratio(pre.y_t, pre.n_t) - _safe_ratio(pre.y_c, pre.n_c)) * pre.rows


def _on_grid(
    x: NDArray[np.float64], values: NDArray[np.float64], n_points: int | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The exact breakpoints, or the piecewise-linear curve read at ``n_points`` points."""
    if n_points is None:
        return x, values
    if n_points < 2:
        raise ValueError(
            f"n_points must be at least 2 (or None for the breakpoints), got {n_points}"
        )
    grid = np.linspace(0.0, 1.0, n_points)
    return grid, np.interp(grid, x, values)


def qini_curve(
    scores: ArrayLike,
    outcome: ArrayLike,
    treatment: ArrayLike,
    propensity: ArrayLike | None = None,
    n_points: int | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Qini curve: cumulative incremental outcome against the share of rows targeted.

    ``Q(k) = Y_t(k) - Y_c(k) * N_t(k) / N_c(k)`` for the ``k`` top-scored rows, where
    ``Y`` are (weighted) outcome sums and ``N`` (weighted) row counts of the treated
    (``t``) and control (``c``) rows: the treated outcomes minus what the control rate
    predicts for that many treated rows. ``Q`` is in outcome units (e.g. purchases or
    money) of the treated group.

    Parameters
    ----------
    scores
        Predicted uplift per row; higher means "treat first".
    outcome
        Observed outcome: 0/1 (purchase) or continuous (profit, may be negative).
    treatment
        1 if the row received the offer, 0 if it is a control row.
    propensity
        Optional probability of the arm each row received, in (0, 1]; rows are then
        weighted by its inverse (see the module docstring).
    n_points
        ``None`` returns the exact breakpoints (0 and every tie-block end); an integer
        returns the curve on that many evenly spaced x values in [0, 1].

    Returns
    -------
    x, q
        Share of rows targeted (from 0 to 1) and the Qini value there. Random targeting
        is the straight line from ``(0, 0)`` to ``(1, q[-1])``. With ``propensity`` the
        values are in weighted units (a row counts ``1 / propensity`` times), so compare
        curves computed with the same weighting.

    Examples
    --------
    >>> x, q = qini_curve([4, 3, 2, 1], [1, 0, 0, 1], [1, 0, 1, 0])
    >>> x.tolist(), q.tolist()
    ([0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 1.0, 1.0, 1.0, 0.0])
    """
    pre = _prefix(*_inputs(scores, outcome, treatment, propensity))
    return _on_grid(pre.rows / pre.n, _qini_values(pre), n_points)


def _area_over_random(x: NDArray[np.float64], q: NDArray[np.float64]) -> float:
    """Area between a curve through ``(0, 0)`` and its chord to ``(1, q[-1])``."""
    return float(np.trapezoid(q, x) - q[-1] / 2.0)


def qini_coefficient(
    scores: ArrayLike,
    outcome: ArrayLike,
    treatment: ArrayLike,
    propensity: ArrayLike | None = None,
    normalize: bool = True,
) -> float:
    """Area between the model's Qini curve and the random-targeting line, normalized.

    Normalization (the default, ``normalize=True``, following Radcliffe's ``Q``): the
    area is divided by the same area for the *oracle* ordering of this very sample — the
    treated rows with the highest (weighted) outcome first and the control rows with the
    highest outcome last. So 0 is random targeting (in expectation), 1 is that oracle (a
    heuristic best case, not a proven maximum, so a value slightly above 1 is possible),
    and a negative value is worse than random. The oracle fits the noise of the sample,
    so even the true uplift scores well below 1 on noisy 0/1 outcomes (about 0.1 on a
    simulated trial with 5 % average uplift); compare models on the same data only,
    which is fair because they share the denominator.

    With ``normalize=False`` the raw area divided by the number of rows is returned (in
    outcome units per row), for when the oracle is not meaningful.

    Returns NaN (without a warning) when the oracle is no better than random, e.g. when
    every outcome is zero.
    """
    s, y, t, w = _inputs(scores, outcome, treatment, propensity)
    pre = _prefix(s, y, t, w)
    model_area = _area_over_random(pre.rows / pre.n, _qini_values(pre))
    if not normalize:
        return model_area / pre.n
    oracle_scores = y * (2.0 * t - 1.0) if w is None else w * y * (2.0 * t - 1.0)
    oracle = _prefix(oracle_scores, y, t, w)
    oracle_area = _area_over_random(oracle.rows / oracle.n, _qini_values(oracle))
    if not oracle_area > 0:
        return float("nan")
    return model_area / oracle_area


def uplift_curve(
    scores: ArrayLike,
    outcome: ArrayLike,
    treatment: ArrayLike,
    propensity: ArrayLike | None = None,
    n_points: int | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Uplift curve: ``U(k) = (mean_t(k) - mean_c(k)) * k`` against the share targeted.

    ``mean_t(k)`` and ``mean_c(k)`` are the (weighted) mean outcomes of the treated and
    control rows among the ``k`` top-scored rows, so ``U(k)`` estimates the incremental
    outcome of treating those ``k`` rows. An arm missing from a prefix contributes 0.
    Parameters and return values are as in :func:`qini_curve`.

    Examples
    --------
    >>> x, u = uplift_curve([4, 3, 2, 1], [1, 0, 0, 1], [1, 0, 1, 0])
    >>> u.tolist()
    [0.0, 1.0, 2.0, 1.5, 0.0]
    """
    pre = _prefix(*_inputs(scores, outcome, treatment, propensity))
    return _on_grid(pre.rows / pre.n, _uplift_values(pre), n_points)


def auuc(
    scores: ArrayLike,
    outcome: ArrayLike,
    treatment: ArrayLike,
    propensity: ArrayLike | None = None,
) -> float:
    """Area under the uplift curve, per row of the population.

    ``AUUC = integral over x in [0, 1] of U(x * n) / n``: the incremental outcome per
    row, averaged over all targeting depths. Dividing by ``n`` makes datasets of
    different sizes comparable. Random targeting scores about ``ATE / 2`` (the area
    under the straight line to the average treatment effect), so compare a model with
    that and with baselines on the same data, not with 0.
    """
    pre = _prefix(*_inputs(scores, outcome, treatment, propensity))
    return float(np.trapezoid(_uplift_values(pre) / pre.n, pre.rows / pre.n))


def uplift_at_k(
    scores: ArrayLike,
    outcome: ArrayLike,
    treatment: ArrayLike,
    fraction: float,
    propensity: ArrayLike | None = None,
) -> float:
    """Observed treated-minus-control mean outcome among the top-scored ``fraction``.

    The top ``fraction * n`` rows are taken without rounding; a cut inside a tie block
    (or between whole rows) includes that block in proportion, as in
    :func:`recsys.evaluation.targeting.gain_at_k`.

    Returns
    -------
    float
        ``mean_t - mean_c`` in the top rows; NaN (without a warning) when those rows hold
        no treated or no control weight, since the difference is then unobserved.

    Examples
    --------
    >>> uplift_at_k([4, 3, 2, 1], [1, 0, 0, 1], [1, 0, 1, 0], fraction=0.5)
    1.0
    """
    share = _check_fraction("fraction", fraction, allow_zero=False)
    pre = _prefix(*_inputs(scores, outcome, treatment, propensity))
    cut = share * pre.n
    n_t, n_c, y_t, y_c = (
        float(np.interp(cut, pre.rows, sums)) for sums in (pre.n_t, pre.n_c, pre.y_t, pre.y_c)
    )
    if n_t <= 0 or n_c <= 0:
        return float("nan")
    return y_t / n_t - y_c / n_c
