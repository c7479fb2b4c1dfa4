"""The quality benchmark on a tiny marketplace, and its medians on hand-made figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.quality import (
    QualityFigures,
    SeedFigures,
    _medians,
    format_quality_markdown,
    measure_quality,
)


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> QualityFigures:
    return measure_quality(600, [1], tmp_path_factory.mktemp("quality"))


@pytest.mark.slow
def test_oracle_bounds_every_policy_and_nothing_earns_nothing(figures: QualityFigures) -> None:
    values = figures.per_seed[0].policy_value
    assert values["nothing"] == 0.0
    assert values["oracle"] > 0
    assert all(v <= values["oracle"] + 1e-9 for v in values.values())
    expected = {"oracle", "learned", "random_same_volume", "response_same_volume"}
    assert expected <= set(values)
    assert any(name.startswith("blanket_") for name in values)


@pytest.mark.slow
def test_shares_are_values_over_the_oracle(figures: QualityFigures) -> None:
    seed = figures.per_seed[0]
    oracle = seed.policy_value["oracle"]
    assert seed.share_of_oracle.keys() == seed.policy_value.keys()
    for name, value in seed.policy_value.items():
        assert seed.share_of_oracle[name] == pytest.approx(value / oracle)
    assert seed.share_of_oracle["oracle"] == pytest.approx(1.0)


@pytest.mark.slow
def test_one_seed_medians_are_that_seeds_figures(figures: QualityFigures) -> None:
    seed = figures.per_seed[0]
    assert figures.median == seed.sections()
    assert figures.spread("policy_value", "learned") == (seed.policy_value["learned"],) * 2


@pytest.mark.slow
def test_redemption_rates_describe_the_issued_offers(figures: QualityFigures) -> None:
    seed = figures.per_seed[0]
    rates, issued = seed.redemption, seed.issued
    assert all(0.0 <= r <= 1.0 for r in rates.values())
    assert {f"blanket_{t}" for t in ("amount_off", "reminder")} <= set(rates)
    assert rates["blanket_reminder"] == 0.0  # a reminder gives nothing to redeem
    assert issued["offers"] > 0
    assert rates["learned"] == pytest.approx(issued["expected_redemptions"] / issued["offers"])
    # Reminders only dilute (the learned policy may send none but reminders at all).
    assert rates.get("learned_discounts", rates["learned"]) >= rates["learned"]
    tool_shares = [v for k, v in issued.items() if k.startswith("tool_")]
    assert sum(tool_shares) == pytest.approx(1.0)
    assert issued["offers"] <= issued["decision_units"]  # at most one offer per unit


@pytest.mark.slow
def test_ope_and_items_and_seconds_come_from_the_evaluation(figures: QualityFigures) -> None:
    seed = figures.per_seed[0]
    for name in ("ips", "snips", "dr"):
        assert seed.ope[f"{name}_relative_error"] >= 0
        assert seed.ope[f"{name}_std_error"] > 0
    assert {"uplift_model", "response_only", "random"} == set(seed.qini)
    assert {"recall_mf", "recall_popularity", "recall_personal_frequency"} <= set(seed.item_ranking)
    assert {"synthesize", "fit_all", "item_ranking", "evaluate_total"} <= set(seed.seconds)
    assert {"cv_blanket", "cv_kind_effects"} <= set(seed.learning)


@pytest.mark.slow
def test_markdown_and_json_carry_every_policy(figures: QualityFigures) -> None:
    text = format_quality_markdown(figures)
    for name in figures.per_seed[0].policy_value:
        assert f"| {name} |" in text
    assert (
        "Reproduce: `python -m benchmarks.quality --buyers 600 --seeds 1 --effects stage`" in text
    )
    assert "### Policy learning" in text and figures.shipped[0] in text
    plain = json.loads(json.dumps(figures.as_dict()))
    assert plain["seeds"] == [1]
    assert plain["median"]["policy_value"]["oracle"] == figures.median["policy_value"]["oracle"]


def _seed(seed: int, learned: float, rate: float | None = None) -> SeedFigures:
    """Hand-made figures: `rate` None leaves the learned redemption rate out."""
    empty: dict[str, float] = {}
    return SeedFigures(
        seed=seed,
        policy_value={"oracle": 10.0, "learned": learned},
        share_of_oracle={"oracle": 1.0, "learned": learned / 10},
        redemption={} if rate is None else {"learned": rate},
        issued=empty,
        qini=empty,
        ope=empty,
        item_ranking=empty,
        learning=empty,
        calibration=empty,
        seconds=empty,
    )


def test_medians_and_ranges_across_seeds() -> None:
    seeds = [_seed(1, 1.0, rate=0.2), _seed(2, 5.0), _seed(3, 2.0, rate=0.4)]
    figures = QualityFigures(
        buyers=10, per_seed=seeds, median=_medians(seeds), shipped=["blanket"] * 3
    )
    assert figures.median["policy_value"] == {"oracle": 10.0, "learned": 2.0}  # not the mean
    assert figures.spread("policy_value", "learned") == (1.0, 5.0)
    # A figure missing in a seed is the median of the seeds that have it.
    assert figures.median["redemption"] == {"learned": pytest.approx(0.3)}
    assert figures.spread("issued", "offers") is None
    text = format_quality_markdown(figures)
    assert "| learned | 2.0 (1.0 to 5.0) | 20.0% (10.0% to 50.0%) |" in text
    assert "--buyers 10 --seeds 1 2 3" in text


def test_no_seeds_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one seed"):
        measure_quality(600, [], tmp_path)
