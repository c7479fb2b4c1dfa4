"""The Lagrangian price of a budget: the smallest price at which the spend fits.

Budgets are solved by Lagrangian relaxation (:mod:`recsys.policy.budget` per seller,
`recsys.campaigns.planner` per campaign plan): at a price ``lam`` per unit of spend
every choice is valued ``value - lam * spend``, so the spend chosen falls as ``lam``
rises, and the budget's price is the smallest ``lam >= 0`` at which the spend fits.
This module is that search, written once for both, vectorized over several independent
budgets; the callers say what "spend at a price" means for them.

A leaf: it imports no other policy module.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

PRICE_RTOL = 1e-6
"""Relative tolerance of a price: the price returned fits its budget and is at most this
fraction (of itself) above the smallest price that fits."""

MAX_BISECTIONS = 60
"""Halvings of a price's bracket at most; 60 halvings narrow it to 1e-18 of the top price,
so the cap only binds when the smallest fitting price is below about 1e-12 of the top."""

CEILING_HAIR = 1e-6
"""Relative margin that lifts a price ceiling clear of rounding at the ratio itself."""

SpendAt = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""Maps a price per budget (shape ``(n,)``) to the spend charged to each budget."""


def price_ceiling(
    value: NDArray[np.float64],
    spend: NDArray[np.float64],
    budget_index: NDArray[np.int64],
    n_budgets: int,
) -> NDArray[np.float64]:
    """Per budget, the largest value per unit of spend of its rows with a positive spend.

    A row charged to budget ``budget_index[i]`` (``-1``: to none) is worth taking at price
    ``lam`` only while ``value - lam * spend > 0``, that is below ``value / spend``; from
    the largest such ratio on, no costly row of the budget is worth taking, so it is the
    top of the price search. A budget without such a row gets 0. O(rows).

    A caller that keeps a row at a net value of exactly 0 plus rounding (a threshold of
    0 rather than a profit epsilon) raises the ceiling by a hair
    (:data:`CEILING_HAIR`); the exact ratio is kept otherwise, because the bracket fixes
    the prices the bisection tries, and a plan can depend on trying a tie price exactly.

    >>> price_ceiling(np.array([2.0, 3.0, 1.0]), np.array([4.0, 2.0, 0.0]),
    ...               np.array([0, 0, 1]), 2).tolist()
    [1.5, 0.0]
    """
    costly = (budget_index >= 0) & (spend > 0)
    top = np.zeros(n_budgets)
    np.maximum.at(top, budget_index[costly], value[costly] / spend[costly])
    return top


def above_ceiling(top: NDArray[np.float64]) -> NDArray[np.float64]:
    """``top`` raised by :data:`CEILING_HAIR` (relative) and 1e-12 (absolute)."""
    return top * (1 + CEILING_HAIR) + 1e-12


def smallest_fitting_prices(
    spend_at: SpendAt,
    budget: NDArray[np.float64],
    top: NDArray[np.float64],
    low: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Per budget, the smallest price in ``[low, top]`` at which ``spend_at`` fits it.

    ``spend_at(prices)[i]`` must not increase with ``prices[i]``; it may be a step
    function (it usually is: a choice flips at a price). A budget that fits at ``low``
    (default 0) keeps ``low``; one that does not fit even at ``top`` gets ``top`` (the
    price above which nothing costly is chosen, :func:`price_ceiling`, so its spend is the
    least it can be). Otherwise the price returned fits and lies within
    :data:`PRICE_RTOL` of the smallest fitting price (or :data:`MAX_BISECTIONS` halvings
    of ``[low, top]``, whichever is reached first).

    All budgets are bisected together: one call of ``spend_at`` per step evaluates every
    budget's midpoint, while the budgets that fit at ``low`` are held there (a budget
    bracketed tightly enough keeps halving with the rest, at no extra call). The cost
    is one call plus one per step, about ``log2(top / price / PRICE_RTOL)`` steps (20 to
    30 for prices within a few orders of magnitude of the top).

    Why not scipy: `scipy.optimize.bisect` and its siblings find *a* root of one
    continuous scalar function; here the function is a step, so "spend == budget" may
    hold on a whole interval (or nowhere), the answer is that interval's left end, and a
    scalar solver run per budget would pay one full ``spend_at`` call per budget per step
    instead of one per step for all of them.

    >>> step = lambda p: np.where(p < 0.25, 10.0, 4.0)  # spend 10 below 0.25, then 4
    >>> smallest_fitting_prices(step, np.array([5.0]), np.array([1.0])).round(5).tolist()
    [0.25]
    """
    lo = np.zeros_like(budget) if low is None else np.asarray(low, dtype=np.float64).copy()
    active = spend_at(lo) > budget
    if not active.any():
        return lo
    hi = np.where(active, np.maximum(top, lo), lo)
    for _ in range(MAX_BISECTIONS):
        mid = np.where(active, 0.5 * (lo + hi), lo)
        fits = spend_at(mid) <= budget
        hi = np.where(active & fits, mid, hi)
        lo = np.where(active & ~fits, mid, lo)
        if np.all((hi - lo)[active] <= PRICE_RTOL * hi[active]):
            break
    return np.where(active, hi, lo)
