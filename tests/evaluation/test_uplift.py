"""Known answers for Qini, AUUC and uplift@k."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from recsys.evaluation import auuc, qini_coefficient, qini_curve, uplift_at_k, uplift_curve

# Six rows, already in descending score order:
#   row    0  1  2  3  4  5
#   t      1  1  0  1  0  0
#   y      1  1  0  0  1  0
# Prefix sums (Y_t, N_t, Y_c, N_c) and Q = Y_t - Y_c * N_t / N_c (0 when N_c = 0):
#   k=1 (1,1,0,0) Q=1   k=2 (2,2,0,0) Q=2   k=3 (2,2,0,1) Q=2
#   k=4 (2,3,0,1) Q=2   k=5 (2,3,1,2) Q=2-1*3/2=0.5   k=6 (2,3,1,3) Q=1
SCORES = np.array([6.0, 5, 4, 3, 2, 1])
T = np.array([1.0, 1, 0, 1, 0, 0])
Y = np.array([1.0, 1, 0, 0, 1, 0])
X_EXPECTED = np.arange(7) / 6
Q_EXPECTED = np.array([0, 1, 2, 2, 2, 0.5, 1])
# Trapezoid area: (0.5 + 1.5 + 2 + 2 + 1.25 + 0.75) / 6 = 4/3; the random line's is 1/2.
MODEL_AREA = 4 / 3 - 1 / 2
# Oracle score y * (2t - 1) = [1, 1, 0, 0, -1, 0]: blocks end at 2, 5, 6 rows with
# Q = 2, 2, 1 -> area (1/3 + 1 + 1/4) - 1/2 = 13/12.
ORACLE_AREA = 13 / 12


def _rct(
    seed: int, n: int = 40_000
) -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray]:
    """Randomized trial, 50/50 assignment, known uplift tau(x) = 0.2 x - 0.05."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    tau = 0.2 * x - 0.05
    t = (rng.random(n) < 0.5).astype(float)
    y = (rng.random(n) < 0.1 + 0.1 * x + t * tau).astype(float)
    return rng, tau, t, y


def test_qini_curve_hand_computed() -> None:
    x, q = qini_curve(SCORES, Y, T)
    assert x == pytest.approx(X_EXPECTED)
    assert q == pytest.approx(Q_EXPECTED)


def test_qini_curve_on_grid_interpolates_the_breakpoints() -> None:
    x, q = qini_curve(SCORES, Y, T, n_points=13)
    assert x == pytest.approx(np.linspace(0, 1, 13))
    assert q[1] == pytest.approx(0.5)  # halfway between (0, 0) and (1/6, 1)
    assert q[10] == pytest.approx(0.5)  # x = 5/6


def test_qini_coefficient_hand_computed() -> None:
    assert qini_coefficient(SCORES, Y, T) == pytest.approx(MODEL_AREA / ORACLE_AREA)
    assert qini_coefficient(SCORES, Y, T, normalize=False) == pytest.approx(MODEL_AREA / 6)


def test_uplift_curve_and_auuc_hand_computed() -> None:
    # U(k) = (mean_t - mean_c) * k: 1*1, 1*2, (1-0)*3, (2/3-0)*4, (2/3-1/2)*5, (2/3-1/3)*6
    x, u = uplift_curve(SCORES, Y, T)
    expected = np.array([0, 1, 2, 3, 8 / 3, 5 / 6, 2])
    assert u == pytest.approx(expected)
    assert auuc(SCORES, Y, T) == pytest.approx(np.trapezoid(expected / 6, x))


def test_uplift_at_k_hand_computed() -> None:
    assert uplift_at_k(SCORES, Y, T, fraction=0.5) == pytest.approx(1.0)
    assert uplift_at_k(SCORES, Y, T, fraction=5 / 6) == pytest.approx(2 / 3 - 1 / 2)
    assert uplift_at_k(SCORES, Y, T, fraction=1.0) == pytest.approx(2 / 3 - 1 / 3)


def test_prefix_without_controls_gives_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(uplift_at_k(SCORES, Y, T, fraction=1 / 6))  # only a treated row
        _, q = qini_curve(SCORES, Y, np.ones(6))  # no control rows at all
        assert q == pytest.approx(np.concatenate(([0], np.cumsum(Y))))
        _, u = uplift_curve(SCORES, Y, np.zeros(6))
        assert np.isfinite(u).all()
        assert math.isnan(uplift_at_k(SCORES, Y, np.zeros(6), fraction=1.0))


def test_ties_do_not_depend_on_input_order() -> None:
    scores = np.array([1.0, 1, 1, 0, 0, 0])
    perm = np.array([2, 0, 5, 1, 4, 3])
    x1, q1 = qini_curve(scores, Y, T)
    x2, q2 = qini_curve(scores[perm], Y[perm], T[perm])
    assert x1 == pytest.approx(x2)
    assert q1 == pytest.approx(q2)
    assert x1 == pytest.approx([0, 0.5, 1])  # one breakpoint per tie block
    assert uplift_at_k(scores, Y, T, 0.5) == uplift_at_k(scores[perm], Y[perm], T[perm], 0.5)


def test_constant_score_is_the_random_line() -> None:
    assert qini_coefficient(np.zeros(6), Y, T) == pytest.approx(0.0)


def test_true_uplift_ranks_above_random_and_reversed_below() -> None:
    rng, tau, t, y = _rct(seed=0)
    noisy = tau + rng.normal(scale=0.1, size=tau.shape[0])
    perfect = qini_coefficient(tau, y, t)
    informative = qini_coefficient(noisy, y, t)
    random = qini_coefficient(rng.random(tau.shape[0]), y, t)
    reversed_ = qini_coefficient(-tau, y, t)
    assert perfect > 0.05
    assert abs(random) < 0.03
    assert reversed_ < -0.05
    assert random < informative < perfect


def test_auuc_of_random_targeting_is_half_the_ate() -> None:
    rng, tau, t, y = _rct(seed=1)
    ate = float(tau.mean())  # about 0.05
    assert auuc(rng.random(tau.shape[0]), y, t) == pytest.approx(ate / 2, abs=0.01)
    assert auuc(tau, y, t) > auuc(-tau, y, t) + 0.02


def test_uplift_at_k_recovers_known_uplift_in_the_top() -> None:
    _, tau, t, y = _rct(seed=2)
    # The top 20 % by true uplift has x in [0.8, 1]: mean tau = 0.2 * 0.9 - 0.05 = 0.13.
    assert uplift_at_k(tau, y, t, 0.2) == pytest.approx(0.13, abs=0.04)
    assert uplift_at_k(tau, y, t, 1.0) == pytest.approx(0.05, abs=0.015)


def test_propensity_weights_remove_confounding() -> None:
    # Treatment more likely for high-x buyers, who also buy more: the naive difference is
    # biased (about 0.11); inverse-propensity weights recover the true uplift of 0.05.
    rng = np.random.default_rng(3)
    n = 40_000
    x = rng.random(n)
    e = 0.2 + 0.6 * x
    t = (rng.random(n) < e).astype(float)
    y = (rng.random(n) < 0.1 + 0.3 * x + 0.05 * t).astype(float)
    received = np.where(t == 1, e, 1 - e)
    scores = np.zeros(n)
    assert uplift_at_k(scores, y, t, 1.0) > 0.09
    assert uplift_at_k(scores, y, t, 1.0, propensity=received) == pytest.approx(0.05, abs=0.015)


def test_constant_propensity_changes_scale_not_ranking_quality() -> None:
    half = np.full(6, 0.5)
    _, q = qini_curve(SCORES, Y, T, propensity=half)
    assert q == pytest.approx(2 * Q_EXPECTED)  # every weight is 2
    assert qini_coefficient(SCORES, Y, T, propensity=half) == pytest.approx(
        qini_coefficient(SCORES, Y, T)
    )
    assert uplift_at_k(SCORES, Y, T, 0.5, propensity=half) == pytest.approx(1.0)


def test_continuous_outcome() -> None:
    profit = Y * 10.0
    _, q = qini_curve(SCORES, profit, T)
    assert q == pytest.approx(10 * Q_EXPECTED)
    assert qini_coefficient(SCORES, profit, T) == pytest.approx(qini_coefficient(SCORES, Y, T))


def test_all_zero_outcomes_give_nan_coefficient() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(qini_coefficient(SCORES, np.zeros(6), T))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"treatment": [1, 0, 2, 1, 0, 0]}, "1 rows hold other values"),
        ({"propensity": [0.5, 0.0, 0.5, 1.5, 0.5, 0.5]}, "2 rows are outside"),
        ({"outcome": [1, 0, 0]}, "outcome has 3 rows"),
        ({"scores": []}, "scores is empty"),
    ],
)
def test_bad_input_is_rejected(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"scores": SCORES, "outcome": Y, "treatment": T}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        qini_curve(**args)  # type: ignore[arg-type]


def test_bad_fraction_is_rejected() -> None:
    with pytest.raises(ValueError, match="fraction must lie in"):
        uplift_at_k(SCORES, Y, T, fraction=0.0)
