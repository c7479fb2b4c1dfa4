"""The issue's acceptance report on a fixed-seed 20,000-buyer synthetic marketplace.

Slow (several minutes: it fits the whole ranker twice, policy learning included), so it
runs in `make test-reliability`; `make bench` measures the same figures on more seeds and
worlds. The assertions are the properties the engine must keep.
"""

from __future__ import annotations

import pytest

from recsys.data.synthetic import SyntheticConfig, generate
from recsys.evaluation.report import SyntheticReport, evaluate_synthetic

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> SyntheticReport:
    out = tmp_path_factory.mktemp("acceptance") / "d"
    generate(SyntheticConfig(buyers=20_000, seed=1), out)
    result = evaluate_synthetic(out, holdout_waves=2)
    print("\n" + result.format())
    return result


def test_learned_policy_earns_more_than_doing_nothing_or_at_random(
    report: SyntheticReport,
) -> None:
    values = report.policy_values
    assert values["learned"] > values["nothing"] == 0.0
    assert values["learned"] > values["random_same_volume"]
    assert values["learned"] <= values["oracle"]


def test_learned_policy_never_loses_to_a_blanket_campaign(report: SyntheticReport) -> None:
    blankets = {k: v for k, v in report.policy_values.items() if k.startswith("blanket_")}
    assert len(blankets) == 5
    assert min(blankets.values()) < 0  # some coupon-to-everyone campaigns lose money
    assert report.policy_values["learned"] >= max(blankets.values()) - 1e-6


def test_no_discount_goes_to_buyers_who_buy_anyway(report: SyntheticReport) -> None:
    """The truth gives loyal buyers no effect: a discount to them is pure cost."""
    assert report.issued is not None
    loyal = report.issued.filter(report.issued["stage"] == "loyal")
    money_off = loyal.filter(loyal["tool"].is_in(["percent_off", "amount_off"]))
    assert money_off.height <= 0.05 * max(loyal.height, 1)


def test_doubly_robust_estimate_is_within_ten_percent_of_the_truth(
    report: SyntheticReport,
) -> None:
    assert report.ope is not None
    error = report.ope.relative_error(report.ope.dr)
    assert error is not None
    assert error < 0.10


def test_p_redeem_targets_redemptions(report: SyntheticReport) -> None:
    assert report.targeting["roc_auc_p_redeem"] > 0.75
    assert report.targeting["gain_at_20pct"] > 0.4  # 20 % of offers catch > 40 % of uses


def test_matrix_factorization_beats_popularity(report: SyntheticReport) -> None:
    assert report.items is not None
    assert report.items.recall["mf"] > report.items.recall["popularity"]
