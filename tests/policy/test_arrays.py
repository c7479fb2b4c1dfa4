"""The policy's array rules on hand-made options with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.policy import arrays
from recsys.policy.config import PolicyConfig

NAN = float("nan")


def _value(**over: object) -> arrays.Valued:
    cols: dict[str, object] = {
        "tool": np.array(["percent_off", "free_shipping", "reminder", "amount_off"]),
        "p_redeem": np.array([0.5, 0.2, 0.9, 0.1]),
        "uplift": np.array([0.1, NAN, 0.0, 0.001]),
        "p_purchase": np.array([0.2, 0.3, 0.9, 0.8]),
        "order_value": np.array([100.0, 50.0, 40.0, 60.0]),
        "margin": np.array([0.5, NAN, 0.5, 0.5]),
        "offer_value": np.array([0.1, NAN, NAN, 10.0]),
        "offer_cost": np.full(4, NAN),
        "score": np.array([NAN, NAN, NAN, 7.0]),
    }
    cols.update(over)
    return arrays.value_options(config=PolicyConfig(send_cost=0.5), **cols)  # type: ignore[arg-type]


def test_value_is_margin_on_extra_purchases_less_costs() -> None:
    v = _value()
    # 0.5*0.1*100 - 0.5*10 - 0.5 = -0.5; response basis: 0.3*(0.25*0.2)*50 - 0.2*5 - 0.5
    assert v.expected_value.tolist() == pytest.approx([-0.5, 0.75 - 1.5, -0.5, 0.03 - 1 - 0.5])
    assert v.redemption_cost.tolist() == [10.0, 5.0, 0.0, 10.0]
    assert v.uplift_basis.tolist() == [True, False, True, True]
    assert v.score.tolist()[:3] == pytest.approx(v.expected_value.tolist()[:3])
    assert v.score[3] == 7.0  # the scorer's own score wins
    assert v.spend.tolist() == pytest.approx([5.5, 1.5, 0.5, 1.5])


def test_cases_name_the_main_reason() -> None:
    v = _value(uplift=np.array([0.2, NAN, 0.0, 0.001]), offer_cost=np.array([NAN, NAN, NAN, 2.0]))
    assert [arrays.reason_codes(int(c), False) for c in v.case] == [
        ["POSITIVE_UPLIFT"],
        ["NEGATIVE_VALUE", "RESPONSE_ONLY"],
        ["NEGATIVE_VALUE"],  # would buy anyway, but the reminder costs nothing
        ["WOULD_BUY_ANYWAY"],
    ]
    assert arrays.reason_codes(arrays.CASE_RESPONSE_ONLY, True) == [
        "RESPONSE_ONLY",
        "MIN_SPEND_UNVERIFIED",
    ]


def test_eligibility_reports_the_first_rule_broken() -> None:
    n = 6
    verdict, unverified = arrays.eligibility(
        start_us=np.array([0, 20, 0, 0, 0, 0]),
        end_us=np.array([arrays.NO_TIME_END, 30, 5, 100, 100, 100]),
        now_us=10,
        seller=np.array([1, 1, 1, 2, -1, 1]),
        scope=np.full(n, 1),
        min_spend=np.array([NAN, 0.0, 0.0, 0.0, 50.0, 50.0]),
        cart=np.array([NAN, NAN, NAN, NAN, 40.0, NAN]),
        n_buyer=np.array([0, 0, 0, 0, 0, 2]),
        n_tool=np.zeros(n, dtype=np.int64),
        max_per_buyer=3,
        max_per_tool=None,
    )
    assert verdict.tolist() == [
        arrays.ELIGIBLE,
        arrays.OUTSIDE_VALIDITY,  # not started
        arrays.OUTSIDE_VALIDITY,  # ended (end is exclusive)
        arrays.OUT_OF_SELLER_SCOPE,
        arrays.BELOW_MIN_SPEND,  # platform-wide passes the scope, not the cart
        arrays.ELIGIBLE,
    ]
    assert unverified.tolist() == [False, False, False, False, False, True]
    capped, _ = arrays.eligibility(
        start_us=np.zeros(2, dtype=np.int64),
        end_us=np.full(2, 100),
        now_us=10,
        seller=np.zeros(2, dtype=np.int64),
        scope=np.full(2, -1),
        min_spend=np.full(2, NAN),
        cart=np.full(2, NAN),
        n_buyer=np.array([3, 1]),
        n_tool=np.array([0, 2]),
        max_per_buyer=3,
        max_per_tool=2,
    )
    assert capped.tolist() == [arrays.CAPPED, arrays.CAPPED]


def test_a_unit_without_eligible_options_is_explained_by_its_furthest_check() -> None:
    unit = np.array([0, 0, 1, 1, 1, 2])
    verdict = np.array(
        [
            arrays.OUTSIDE_VALIDITY,
            arrays.ELIGIBLE,
            arrays.OUTSIDE_VALIDITY,
            arrays.CAPPED,
            arrays.CAPPED,
            arrays.OUT_OF_SELLER_SCOPE,
        ],
        dtype=np.int8,
    )
    offer_order = np.array([0, 1, 0, 5, 3, 9])
    assert arrays.first_rejection(unit, verdict, offer_order).tolist() == [4, 5]


def test_rank_order_is_best_first_then_offer_order() -> None:
    unit = np.array([1, 0, 0, 0, 1])
    score = np.array([1.0, 2.0, 3.0, 2.0, 5.0])
    order = arrays.rank_order(unit, score, np.array([0, 7, 1, 2, 3]))
    assert order.tolist() == [2, 3, 1, 4, 0]
    assert arrays.run_starts(unit[order]).tolist() == [0, 3]


def test_greedy_takes_the_best_positive_option_or_nothing() -> None:
    starts = np.array([0, 2])
    choice = arrays.choose(starts, np.array([2.0, 1.0, -0.5]), PolicyConfig())
    assert choice.row.tolist() == [0, -1]
    assert choice.propensity.tolist() == [1.0, 1.0]
    assert choice.explored.tolist() == [False, False]
    assert choice.option_p.tolist() == [1.0, 0.0, 0.0]


def test_epsilon_greedy_probabilities_are_exact_and_followed() -> None:
    config = PolicyConfig(exploration="epsilon", epsilon=0.3)
    starts = np.arange(0, 3000, 3)  # 1,000 units of 3 options: 4 with nothing
    score = np.tile([2.0, 1.0, -1.0], 1000)
    choice = arrays.choose(starts, score, config, np.random.default_rng(0))
    assert choice.option_p[:3].tolist() == pytest.approx([0.7 + 0.3 / 4, 0.3 / 4, 0.3 / 4])
    assert choice.nothing_p[0] == pytest.approx(0.3 / 4)
    first = (choice.row == starts).mean()
    assert abs(first - 0.775) < 4 * np.sqrt(0.775 * 0.225 / 1000)
    assert choice.explored.tolist() == (choice.row != starts).tolist()
    picked = np.where(choice.row >= 0, choice.option_p[np.maximum(choice.row, 0)], 0.3 / 4)
    assert choice.propensity.tolist() == pytest.approx(picked.tolist())


def test_softmax_weighs_nothing_at_zero() -> None:
    config = PolicyConfig(exploration="softmax", temperature=0.5)
    choice = arrays.choose(np.array([0]), np.array([1.0, -1.0]), config, np.random.default_rng(1))
    weights = np.exp(np.array([1.0, -1.0, 0.0]) / 0.5)
    assert choice.option_p.tolist() == pytest.approx((weights[:2] / weights.sum()).tolist())
    assert choice.nothing_p[0] == pytest.approx(weights[2] / weights.sum())


def test_the_same_generator_state_gives_the_same_draws() -> None:
    config = PolicyConfig(exploration="epsilon", epsilon=0.5)
    starts, score = np.arange(0, 200, 2), np.tile([1.0, 0.5], 100)
    a = arrays.choose(starts, score, config, np.random.default_rng(5))
    b = arrays.choose(starts, score, config, np.random.default_rng(5))
    assert a.row.tolist() == b.row.tolist()


def test_outcomes_explain_a_nothing_by_what_beat_the_best_offer() -> None:
    def case(**kw: object) -> str:
        args = {"offered": False, "explored": False, "best_score": -1.0, "best_price": 0.0}
        return arrays.outcome(**{**args, "best_case": arrays.CASE_NEGATIVE_VALUE, **kw})  # type: ignore[arg-type]

    assert case(offered=True) == arrays.OUTCOME_OFFER
    assert case(offered=True, explored=True) == arrays.OUTCOME_EXPLORED_OFFER
    assert case(explored=True) == arrays.OUTCOME_EXPLORED_NOTHING
    assert case(best_score=2.0, best_price=0.1) == arrays.OUTCOME_BUDGET
    assert case(best_score=2.0) == arrays.OUTCOME_CAP
    assert case(best_case=arrays.CASE_WOULD_BUY_ANYWAY) == arrays.OUTCOME_ANYWAY
    assert case() == arrays.OUTCOME_NOTHING


def test_a_draw_never_picks_an_option_of_probability_zero() -> None:
    owner = np.array([0, 0, 1, 1, 1, 2])
    probability = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    for seed in range(20):
        assert arrays.draw(owner, probability, np.random.default_rng(seed)).tolist() == [0, 4, 5]
