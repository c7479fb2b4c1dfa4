"""Exploration: exact propensities that sum to 1 and match empirical choice frequencies."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from recsys.policy import epsilon_greedy, softmax


def options(n_buyers: int = 1) -> pl.DataFrame:
    """Each buyer: offers a (value 2), b (value -1), c (value 0.5); nothing is added (0)."""
    return pl.DataFrame(
        {
            "buyer_id": [f"b{i}" for i in range(n_buyers) for _ in range(3)],
            "offer_id": ["a", "b", "c"] * n_buyers,
            "expected_value": [2.0, -1.0, 0.5] * n_buyers,
        }
    )


def table_of(result_probs: pl.DataFrame | None, buyer: str = "b0") -> dict[str | None, float]:
    assert result_probs is not None
    rows = result_probs.filter(pl.col("buyer_id") == buyer).select("offer_id", "probability")
    return dict(rows.iter_rows())


def test_epsilon_greedy_probabilities_are_exact() -> None:
    result = epsilon_greedy(options(), 0.2, np.random.default_rng(0), return_table=True)
    # 4 options (a, b, c, nothing): 0.2 / 4 each, plus 0.8 on the best (a).
    assert table_of(result.probabilities) == pytest.approx(
        {"a": 0.85, "b": 0.05, "c": 0.05, None: 0.05}
    )


def test_softmax_probabilities_are_exact() -> None:
    result = softmax(options(), 0.5, np.random.default_rng(0), return_table=True)
    weights = {"a": math.exp(2 / 0.5), "b": math.exp(-1 / 0.5), "c": math.exp(0.5 / 0.5), None: 1.0}
    total = sum(weights.values())
    assert table_of(result.probabilities) == pytest.approx(
        {k: w / total for k, w in weights.items()}
    )


@pytest.mark.parametrize("scheme", ["epsilon", "softmax"])
def test_probabilities_sum_to_one_and_match_the_chosen_action(scheme: str) -> None:
    rng = np.random.default_rng(3)
    n = 500
    frame = pl.DataFrame(
        {
            "buyer_id": [f"b{int(i)}" for i in rng.integers(0, n // 4, n)],
            "offer_id": [f"o{i}" for i in range(n)],
            "expected_value": rng.normal(0, 2, n),
        }
    )
    if scheme == "epsilon":
        result = epsilon_greedy(frame, 0.3, rng, return_table=True)
    else:
        result = softmax(frame, 0.7, rng, return_table=True)
    probs = result.probabilities
    assert probs is not None
    sums = probs.group_by("buyer_id").agg(pl.col("probability").sum())["probability"]
    assert sums.to_numpy() == pytest.approx(np.ones(sums.len()), abs=1e-12)
    # Every buyer has exactly one "nothing" option and exactly one chosen action.
    assert probs.filter(pl.col("offer_id").is_null())["buyer_id"].is_unique().all()
    assert result.chosen.height == frame["buyer_id"].n_unique()
    joined = result.chosen.join(
        probs, on=["buyer_id", "offer_id"], how="left", nulls_equal=True, suffix="_table"
    )
    assert joined["probability"].to_list() == joined["probability_table"].to_list()


@pytest.mark.parametrize("scheme", ["epsilon", "softmax"])
def test_empirical_frequencies_match_propensities(scheme: str) -> None:
    # 40 000 identical buyers in one vectorized draw.
    n = 40_000
    frame = options(n)
    rng = np.random.default_rng(11)
    if scheme == "epsilon":
        result = epsilon_greedy(frame, 0.4, rng, return_table=True)
    else:
        result = softmax(frame, 1.0, rng, return_table=True)
    expected = table_of(result.probabilities)
    counts = result.chosen["offer_id"].value_counts()
    observed = {k: c / n for k, c in counts.iter_rows()}
    for option, p in expected.items():
        se = math.sqrt(p * (1 - p) / n)
        assert abs(observed.get(option, 0.0) - p) < 5 * se, (option, p, observed)
    # The returned propensity is the probability of the action actually taken.
    chosen_p = result.chosen.select("offer_id", "probability").unique()
    assert {k: v for k, v in chosen_p.iter_rows()} == pytest.approx(
        {k: expected[k] for k in chosen_p["offer_id"]}
    )


def test_exploit_flag_overrides_the_argmax_and_defaults_to_nothing() -> None:
    frame = pl.concat(
        [
            options(1).with_columns((pl.col("offer_id") == "c").alias("pick")),
            options(2).filter(pl.col("buyer_id") == "b1").with_columns(pl.lit(False).alias("pick")),
        ]
    )
    result = epsilon_greedy(frame, 0.2, np.random.default_rng(0), exploit="pick", return_table=True)
    assert table_of(result.probabilities, "b0")["c"] == pytest.approx(0.85)
    assert table_of(result.probabilities, "b1")[None] == pytest.approx(0.85)


def test_same_seed_same_choices_whatever_the_row_order() -> None:
    frame = options(200).with_columns(
        pl.Series("expected_value", np.random.default_rng(1).normal(size=600))
    )
    first = softmax(frame, 1.0, np.random.default_rng(5)).chosen.sort("buyer_id")
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=2)
    second = softmax(shuffled, 1.0, np.random.default_rng(5)).chosen.sort("buyer_id")
    assert first.equals(second)
    assert first["explored"].any()


def test_extreme_epsilons() -> None:
    greedy = epsilon_greedy(options(50), 0.0, np.random.default_rng(0)).chosen
    assert greedy["offer_id"].to_list() == ["a"] * 50
    assert greedy["probability"].to_list() == [1.0] * 50
    assert not greedy["explored"].any()
    uniform = epsilon_greedy(options(1), 1.0, np.random.default_rng(0), return_table=True)
    assert set(table_of(uniform.probabilities).values()) == {0.25}
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_greedy(options(1), 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="temperature"):
        softmax(options(1), 0.0, np.random.default_rng(0))
