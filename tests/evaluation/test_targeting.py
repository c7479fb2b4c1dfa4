"""Known answers for gain@k, ROC AUC and calibration."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from recsys.evaluation import (
    brier_score,
    calibration_table,
    expected_calibration_error,
    gain_at_k,
    gain_curve,
    log_loss,
    roc_auc,
)


def test_perfect_scorer_captures_everything_at_the_positive_share() -> None:
    # 10 rows, the 2 positives scored highest: the top 20 % holds both.
    scores = np.arange(10, 0, -1, dtype=float)
    outcomes = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    gains = gain_at_k(scores, outcomes, fractions=(0.05, 0.1, 0.2, 0.5))
    # 0.05 * 10 = half a row: half of the first positive = 1/4 of all positives.
    assert gains == pytest.approx({0.05: 0.25, 0.1: 0.5, 0.2: 1.0, 0.5: 1.0})


def test_worst_scorer_captures_nothing_until_the_end() -> None:
    scores = np.arange(10, dtype=float)
    outcomes = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert gain_at_k(scores, outcomes, fractions=(0.5, 0.8, 0.9))[0.8] == 0.0
    assert gain_at_k(scores, outcomes, fractions=(0.9,))[0.9] == pytest.approx(0.5)


def test_ties_are_averaged_not_ordered_by_input() -> None:
    # Rows 0-3 tie at the top and hold 1 of the 2 positives; the top 20 % (2 rows) takes
    # half the tie block, i.e. half of that positive: 0.5 / 2 = 0.25, in any input order.
    scores = np.array([5, 5, 5, 5, 1, 1, 1, 1, 0, 0], dtype=float)
    outcomes = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    assert gain_at_k(scores, outcomes, (0.2,))[0.2] == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    perm = rng.permutation(10)
    assert gain_at_k(scores[perm], outcomes[perm], (0.2,))[0.2] == pytest.approx(0.25)
    assert gain_at_k(scores, outcomes, (0.4,))[0.4] == pytest.approx(0.5)


def test_constant_scores_equal_random_targeting_exactly() -> None:
    outcomes = np.array([1, 0, 0, 1, 1, 0, 0, 0])
    gains = gain_at_k(np.zeros(8), outcomes, fractions=(0.01, 0.3, 0.5))
    assert gains == pytest.approx({0.01: 0.01, 0.3: 0.3, 0.5: 0.5})


def test_random_scores_gain_close_to_fraction_on_large_data() -> None:
    rng = np.random.default_rng(42)
    outcomes = (rng.random(200_000) < 0.05).astype(float)
    gains = gain_at_k(rng.random(200_000), outcomes)
    for fraction, gain in gains.items():
        assert gain == pytest.approx(fraction, abs=0.01)


def test_informative_scores_beat_random() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(1, 20, size=50_000)
    outcomes = (rng.random(50_000) < p).astype(float)
    assert gain_at_k(p, outcomes, (0.1,))[0.1] > 0.2


def test_weighted_outcomes() -> None:
    # Outcomes as amounts: the top row holds 3 of 4 units.
    assert gain_at_k([2.0, 1.0], [3.0, 1.0], (0.5,))[0.5] == pytest.approx(0.75)


def test_gain_curve_matches_gain_at_k_and_endpoints() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=1_000).round(1)  # plenty of ties
    outcomes = (rng.random(1_000) < 0.3).astype(float)
    x, y = gain_curve(scores, outcomes, n_points=11)
    assert x == pytest.approx(np.linspace(0, 1, 11))
    assert y[0] == 0.0
    assert y[-1] == pytest.approx(1.0)
    assert np.all(np.diff(y) >= 0)
    gains = gain_at_k(scores, outcomes, fractions=(0.1, 0.5))
    assert y[1] == pytest.approx(gains[0.1])
    assert y[5] == pytest.approx(gains[0.5])


def test_no_positive_outcome_gives_nan() -> None:
    gains = gain_at_k([0.3, 0.2], [0, 0], (0.5,))
    assert math.isnan(gains[0.5])
    _, y = gain_curve([0.3, 0.2], [0, 0], n_points=3)
    assert np.isnan(y).all()


def test_roc_auc_equals_sklearn_with_ties() -> None:
    # Importing scikit-learn costs seconds, so its answers are pinned here:
    # sklearn.metrics.roc_auc_score(y, s) == 0.875 (sklearn 1.9). By hand: positives
    # 0.9, 0.3, 0.7, 0.5 against negatives 0.3, 0.1, 0.5, 0.2 win 4 + 2.5 + 4 + 3.5
    # of 16 pairs, ties counting one half.
    s = [0.9, 0.3, 0.3, 0.7, 0.1, 0.5, 0.5, 0.2]
    y = [1, 0, 1, 1, 0, 0, 1, 0]
    assert roc_auc(s, y) == pytest.approx(0.875)


def test_roc_auc_equals_pairwise_definition_on_random_ties() -> None:
    rng = np.random.default_rng(5)
    outcomes = (rng.random(3_000) < 0.2).astype(int)
    scores = (rng.normal(size=3_000) + outcomes).round(1)
    pos, neg = scores[outcomes == 1], scores[outcomes == 0]
    diff = pos[:, None] - neg[None, :]
    expected = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert roc_auc(scores, outcomes) == pytest.approx(expected)
    assert roc_auc(-scores, outcomes) == pytest.approx(1 - expected)


def test_roc_auc_hand_computed() -> None:
    # Positives at 0.8 and 0.4, negatives at 0.6 and 0.4: pairs (0.8>0.6), (0.8>0.4),
    # (0.4<0.6), (0.4=0.4 counts 1/2) -> 2.5 / 4.
    assert roc_auc([0.8, 0.4, 0.6, 0.4], [1, 1, 0, 0]) == pytest.approx(0.625)


def test_roc_auc_single_class_is_nan_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(roc_auc([0.1, 0.9], [0, 0]))
        assert math.isnan(roc_auc([0.1, 0.9], [1, 1]))


def test_calibration_table_uniform_bins() -> None:
    p = np.array([0.05, 0.15, 0.15, 0.55, 1.0])
    y = np.array([0, 0, 1, 1, 1])
    table = calibration_table(p, y, n_bins=4)
    assert table.bin_edges == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert table.count.tolist() == [3, 0, 1, 1]  # p = 1.0 falls in the last bin
    assert table.mean_predicted[0] == pytest.approx(0.35 / 3)
    assert table.observed_rate[0] == pytest.approx(1 / 3)
    assert math.isnan(table.mean_predicted[1]) and math.isnan(table.observed_rate[1])
    assert table.observed_rate[3] == 1.0


def test_calibration_table_quantile_bins_balance_counts() -> None:
    rng = np.random.default_rng(9)
    p = rng.beta(1, 30, size=10_000)  # redemption-like: crowded near zero
    y = (rng.random(10_000) < p).astype(float)
    table = calibration_table(p, y, n_bins=5, strategy="quantile")
    assert table.count.tolist() == [2_000] * 5
    uniform = calibration_table(p, y, n_bins=5)
    assert uniform.count[0] > 9_000


def test_ece_small_when_calibrated_large_when_not() -> None:
    rng = np.random.default_rng(11)
    p = rng.random(100_000)
    y = (rng.random(100_000) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.01
    assert expected_calibration_error(p / 2, y) > 0.2


def test_ece_hand_computed() -> None:
    # Bin [0, 0.5): mean p 0.2, rate 0.5, gap 0.3; bin [0.5, 1]: mean p 0.8, rate 1, gap 0.2.
    value = expected_calibration_error([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1], n_bins=2)
    assert value == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)


def test_brier_and_log_loss_known_values() -> None:
    p = [0.9, 0.2, 0.6, 0.7, 0.1, 0.5, 0.4, 0.3]
    y = [1, 0, 1, 1, 0, 0, 1, 0]
    # sklearn.metrics.log_loss(y, p) == 0.4084347508384273 (sklearn 1.9)
    assert log_loss(p, y) == pytest.approx(0.4084347508384273)
    # squared errors 0.01, 0.04, 0.16, 0.09, 0.01, 0.25, 0.36, 0.09 -> 1.01 / 8
    assert brier_score(p, y) == pytest.approx(1.01 / 8)


def test_log_loss_clips_certain_wrong_predictions() -> None:
    value = log_loss([0.0, 1.0], [1, 1])
    assert math.isfinite(value)
    assert value == pytest.approx(-math.log(1e-15) / 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: gain_at_k([1, 2], [1]), "outcomes has 1 rows"),
        (lambda: gain_at_k([1, np.nan, np.inf], [1, 0, 0]), "scores has 2 non-finite"),
        (lambda: gain_at_k([1, 2], [1, -1]), "1 rows are negative"),
        (lambda: gain_at_k([1, 2], [1, 0], (1.5,)), "fractions must lie in"),
        (lambda: roc_auc([1, 2, 3], [1, 0, 2]), "1 rows hold other values"),
        (lambda: calibration_table([0.5, 1.2, -0.1], [1, 0, 0]), "2 rows are outside"),
        (lambda: calibration_table([0.5], [1], strategy="x"), "strategy"),  # type: ignore[arg-type]
        (lambda: gain_curve([1, 2], [1, 0], n_points=1), "n_points"),
    ],
)
def test_bad_input_is_rejected(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
