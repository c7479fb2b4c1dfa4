"""Known answers for the learned policy's choice on a truth table."""

from __future__ import annotations

import polars as pl
import pytest

from recsys.evaluation.policy_eval import learned_offers, policy_values_on_truth

# Three decision units (buyer, seller):
#   b1 @ s1: o1 scores 3.0, o2 1.0            -> issues o1 (true profit 2.0)
#   b2 @ s1: o1 scores -0.5, o2 -0.1          -> nothing (no positive value)
#   b3 @ s2: o3 scores 0.7                    -> issues o3 (true profit 0.4)
# b4's pair is scored but not in the truth table: not an option, never issued.
TRUTH = pl.DataFrame(
    {
        "buyer_id": ["b1", "b1", "b2", "b2", "b3"],
        "offer_id": ["o1", "o2", "o1", "o2", "o3"],
        "seller_id": ["s1", "s1", "s1", "s1", "s2"],
        "tool": ["amount_off", "reminder", "amount_off", "reminder", "percent_off"],
        "p_redeem": [0.3, 0.0, 0.1, 0.0, 0.2],
        "incremental_profit": [2.0, 1.0, -1.0, 0.5, 0.4],
    }
)
SCORED = pl.DataFrame(
    {
        "buyer_id": ["b1", "b1", "b2", "b2", "b3", "b4"],
        "offer_id": ["o1", "o2", "o1", "o2", "o3", "o1"],
        "p_redeem": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        "expected_value": [3.0, 1.0, -0.5, -0.1, 0.7, 5.0],
    }
)


def test_learned_offers_are_each_units_best_positive_option() -> None:
    issued = learned_offers(TRUTH, SCORED).sort("buyer_id")
    assert issued.select("buyer_id", "offer_id").rows() == [("b1", "o1"), ("b3", "o3")]
    # The truth's columns keep their names; the model's p_redeem sits beside them.
    assert issued["p_redeem"].to_list() == [0.3, 0.2]
    assert issued["model_p_redeem"].to_list() == [0.9, 0.5]
    assert issued["tool"].to_list() == ["amount_off", "percent_off"]


def test_learned_offers_are_the_rows_the_learned_value_sums() -> None:
    issued = learned_offers(TRUTH, SCORED)
    values = policy_values_on_truth(TRUTH, SCORED)
    assert values["learned"] == pytest.approx(2.4)
    assert values["learned"] == pytest.approx(issued["incremental_profit"].sum())
    assert values["learned_issued"] == issued.height == 2


def test_response_only_baseline_ranks_by_the_models_p_redeem_not_the_truths() -> None:
    # Two offers are issued. By the model's P(redeem) the best units are b1 (o1, 0.9) and
    # b2 (o1, 0.7): 2.0 - 1.0 = 1.0. The truth's P(redeem) would pick b1 and b3 (2.4), a
    # baseline that has seen the answers.
    values = policy_values_on_truth(TRUTH, SCORED)
    assert values["response_same_volume"] == pytest.approx(1.0)
