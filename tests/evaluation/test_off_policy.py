"""Known answers for IPS, SNIPS and doubly robust off-policy estimates."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest

from recsys.evaluation import OPEEstimate, doubly_robust, ips, snips

# Four logged rows:
#   reward             1     0     1     0
#   logged_propensity  0.5   0.5   0.25  1.0
#   target_prob        1.0   0.5   0.5   0.0
#   w = target/logged  2     1     2     0
R = np.array([1.0, 0, 1, 0])
LOGGED = np.array([0.5, 0.5, 0.25, 1.0])
TARGET = np.array([1.0, 0.5, 0.5, 0.0])


def test_ips_hand_computed() -> None:
    est = ips(R, LOGGED, TARGET)
    # terms w * r = [2, 0, 2, 0]: mean 1, sample variance 4/3, se = sqrt(4/3) / 2
    assert est.value == pytest.approx(1.0)
    assert est.std_error == pytest.approx(math.sqrt(4 / 3) / 2)
    # ESS = (2 + 1 + 2 + 0)^2 / (4 + 1 + 4 + 0) = 25 / 9
    assert est.effective_sample_size == pytest.approx(25 / 9)
    assert est.n == 4


def test_snips_hand_computed() -> None:
    est = snips(R, LOGGED, TARGET)
    # V = (2 + 2) / 5 = 0.8; w (r - V) = [0.4, -0.8, 0.4, 0], squares sum to 0.96;
    # se = sqrt(0.96 / (4 * 3)) / mean(w) = sqrt(0.08) / 1.25
    assert est.value == pytest.approx(0.8)
    assert est.std_error == pytest.approx(math.sqrt(0.08) / 1.25)
    assert est.effective_sample_size == pytest.approx(25 / 9)


def test_doubly_robust_hand_computed() -> None:
    q_logged = np.full(4, 0.5)
    q_target = np.array([0.6, 0.4, 0.5, 0.3])
    est = doubly_robust(R, LOGGED, TARGET, q_logged, q_target)
    # terms q_target + w (r - q_logged) = [1.6, -0.1, 1.5, 0.3] -> mean 3.3 / 4
    terms = np.array([1.6, -0.1, 1.5, 0.3])
    assert est.value == pytest.approx(0.825)
    assert est.std_error == pytest.approx(np.std(terms, ddof=1) / 2)


def test_doubly_robust_with_zero_model_is_ips() -> None:
    zeros = np.zeros(4)
    assert doubly_robust(R, LOGGED, TARGET, zeros, zeros) == ips(R, LOGGED, TARGET)


def test_max_weight_clips_before_everything() -> None:
    est = ips(R, LOGGED, TARGET, max_weight=1.5)
    # w = [1.5, 1, 1.5, 0]: terms [1.5, 0, 1.5, 0]; ESS = 4^2 / 5.5
    assert est.value == pytest.approx(0.75)
    assert est.effective_sample_size == pytest.approx(16 / 5.5)
    assert snips(R, LOGGED, TARGET, max_weight=1.5).value == pytest.approx(3 / 4)


def test_same_policy_has_full_ess_and_mean_reward() -> None:
    rng = np.random.default_rng(0)
    rewards = rng.random(1_000)
    propensity = rng.uniform(0.1, 1.0, size=1_000)
    for estimator in (ips, snips):
        est = estimator(rewards, propensity, propensity)
        assert est.effective_sample_size == pytest.approx(1_000)
        assert est.value == pytest.approx(rewards.mean())


def test_estimate_is_frozen_and_has_an_interval() -> None:
    est = ips(R, LOGGED, TARGET)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.value = 2.0  # type: ignore[misc]
    low, high = est.confidence_interval(0.95)
    assert low == pytest.approx(1.0 - 1.959964 * est.std_error)
    assert high == pytest.approx(1.0 + 1.959964 * est.std_error)


def test_degenerate_inputs_give_nan_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        never = snips(R, LOGGED, np.zeros(4))  # target never takes a logged action
        assert math.isnan(never.value) and never.effective_sample_size == 0.0
        single = ips([1.0], [0.5], [1.0])
        assert single.value == 2.0 and math.isnan(single.std_error)
        assert math.isnan(snips([1.0], [0.5], [1.0]).std_error)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _bandit(
    seed: int, n: int
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Logged data from a 4-action bandit whose true reward probabilities are known.

    Returns the target policy's true value on these contexts and, per row, the reward,
    logged propensity, target probability of the logged action, and a good reward
    model's estimates for the logged action and under the target policy.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    coef = np.array([[1.0, -0.5], [-0.5, 1.0], [0.3, 0.3], [-1.0, -1.0]])
    mu = 1 / (1 + np.exp(-(x @ coef.T - 1.0)))
    logging = 0.8 * _softmax(0.5 * (x @ coef.T)) + 0.05  # every action >= 5 %
    target = 0.9 * (mu == mu.max(axis=1, keepdims=True)) + 0.025  # mostly greedy
    truth = float(np.mean(np.sum(target * mu, axis=1)))
    action = (rng.random(n)[:, None] > np.cumsum(logging, axis=1)).sum(axis=1)
    rows = np.arange(n)
    reward = (rng.random(n) < mu[rows, action]).astype(float)
    q_hat = np.clip(mu + rng.normal(scale=0.02, size=mu.shape), 0, 1)
    return (
        truth,
        reward,
        logging[rows, action],
        target[rows, action],
        q_hat[rows, action],
        np.sum(target * q_hat, axis=1),
    )


def test_estimators_recover_the_true_policy_value() -> None:
    truth, r, logged, target, q_logged, q_target = _bandit(seed=0, n=20_000)
    estimates = {
        "ips": ips(r, logged, target),
        "snips": snips(r, logged, target),
        "dr": doubly_robust(r, logged, target, q_logged, q_target),
    }
    for name, est in estimates.items():
        assert abs(est.value - truth) < 4 * est.std_error, name
    # The logged rewards' plain mean judges the logging policy, not the target: far off.
    assert abs(r.mean() - truth) > 10 * estimates["ips"].std_error
    # A good reward model lowers the variance.
    assert estimates["dr"].std_error < 0.9 * estimates["ips"].std_error
    assert 0 < estimates["ips"].effective_sample_size < 20_000


def test_ips_is_unbiased_and_its_intervals_cover() -> None:
    # 40 independent logs: the mean error shrinks like se / sqrt(40), and about 95 % of
    # the 95 % intervals hold the truth.
    errors, covered = [], 0
    for seed in range(40):
        truth, r, logged, target, _, _ = _bandit(seed=100 + seed, n=3_000)
        est = ips(r, logged, target)
        errors.append((est.value - truth) / est.std_error)
        low, high = est.confidence_interval(0.95)
        covered += low <= truth <= high
    assert abs(np.mean(errors)) < 4 / math.sqrt(40)
    assert covered >= 34


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((R, [0.5, 0.0, -0.1, 1.0], TARGET), r"logged_propensity must lie in \(0, 1\]; 2 rows"),
        ((R, LOGGED, [1.0, 1.2, 0.5, 0.0]), r"target_prob must lie in \[0, 1\]; 1 rows"),
        ((R, LOGGED, TARGET[:3]), "target_prob has 3 rows but rewards has 4"),
        ((R, LOGGED[:2], TARGET), "logged_propensity has 2 rows"),
        (([1.0, np.nan, 0, 0], LOGGED, TARGET), "rewards has 1 non-finite"),
        (([], [], []), "rewards is empty"),
    ],
)
def test_bad_input_names_the_argument_and_count(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ips(*args)  # type: ignore[arg-type]


def test_bad_model_inputs_and_clip_are_rejected() -> None:
    with pytest.raises(ValueError, match="q_hat_target has 2 rows"):
        doubly_robust(R, LOGGED, TARGET, np.zeros(4), np.zeros(2))
    with pytest.raises(ValueError, match="max_weight must be positive"):
        snips(R, LOGGED, TARGET, max_weight=0.0)


def test_result_type() -> None:
    assert isinstance(snips(R, LOGGED, TARGET), OPEEstimate)
