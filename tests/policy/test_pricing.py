"""The Lagrangian price search: smallest fitting price, several budgets at once, ceiling."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from recsys.policy.pricing import (
    CEILING_HAIR,
    MAX_BISECTIONS,
    PRICE_RTOL,
    SpendAt,
    above_ceiling,
    price_ceiling,
    smallest_fitting_prices,
)

F64 = NDArray[np.float64]

# Three budgets' spend as step functions of their own price: spend 10 below the first
# step, then the middle level, then the last (the steps and levels differ per budget).
STEPS = np.array([[0.3, 0.7], [0.05, 0.2], [1.5, 4.0]])
LEVELS = np.array([[10.0, 4.0, 0.0], [8.0, 3.0, 1.0], [6.0, 2.0, 0.5]])
TOP = np.array([1.0, 1.0, 5.0])


def steps(prices: F64, rows: slice = slice(None)) -> F64:
    """Spend of budgets ``rows`` (of STEPS / LEVELS) at their ``prices``."""
    level = (prices[:, None] >= STEPS[rows]).sum(axis=1)
    return LEVELS[rows][np.arange(len(prices)), level]


def alone_spend(i: int) -> SpendAt:
    """Spend of budget ``i`` alone, as a one-budget problem."""
    return lambda prices: steps(prices, slice(i, i + 1))


def within_tolerance(price: float, smallest: float) -> bool:
    return smallest <= price <= smallest * (1 + PRICE_RTOL)


def test_a_budget_that_does_not_bind_gets_price_zero() -> None:
    prices = smallest_fitting_prices(steps, np.array([10.0, 8.0, 6.0]), TOP)
    assert prices.tolist() == [0.0, 0.0, 0.0]


def test_a_step_spend_gets_the_smallest_fitting_price_within_the_tolerance() -> None:
    # Budget 0: spend 10 below 0.3 and 4 from 0.3 on; a budget of 5 fits from 0.3.
    # Budget 1: a budget of 3 is met exactly (spend == budget fits) from the first step.
    # Budget 2: a budget of 1 needs the last step, 4.0.
    budget = np.array([5.0, 3.0, 1.0])
    prices = smallest_fitting_prices(steps, budget, TOP)
    for price, smallest in zip(prices.tolist(), [0.3, 0.05, 4.0], strict=True):
        assert within_tolerance(price, smallest)
    assert (steps(prices) <= budget).all()


def test_several_budgets_solved_at_once_equal_each_solved_alone() -> None:
    budget = np.array([5.0, 9.0, 1.0])  # the middle one does not bind
    together = smallest_fitting_prices(steps, budget, TOP)
    alone = [
        smallest_fitting_prices(alone_spend(i), budget[i : i + 1], TOP[i : i + 1])[0]
        for i in range(3)
    ]
    assert together[1] == alone[1] == 0.0
    for i, smallest in ((0, 0.3), (2, 4.0)):
        assert within_tolerance(together[i], smallest)
        assert within_tolerance(alone[i], smallest)


def test_a_budget_below_the_least_spend_gets_the_top_price() -> None:
    # Budget 1 never spends below 1.0 and budget 2 never below 0.5: no price fits them.
    prices = smallest_fitting_prices(steps, np.array([5.0, 0.5, 0.1]), TOP)
    assert prices[1:].tolist() == [1.0, 5.0]
    assert within_tolerance(prices[0], 0.3)


def test_the_search_starts_from_low() -> None:
    low = np.array([0.5, 0.1, 2.0])
    # Budget 0 fits at its low (0.5 > 0.3) and keeps it; the others are searched above it.
    prices = smallest_fitting_prices(steps, np.array([5.0, 2.5, 1.0]), TOP, low=low)
    assert prices[0] == 0.5
    assert within_tolerance(prices[1], 0.2)
    assert within_tolerance(prices[2], 4.0)
    assert low.tolist() == [0.5, 0.1, 2.0]  # not modified


def test_the_cost_is_one_spend_call_per_halving() -> None:
    calls = []

    def counted(prices: F64) -> F64:
        calls.append(prices.copy())
        return steps(prices)

    smallest_fitting_prices(counted, np.array([5.0, 2.5, 1.0]), TOP)
    # The slowest budget narrows a bracket of 1 to 1e-6 of its price 0.2: 23 halvings.
    assert 1 < len(calls) <= 1 + 25 <= 1 + MAX_BISECTIONS
    assert smallest_fitting_prices(counted, np.array([99.0] * 3), TOP).tolist() == [0.0] * 3


def test_price_ceiling_is_the_largest_value_per_spend_of_each_budget() -> None:
    value = np.array([2.0, 3.0, 1.0, 9.0, 5.0])
    spend = np.array([4.0, 2.0, 0.0, 1.0, 1.0])
    index = np.array([0, 0, 1, -1, 2])  # row 2 costs nothing, row 3 has no budget
    top = price_ceiling(value, spend, index, 4)
    assert top.tolist() == [1.5, 0.0, 5.0, 0.0]
    lifted = above_ceiling(top)
    assert (lifted > top).all()
    assert lifted.tolist() == pytest.approx(top.tolist(), rel=2 * CEILING_HAIR, abs=2e-12)
    # Above the lifted ceiling the best row is not worth taking, even after rounding.
    assert value[1] - lifted[0] * spend[1] < 0
