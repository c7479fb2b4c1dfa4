"""Reason sentences of single rows, with known text."""

from __future__ import annotations

import polars as pl
import pytest

from recsys.policy.reasons import candidate_reason_text
from recsys.policy.sentences import candidate_sentences, exploration_sentence, fmt_number

ROW = {
    "expected_value": 1.975,
    "incremental_p": 0.25,
    "p_redeem": 0.4,
    "p_purchase": 0.2,
    "redemption_cost": 5.0,
    "min_spend": 40.0,
}


@pytest.mark.parametrize(
    ("value", "decimals", "signed", "text"),
    [
        (1.975, 2, True, "+1.98"),
        (-0.004, 2, False, "-0.0"),
        (30.0, 2, False, "30.0"),
        (0.6, 0, False, "1"),
    ],
)
def test_numbers_print_as_the_frame_sentences_do(
    value: float, decimals: int, signed: bool, text: str
) -> None:
    assert fmt_number(value, decimals, signed=signed) == text


def test_an_uplift_offer_names_its_profit_and_lift() -> None:
    row = {**ROW, "reason_codes": ["POSITIVE_UPLIFT"]}
    assert candidate_sentences(**row, assumed_share=0.25) == [
        "expected +1.98 profit: the offer lifts purchase chance by 25.0 pts"
    ]


def test_a_response_only_row_with_an_unchecked_minimum_spend_says_both() -> None:
    row = {
        **ROW,
        "expected_value": -0.5,
        "reason_codes": ["NEGATIVE_VALUE", "RESPONSE_ONLY", "MIN_SPEND_UNVERIFIED"],
    }
    assert candidate_sentences(**row, assumed_share=0.25) == [
        "expected -0.5 profit: 40% redeem at a cost of 5.0 each, more than the margin on the "
        "25.0 pts of extra purchases",
        "uplift could not be learned from the data: ranked by response (40% redeem, assuming "
        "25% of redemptions are extra sales), expected -0.5 profit",
        "cart value unknown: the offer needs a minimum spend of 40.0",
    ]
    assert exploration_sentence(0.0125) == (
        "chosen at random to learn buyers' responses (probability 0.0125)"
    )


@pytest.mark.parametrize(
    ("incremental_p", "redemption_cost", "text"),
    [
        (
            -0.007,
            0.0,
            "expected -0.08 profit: the offer is expected to lower purchase chance by 0.7 pts",
        ),
        (
            0.01,
            5.0,
            "expected -0.08 profit: 40% redeem at a cost of 5.0 each, more than the margin on "
            "the 1.0 pts of extra purchases",
        ),
        (
            0.001,
            0.0,
            "expected -0.08 profit: the margin on the 0.1 pts of extra purchases does not cover "
            "the cost of sending it",
        ),
    ],
)
def test_a_loss_is_told_by_what_weighs_most_and_both_paths_say_it_alike(
    incremental_p: float, redemption_cost: float, text: str
) -> None:
    row = {
        **ROW,
        "expected_value": -0.08,
        "incremental_p": incremental_p,
        "redemption_cost": redemption_cost,
        "reason_codes": ["NEGATIVE_VALUE"],
    }
    assert candidate_sentences(**row, assumed_share=0.25) == [text]
    frame = pl.DataFrame([row], schema_overrides={"reason_codes": pl.List(pl.String)})
    assert candidate_reason_text(frame, assumed_share=0.25)["reason_text"][0] == text
