"""The small-batch path words reasons exactly as the frame expressions do."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.policy.reasons import (
    Reason,
    candidate_reason_text,
    exploration_text,
    fmt,
)
from recsys.policy.small import candidate_text, exploration_sentence, fmt_number

CODE_SETS = [
    [Reason.POSITIVE_UPLIFT],
    [Reason.RESPONSE_ONLY],
    [Reason.WOULD_BUY_ANYWAY],
    [Reason.NEGATIVE_VALUE],
    [Reason.NEGATIVE_VALUE, Reason.RESPONSE_ONLY],
    [Reason.POSITIVE_UPLIFT, Reason.MIN_SPEND_UNVERIFIED],
    [Reason.NEGATIVE_VALUE, Reason.RESPONSE_ONLY, Reason.MIN_SPEND_UNVERIFIED],
]


def _numbers(rng: np.random.Generator, n: int) -> list[float]:
    """Floats that stress rounding: ties on the printed digit, tiny negatives, big values."""
    return [
        *rng.normal(0, 5, n).tolist(),
        *np.round(rng.uniform(-100, 100, n), 3).tolist(),
        *(-rng.lognormal(-6, 3, n)).tolist(),
        2.675,
        1.005,
        -0.004,
        0.0,
        -0.0,
        0.5,
        2.5,
    ]


@pytest.mark.parametrize("decimals", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("signed", [False, True])
def test_numbers_print_as_the_frame_expression_prints_them(decimals: int, signed: bool) -> None:
    values = _numbers(np.random.default_rng(decimals), 3000)
    frame = pl.DataFrame({"x": values})
    expected = frame.select(fmt(pl.col("x"), decimals, signed=signed).alias("t"))["t"]
    assert [fmt_number(v, decimals, signed=signed) for v in values] == expected.to_list()


@pytest.mark.parametrize("share", [0.25, 0.5, 1 / 3])
def test_candidate_sentences_match_the_frame_sentences(share: float) -> None:
    rng = np.random.default_rng(7)
    n = 700
    rows = [
        {
            "reason_codes": [c.value for c in CODE_SETS[i % len(CODE_SETS)]],
            "expected_value": float(rng.normal(0, 3)),
            "incremental_p": float(rng.normal(0, 0.02)),
            "p_purchase": float(rng.uniform()),
            "p_redeem": float(rng.uniform(0, 0.2)),
            "redemption_cost": float(np.round(rng.uniform(0, 30), 3)),
            "min_spend": float(np.round(rng.uniform(0, 100), 2)),
        }
        for i in range(n)
    ]
    frame = pl.DataFrame(
        rows,
        schema={
            "reason_codes": pl.List(pl.String),
            **{name: pl.Float64 for name in rows[0] if name != "reason_codes"},
        },
    )
    expected = candidate_reason_text(frame, assumed_share=share)["reason_text"].to_list()
    assert [candidate_text(row, share) for row in rows] == expected


def test_exploration_sentence_matches_the_frame_sentence() -> None:
    probabilities = [*np.random.default_rng(3).uniform(0, 1, 500).tolist(), 5e-05, 1.0]
    frame = pl.DataFrame({"propensity": probabilities})
    expected = frame.select(exploration_text().alias("t"))["t"].to_list()
    assert [exploration_sentence(p) for p in probabilities] == expected
