"""Off-policy evaluation: the value of a new policy estimated from logged decisions.

Every decision the service makes is logged with the probability the logging policy gave
to the action it took. Reweighting the logged rewards by how much more (or less) often
the *target* policy would take the same action gives an unbiased estimate of the
target policy's value before it is ever deployed:

- :func:`ips` — inverse propensity scoring, ``mean(w * r)``; unbiased, can be noisy.
- :func:`snips` — self-normalized IPS, ``sum(w * r) / sum(w)``; slightly biased, far
  less noisy when weights are large, and invariant to a constant shift of the rewards.
- :func:`doubly_robust` — a reward model's prediction for the target policy, corrected
  by IPS on the model's residuals; unbiased if either the propensities or the model
  are right, and lower variance than IPS when the model is good.

with importance weights ``w = target_prob / logged_propensity``. Each returns an
:class:`OPEEstimate` with a standard error and the effective sample size
``(sum w)^2 / sum w^2``, which says how many logged rows the estimate is really worth
(``n`` when the two policies agree; small when the target policy goes where the logging
policy rarely went — then trust the estimate less).

``max_weight`` (optional, all estimators) clips every weight at that value before use.
Clipping lowers the variance at the price of a bias (towards zero for non-negative
rewards); leave it ``None`` for the unbiased estimators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class OPEEstimate:
    """An off-policy estimate of a policy's mean reward per decision.

    Attributes
    ----------
    value
        Estimated mean reward per decision under the target policy.
    std_error
        Standard error of ``value`` (NaN with fewer than 2 rows).
    effective_sample_size
        ``(sum w)^2 / sum w^2`` of the importance weights actually used (after clipping).
    n
        Number of logged rows.
    """

    value: float
    std_error: float
    effective_sample_size: float
    n: int

    def confidence_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Normal-approximation interval ``value -/+ z * std_error`` at ``level``.

        Examples
        --------
        >>> low, high = OPEEstimate(1.0, 0.5, 10.0, 10).confidence_interval(0.95)
        >>> round(low, 3), round(high, 3)
        (0.02, 1.98)
        """
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        return self.value - z * self.std_error, self.value + z * self.std_error


def _as_1d(name: str, values: ArrayLike, n: int | None) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but rewards has {n}; pass one value per logged row"
        )
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name} has {bad} non-finite (NaN or infinite) rows; drop or fill them")
    return arr


def _weights(
    rewards: ArrayLike,
    logged_propensity: ArrayLike,
    target_prob: ArrayLike,
    max_weight: float | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validated rewards and (optionally clipped) importance weights."""
    r = _as_1d("rewards", rewards, None)
    n = r.shape[0]
    if n == 0:
        raise ValueError("rewards is empty; off-policy evaluation needs logged rows")
    p = _as_1d("logged_propensity", logged_propensity, n)
    bad = int(np.count_nonzero((p <= 0) | (p > 1)))
    if bad:
        raise ValueError(
            f"logged_propensity must lie in (0, 1]; {bad} rows are outside it "
            "(a zero propensity means the logged action could not have been chosen: "
            "check the logging, or drop rows logged without a propensity)"
        )
    pi = _as_1d("target_prob", target_prob, n)
    bad = int(np.count_nonzero((pi < 0) | (pi > 1)))
    if bad:
        raise ValueError(f"target_prob must lie in [0, 1]; {bad} rows are outside it")
    w = pi / p
    if max_weight is not None:
        if not max_weight > 0:
            raise ValueError(f"max_weight must be positive (or None), got {max_weight}")
        w = np.minimum(w, max_weight)
    return r, w


def _effective_sample_size(w: NDArray[np.float64]) -> float:
    """``(sum w)^2 / sum w^2``; 0 when every weight is 0."""
    sum_sq = float(np.dot(w, w))
    return float(w.sum()) ** 2 / sum_sq if sum_sq > 0 else 0.0


def _mean_estimate(terms: NDArray[np.float64], w: NDArray[np.float64]) -> OPEEstimate:
    """Estimate as the mean of per-row terms, with the standard error of that mean."""
    n = terms.shape[0]
    value = float(terms.mean())
    se = float(np.std(terms, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return OPEEstimate(value, se, _effective_sample_size(w), n)


def ips(
    rewards: ArrayLike,
    logged_propensity: ArrayLike,
    target_prob: ArrayLike,
    max_weight: float | None = None,
) -> OPEEstimate:
    """Inverse propensity scoring: ``mean(w * r)`` with ``w = target_prob / logged_propensity``.

    Parameters
    ----------
    rewards
        Observed reward of each logged decision.
    logged_propensity
        Probability, in (0, 1], that the logging policy chose the logged action.
    target_prob
        Probability, in [0, 1], that the target policy chooses the logged action in the
        same context.
    max_weight
        Clip weights at this value (see the module docstring); ``None`` for no clipping.

    Returns
    -------
    OPEEstimate
        The standard error is the sample standard deviation of ``w * r`` over ``sqrt(n)``.

    Examples
    --------
    >>> ips([1, 0, 1, 0], [0.5, 0.5, 0.25, 1.0], [1.0, 0.5, 0.5, 0.0]).value
    1.0
    """
    r, w = _weights(rewards, logged_propensity, target_prob, max_weight)
    return _mean_estimate(w * r, w)


def snips(
    rewards: ArrayLike,
    logged_propensity: ArrayLike,
    target_prob: ArrayLike,
    max_weight: float | None = None,
) -> OPEEstimate:
    """Self-normalized IPS: ``sum(w * r) / sum(w)``.

    The standard error comes from the delta method for a ratio of means:
    ``sqrt(sum((w * (r - V))^2) / (n * (n - 1))) / mean(w)`` with ``V`` the estimate.
    The value (and error) are NaN when every weight is 0, i.e. the target policy never
    takes a logged action. Parameters are as in :func:`ips`.

    Examples
    --------
    >>> snips([1, 0, 1, 0], [0.5, 0.5, 0.25, 1.0], [1.0, 0.5, 0.5, 0.0]).value
    0.8
    """
    r, w = _weights(rewards, logged_propensity, target_prob, max_weight)
    n = r.shape[0]
    ess = _effective_sample_size(w)
    total = float(w.sum())
    if total <= 0:
        return OPEEstimate(float("nan"), float("nan"), ess, n)
    value = float(np.dot(w, r)) / total
    if n < 2:
        return OPEEstimate(value, float("nan"), ess, n)
    resid = w * (r - value)
    se = math.sqrt(float(np.dot(resid, resid)) / (n * (n - 1))) / (total / n)
    return OPEEstimate(value, se, ess, n)


def doubly_robust(
    rewards: ArrayLike,
    logged_propensity: ArrayLike,
    target_prob: ArrayLike,
    q_hat_logged: ArrayLike,
    q_hat_target: ArrayLike,
    max_weight: float | None = None,
) -> OPEEstimate:
    """Doubly robust: ``mean(q_hat_target + w * (r - q_hat_logged))``.

    Parameters
    ----------
    rewards, logged_propensity, target_prob, max_weight
        As in :func:`ips`.
    q_hat_logged
        Reward model's estimate for the logged action in each context.
    q_hat_target
        Reward model's expected reward under the target policy in each context,
        ``sum_a target(a | x) * q_hat(x, a)``.

    Returns
    -------
    OPEEstimate
        The standard error is the sample standard deviation of the per-row terms over
        ``sqrt(n)``; the effective sample size is that of the weights, as for IPS.

    Examples
    --------
    >>> doubly_robust([1, 0], [0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.6, 0.4]).value
    1.0
    """
    terms, w = doubly_robust_terms(
        rewards, logged_propensity, target_prob, q_hat_logged, q_hat_target, max_weight
    )
    return _mean_estimate(terms, w)


def doubly_robust_terms(
    rewards: ArrayLike,
    logged_propensity: ArrayLike,
    target_prob: ArrayLike,
    q_hat_logged: ArrayLike,
    q_hat_target: ArrayLike,
    max_weight: float | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per logged row, the doubly robust term ``q_hat_target + w * (r - q_hat_logged)``
    (their mean is :func:`doubly_robust`'s value) and the weights ``w``: two policies'
    terms on the same rows give their paired difference and its standard error."""
    r, w = _weights(rewards, logged_propensity, target_prob, max_weight)
    n = r.shape[0]
    q_logged = _as_1d("q_hat_logged", q_hat_logged, n)
    q_target = _as_1d("q_hat_target", q_hat_target, n)
    return q_target + w * (r - q_logged), w
