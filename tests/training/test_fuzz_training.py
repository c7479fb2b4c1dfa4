"""Training runs on any contract-valid shape of data, or stops saying why (issue 17).

`test_training_never_crashes_on_a_valid_dataset` draws 200 small datasets of random shape
(`tests.data.datasets`: one seller or many, one item or thousands, no exposures, only
control rows, one wave, no redemptions, purchases without an item, every event on one
day, ...) and runs the training pipeline's stages in process, as `recsys train` runs them
on Ray (`training.pipeline`: the held-out fit and its evaluation where the data has
randomized waves, the full fit, item ranking). Each dataset must train — its fit report
naming every part it skipped and why — or stop with a contract-style error
(`ContractError`, `CannotFitError`: what is wrong and how to fix it). Any other exception
fails the test with the dataset that caused it.

The tests at the end reproduce, each on a minimal dataset, a failure the fuzz test
once found (in the response model, the ranker and the held-out evaluation).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings

from recsys.data import ContractError, load_dataset
from recsys.data.dataset import Dataset
from recsys.data.schema import TABLES_BY_NAME
from recsys.evaluation.holdout import HoldoutConfig
from recsys.models.base import CannotFitError
from recsys.models.ranker import PromoRanker, RankerConfig
from tests.data.datasets import Drawn, datasets
from training.pipeline import (
    evaluate_stage,
    items_stage,
    journey_stage,
    mf_stage,
    response_stage,
    split_stage,
)

FAST = RankerConfig.from_dict(
    {
        "mf": {"factors": 4, "iterations": 2},
        "journey": {
            "training_snapshots": 4,
            "model": {"max_iter": 10, "calibration_folds": 2, "min_samples_leaf": 5},
        },
        # Thresholds low enough that tiny data reaches the response model's and policy
        # learning's fitting code.
        "response": {"max_iter": 10, "min_response_rows": 5, "min_samples_leaf": 5},
        "learning": {"min_decisions": 10, "outcome": {"max_iter": 10, "min_samples_leaf": 5}},
    }
)
HOLDOUT = HoldoutConfig()
EXPLAINED = (ContractError, CannotFitError)
"""Errors that say what is wrong and how to fix it: a run may stop with one of these."""


def train_in_process(dataset: Dataset) -> PromoRanker:
    """The stages of `recsys train` without Ray: held-out fit and evaluation (when the data
    has randomized waves), the full fit, item ranking. Returns the full fit."""
    split = split_stage(dataset, HOLDOUT.waves)
    if split is not None:
        held_out = response_stage(
            FAST,
            dataset,
            split,
            mf_stage(FAST, dataset, split),
            journey_stage(FAST, dataset, split),
        )
        evaluate_stage(held_out, dataset, split, HOLDOUT)
        event("held-out evaluation ran")
    full = response_stage(
        FAST, dataset, None, mf_stage(FAST, dataset, None), journey_stage(FAST, dataset, None)
    )
    items_stage(dataset, FAST, HOLDOUT)
    return full


def _check_report(ranker: PromoRanker, dataset: Dataset) -> None:
    """The fit report says what was skipped, and why, for the parts the data lacks."""
    report = ranker.report_
    for line in report.skipped:
        what, _, why = line.partition(": ")
        assert what and len(why) > 10, f"a skipped part without its reason: {line!r}"
    if dataset.offers is None or dataset.exposures is None:
        assert any(line.startswith("response and policy learning") for line in report.skipped)
    if ranker.mf_.skipped_:
        assert any(line.startswith("matrix factorization") for line in report.skipped)
    if ranker.journey_.skipped_:
        assert any("P(purchase)" in line for line in report.skipped)
    for line in report.skipped:
        event(f"skipped: {line.split(':')[0]}")


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same 200 datasets every run: make test is deterministic
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(datasets(max_buyers=12))
def test_training_never_crashes_on_a_valid_dataset(drawn: Drawn) -> None:
    SEEN.update(shapes_of(drawn))
    with tempfile.TemporaryDirectory() as scratch:
        dataset = load_dataset(drawn.write(Path(scratch) / "dataset"))
        try:
            ranker = train_in_process(dataset)
        except EXPLAINED as exc:
            event(f"stopped with {type(exc).__name__}")
            return
        _check_report(ranker, dataset)


@pytest.mark.reliability
@settings(
    max_examples=3_000,
    deadline=None,  # random, not derandomized: new datasets each run (make test-reliability)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(datasets(max_buyers=20, max_events=80))
def test_training_never_crashes_on_many_more_datasets(drawn: Drawn) -> None:
    test_training_never_crashes_on_a_valid_dataset.hypothesis.inner_test(drawn)  # type: ignore[attr-defined]


SHAPES = {
    "one seller",
    "many sellers",
    "one item",
    "thousands of items",
    "no exposures",
    "only control rows",
    "one wave",
    "no redemptions",
    "purchase without item",
    "every event on one day",
    "a buyer with a single event",
    "scoped offers whose items nobody bought",
    "buyers known by attributes alone",
}
"""The shapes issue 17 names (and one more), which the fuzzed datasets must include."""
SEEN: set[str] = set()
"""The shapes of the datasets the fuzz test trained on (filled as it runs)."""


def shapes_of(drawn: Drawn) -> set[str]:
    """Which of `SHAPES` a drawn dataset has."""
    t = drawn.tables
    items, events = t["items"], t["events"]
    assert items is not None and events is not None
    found = {"one seller" if items["seller_id"].n_unique() == 1 else "many sellers"}
    if items.height == 1:
        found.add("one item")
    if items.height >= 1000:
        found.add("thousands of items")
    exposures = t["exposures"]
    if exposures is None:
        found.add("no exposures")
    elif exposures.height:
        if exposures["offer_id"].null_count() == exposures.height:
            found.add("only control rows")
        if exposures["ts"].dt.truncate("1d").n_unique() == 1:
            found.add("one wave")
        if t["redemptions"] is None:
            found.add("no redemptions")
    purchases = events.filter(pl.col("event_type") == "purchase")
    if purchases["item_id"].null_count():
        found.add("purchase without item")
    if events["ts"].dt.truncate("1d").n_unique() == 1:
        found.add("every event on one day")
    if (events.group_by("buyer_id").len()["len"] == 1).any():
        found.add("a buyer with a single event")
    scope = t["offer_items"]
    bought = set(purchases["item_id"].drop_nulls())
    if scope is not None and scope.height and not set(scope["item_id"]) & bought:
        found.add("scoped offers whose items nobody bought")
    buyers = t["buyers"]
    if buyers is not None and set(buyers["buyer_id"]) - set(events["buyer_id"]):
        found.add("buyers known by attributes alone")
    return found


def test_the_fuzzed_datasets_had_every_shape_the_issue_names() -> None:
    """The fuzz test is only as good as its data: the datasets it trained on (above, in
    this module's order) include every shape issue 17 lists."""
    if not SEEN:
        pytest.skip("runs after test_training_never_crashes_on_a_valid_dataset")
    assert sorted(SHAPES - SEEN) == []


# ------------------------------------------------------------------ failures once found


T0 = datetime(2026, 3, 2, tzinfo=UTC)


def _frame(table: str, rows: list[dict[str, object]]) -> pl.DataFrame:
    schema = TABLES_BY_NAME[table].schema
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


def _shop(n_buyers: int, days: int = 40) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Items of one seller, and buyers who view and buy every few days."""
    items = _frame(
        "items", [{"item_id": f"i{k}", "seller_id": "s1", "price": 5.0 + k} for k in range(4)]
    )
    rows = []
    for b in range(n_buyers):
        for d in range(b % 3, days, 3 + b % 4):
            kind = "purchase" if (b + d) % 2 else "view"
            rows.append(
                {
                    "buyer_id": f"b{b}",
                    "item_id": f"i{(b + d) % 4}",
                    "event_type": kind,
                    "ts": T0 + timedelta(days=d, hours=b % 12),
                    "quantity": 1,
                    "amount": 6.0 if kind == "purchase" else None,
                }
            )
    return items, _frame("events", rows)


def _offers() -> pl.DataFrame:
    return _frame("offers", [{"offer_id": "o1", "tool": "percent_off", "value": 0.1}])


def test_exposures_without_an_issued_offer_train_without_response() -> None:
    items, events = _shop(30)
    exposures = _frame(
        "exposures",
        [
            {"exposure_id": f"x{b}", "buyer_id": f"b{b}", "ts": T0 + timedelta(days=20)}
            for b in range(30)
        ],
    )
    dataset = Dataset(items=items, events=events, offers=_offers(), exposures=exposures)
    report = PromoRanker(FAST).fit(dataset).report_
    assert any(line.startswith("response not learned: 0 issued") for line in report.notes)
    assert any("none of them an offer" in line for line in report.skipped)


def test_a_buyer_no_model_knows_gets_a_cold_start_score() -> None:
    items, events = _shop(30)
    exposures = _frame(
        "exposures",
        [
            {"exposure_id": f"x{b}", "buyer_id": f"b{b}", "offer_id": "o1", "ts": T0}
            for b in range(30)
        ],
    )
    dataset = Dataset(items=items, events=events, offers=_offers(), exposures=exposures)
    ranker = PromoRanker(FAST).fit(dataset)
    scores = ranker.score(pl.DataFrame({"buyer_id": ["nobody"], "offer_id": ["o1"]}))
    assert scores["cold_start"].to_list() == [True]


def test_a_single_redemption_does_not_stop_the_response_model() -> None:
    items, events = _shop(80)
    exposures = _frame(
        "exposures",
        [
            {"exposure_id": f"x{b}", "buyer_id": f"b{b}", "offer_id": "o1", "ts": T0}
            for b in range(80)
        ],
    )
    redemptions = _frame(
        "redemptions",
        [{"buyer_id": "b1", "offer_id": "o1", "ts": T0 + timedelta(hours=3), "exposure_id": "x1"}],
    )
    dataset = Dataset(
        items=items,
        events=events,
        offers=_offers(),
        exposures=exposures,
        redemptions=redemptions,
    )
    PromoRanker(RankerConfig()).fit(dataset)  # the shipped defaults


def test_held_out_waves_of_control_rows_only_are_evaluated() -> None:
    items, events = _shop(40, days=30)
    rows = [
        {
            "exposure_id": f"x{b}",
            "buyer_id": f"b{b}",
            "offer_id": "o1" if b % 2 else None,
            "ts": T0 + timedelta(days=10),
            "propensity": 0.5,
        }
        for b in range(40)
    ] + [
        {
            "exposure_id": f"y{b}",
            "buyer_id": f"b{b}",
            "ts": T0 + timedelta(days=20),
            "propensity": 0.5,
        }
        for b in range(40)
    ]
    dataset = Dataset(
        items=items, events=events, offers=_offers(), exposures=_frame("exposures", rows)
    )
    split = split_stage(dataset, 1)
    assert split is not None
    held_out = response_stage(
        FAST, dataset, split, mf_stage(FAST, dataset, split), journey_stage(FAST, dataset, split)
    )
    evaluate_stage(held_out, dataset, split, HOLDOUT)


def test_a_feature_with_one_value_does_not_stop_the_response_model() -> None:
    items, events = _shop(80)
    offers = _frame(
        "offers",
        [
            {"offer_id": "o1", "tool": "percent_off", "value": 0.1},
            {"offer_id": "o2", "tool": "percent_off", "value": 0.1, "min_spend": 20.0},
        ],
    )
    at = T0 + timedelta(days=20)
    # Only exposure x26 is of o2, the only offer with a minimum spend.
    offer = [("o2" if b == 26 else "o1") for b in range(80)]
    exposures = _frame(
        "exposures",
        [
            {
                "exposure_id": f"x{b:02d}",
                "buyer_id": f"b{b}",
                "offer_id": offer[b],
                "ts": at,
                "propensity": 0.5,
            }
            for b in range(80)
        ],
    )
    redemptions = _frame(
        "redemptions",
        [
            {
                "buyer_id": f"b{b}",
                "offer_id": offer[b],
                "ts": at + timedelta(hours=3),
                "exposure_id": f"x{b:02d}",
            }
            for b in range(0, 80, 5)
        ],
    )
    dataset = Dataset(
        items=items,
        events=events,
        offers=offers,
        exposures=exposures,
        redemptions=redemptions,
    )
    PromoRanker(RankerConfig()).fit(dataset)  # the shipped defaults
