"""Journey stages, transitions and the purchase model: hand-made known answers, then the
synthetic marketplace, whose latent stages and purchases are the ground truth."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from recsys.config import ConfigError
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.features.buyer import buyer_features
from recsys.models import Estimator, NotFittedError
from recsys.models.journey import (
    STAGES,
    HoldoutReport,
    JourneyConfig,
    JourneyModel,
    PurchaseModelSettings,
    StageRules,
    assign_stages,
    stages_at,
    transition_matrix,
)

T = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SCALE = 10.0
"""Hand-made examples use a fixed 10-day time scale: with the default rules a buyer who
never bought churns after 20 idle days, a past buyer after 35; lapsing after 25 days
without a purchase; loyal = 4+ orders, mean gap <= 12.5 days, last purchase <= 20 days ago;
cart window 5 days; new = known for less than 5 days."""
HAND_CONFIG = JourneyConfig(time_scale_days=SCALE)

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "buyer_id": pl.String(),
    "item_id": pl.String(),
    "event_type": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "order_id": pl.String(),
    "amount": pl.Float64(),
}


def rows(buyer: str, kind: str, *days_ago: float) -> list[dict[str, Any]]:
    """Events of one kind at the given days before ``T`` (purchases get their own order)."""
    return [
        {
            "buyer_id": buyer,
            "item_id": None if kind in ("search", "checkout") else "i1",
            "event_type": kind,
            "ts": T - timedelta(days=d),
            "order_id": f"{buyer}-{d}" if kind == "purchase" else None,
            "amount": 5.0 if kind == "purchase" else None,
        }
        for d in days_ago
    ]


def hand_events(stretch: float = 1.0) -> pl.DataFrame:
    """Nine buyers, each built to be one stage at ``T`` (the buyer id names the stage)."""
    spec = [
        ("loyal", "purchase", (60, 48, 36, 24, 12, 2)),  # 6 orders in 60 days, last 2 ago
        ("loyal", "view", (1,)),
        ("repeat", "purchase", (30, 5)),
        ("cart_abandoner", "view", (10,)),
        ("cart_abandoner", "add_to_cart", (1,)),  # never bought
        ("checkout_abandoner", "view", (9,)),
        ("checkout_abandoner", "checkout", (2,)),  # checkout without a purchase
        ("lapsing", "purchase", (80, 60, 40)),
        ("lapsing", "view", (10,)),  # still visits, no order for 40 days
        ("churned", "view", (201,)),
        ("churned", "purchase", (200,)),  # nothing for 200 days
        ("churned_browser", "view", (30, 29)),  # never bought, gone 29 days
        ("new", "view", (2,)),
        ("new", "search", (1.5,)),
        ("browsing", "view", (40, 3)),
    ]
    data = [row for buyer, kind, days in spec for row in rows(buyer, kind, *days)]
    events = pl.DataFrame(data, schema=EVENT_SCHEMA)
    if stretch != 1.0:
        events = events.with_columns(ts=pl.lit(T) - (pl.lit(T) - pl.col("ts")) * stretch)
    return events


HAND_STAGES = {
    "loyal": "loyal",
    "repeat": "repeat",
    "cart_abandoner": "cart_abandoner",
    "checkout_abandoner": "cart_abandoner",
    "lapsing": "lapsing",
    "churned": "churned",
    "churned_browser": "churned",
    "new": "new",
    "browsing": "browsing",
}


def stage_map(frame: pl.DataFrame) -> dict[str, str]:
    return dict(frame.select("buyer_id", "stage").iter_rows())


# --- stages on hand-made buyers -------------------------------------------------------


def test_hand_made_buyers_get_their_stage() -> None:
    features = buyer_features(hand_events(), T)
    stages = assign_stages(features, HAND_CONFIG, SCALE)
    assert stages.columns == ["buyer_id", "stage"]
    assert stage_map(stages) == HAND_STAGES
    assert set(stages["stage"]) <= set(STAGES)


def test_future_events_do_not_change_stages() -> None:
    future = pl.DataFrame(
        rows("cart_abandoner", "purchase", -0.5)  # buys 12 hours after T
        + rows("churned", "view", -1)
        + rows("new", "purchase", 0)  # exactly at T
        + rows("newcomer", "view", -3),
        schema=EVENT_SCHEMA,
    )
    events = pl.concat([hand_events(), future])
    assert stage_map(stages_at(events, T, HAND_CONFIG, SCALE)) == HAND_STAGES


def test_stages_scale_with_the_time_scale() -> None:
    """A 4x slower world (quarterly-ish buyers) with a 4x time scale: the same stages."""
    stretched = hand_events(stretch=4.0)
    assert stage_map(stages_at(stretched, T, HAND_CONFIG, 4 * SCALE)) == HAND_STAGES
    # ...while the original thresholds read the slow buyers as gone.
    slow = stage_map(stages_at(stretched, T, HAND_CONFIG, SCALE))
    assert slow["loyal"] != "loyal"
    assert slow["lapsing"] == "churned"


def test_rules_are_configurable() -> None:
    features = buyer_features(hand_events(), T)
    strict = StageRules(loyal_min_orders=7)
    assert stage_map(assign_stages(features, strict, SCALE))["loyal"] == "repeat"
    patient = StageRules(churn_after=4.0)  # a never-buyer idle 29 days is not churned yet
    assert stage_map(assign_stages(features, patient, SCALE))["churned_browser"] == "browsing"


def test_assign_stages_names_missing_columns() -> None:
    features = buyer_features(hand_events(), T).drop("tenure_days")
    with pytest.raises(ValueError, match="tenure_days"):
        assign_stages(features, HAND_CONFIG, SCALE)


# --- transitions ----------------------------------------------------------------------


def test_transition_matrix_known_counts() -> None:
    """At T-30 days: loyal-to-be has 3 orders (repeat), lapsing-to-be last bought 10 days
    before (repeat), churned is long gone, browsing had one view 10 days before; the rest
    have no event before T-30 and are not counted."""
    tm = transition_matrix(hand_events(), [T - 30 * DAY, T], HAND_CONFIG)
    assert tm.columns == ["from_stage", "to_stage", "count", "probability"]
    counts = {(f, t): c for f, t, c, _ in tm.iter_rows() if c}
    assert counts == {
        ("repeat", "loyal"): 1,
        ("repeat", "lapsing"): 1,
        ("churned", "churned"): 1,
        ("browsing", "browsing"): 1,
    }
    probs = {(f, t): p for f, t, _, p in tm.iter_rows()}
    assert probs[("repeat", "loyal")] == pytest.approx(0.5)
    assert probs[("churned", "churned")] == pytest.approx(1.0)
    # every observed from-stage has a row for each of the seven to-stages
    assert tm.height == 3 * len(STAGES)
    assert tm["from_stage"].unique(maintain_order=True).to_list() == [
        "browsing",
        "repeat",
        "churned",
    ]


def test_transition_matrix_pools_pairs_and_rejects_bad_times() -> None:
    times = [T - 30 * DAY, T - 15 * DAY, T]
    tm = transition_matrix(hand_events(), times, HAND_CONFIG)

    def total(frame: pl.DataFrame) -> int:
        return int(frame.select(pl.col("count").sum()).item())

    first = total(transition_matrix(hand_events(), times[:2], HAND_CONFIG))
    second = total(transition_matrix(hand_events(), times[1:], HAND_CONFIG))
    assert total(tm) == first + second
    with pytest.raises(ValueError, match="strictly increasing"):
        transition_matrix(hand_events(), [T, T - DAY])
    with pytest.raises(ValueError, match="at least two"):
        transition_matrix(hand_events(), [T])


# --- config and the Estimator flow ----------------------------------------------------


def test_config_round_trip_and_validation() -> None:
    config = JourneyConfig(
        horizon_days=14, rules=StageRules(lapse_after=3.0), model=PurchaseModelSettings()
    )
    model = JourneyModel(config)
    assert isinstance(model, Estimator)
    again = JourneyModel.from_config(model.get_config().to_dict())
    assert again.get_config() == config
    with pytest.raises(ConfigError, match="lapse_afterr"):
        JourneyConfig.from_dict({"rules": {"lapse_afterr": 2}})
    with pytest.raises(ConfigError, match="horizon_days"):
        JourneyConfig.from_dict({"horizon_days": 0})


def test_unfitted_model_raises() -> None:
    model = JourneyModel()
    with pytest.raises(NotFittedError, match=r"predict\(\)"):
        model.predict(hand_events(), T)
    with pytest.raises(NotFittedError):
        model.stage_of(hand_events(), T)
    with pytest.raises(NotFittedError):
        model.save("unused")


def test_single_class_labels_skip_the_purchase_model_with_the_reason(tmp_path: Path) -> None:
    views = hand_events().filter(pl.col("event_type") != "purchase")
    model = JourneyModel(HAND_CONFIG).fit(views, T)
    assert model.is_fitted and model.classifier_ is None
    assert model.skipped_ is not None
    assert re.search(r"0 buyers who purchased .* horizon_days", model.skipped_)
    # Stages need no fit; P(purchase) falls back to the training rate: nobody bought.
    predicted = model.predict(views, T)
    assert predicted["stage"].null_count() == 0
    assert predicted["p_purchase"].to_list() == [0.0] * predicted.height
    loaded = JourneyModel.load(model.save(tmp_path / "skipped"))
    assert loaded.skipped_ == model.skipped_ and loaded.predict(views, T).equals(predicted)


def test_no_history_before_the_training_window_skips_with_the_reason() -> None:
    events = hand_events()
    model = JourneyModel(HAND_CONFIG).fit(events, T - 300 * DAY)
    assert model.skipped_ is not None and "no buyer has an event before" in model.skipped_
    assert "horizon_days" in model.skipped_  # and the setting to change
    # Nothing to count either: P(purchase) is unknown, null, never a made-up number.
    predicted = model.predict(events, T)
    assert predicted.height and predicted["p_purchase"].null_count() == predicted.height
    with pytest.raises(ValueError, match="cannot be fitted"):
        model.evaluate_holdout(events, T - 300 * DAY)


def test_features_without_values_or_variance_are_left_out_with_a_note() -> None:
    """No checkouts and no cart adds anywhere: those columns have no values (the booster
    could not bin them); `abandoned_checkouts` is 0 for everyone (no variance)."""
    rng = np.random.default_rng(3)
    rows_ = [
        {
            "buyer_id": f"b{b}",
            "item_id": "i1",
            "event_type": "purchase" if rng.random() < 0.5 else "view",
            "ts": T - timedelta(days=float(d), hours=b % 24),
            "order_id": f"o{b}-{d}",
            "amount": 5.0,
        }
        for b in range(60)
        for d in rng.choice(40, size=6, replace=False)
    ]
    events = pl.DataFrame(rows_, schema=EVENT_SCHEMA)
    model = JourneyModel(HAND_CONFIG).fit(events, T)
    assert model.skipped_ is None
    for name in ("days_since_last_cart_add", "days_since_last_abandoned_checkout"):
        assert name not in model.feature_names_
        assert f"journey model: feature {name} left out (no values)" in model.notes_
    assert "abandoned_checkouts" not in model.feature_names_
    assert any("abandoned_checkouts left out (a single value" in n for n in model.notes_)
    assert model.predict(events, T)["p_purchase"].null_count() == 0


# --- the synthetic marketplace --------------------------------------------------------


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("market")
    config = SyntheticConfig(buyers=2000, seed=1)
    generate(config, out)
    end = config.start + timedelta(weeks=config.weeks)
    return {
        "events": pl.read_parquet(out / "events.parquet"),
        "buyers": pl.read_parquet(out / "buyers.parquet"),
        "items": pl.read_parquet(out / "items.parquet"),
        "truth": pl.read_parquet(out / "truth" / "buyers.parquet"),
        "end": end,
    }


@pytest.fixture(scope="module")
def fitted(market: dict[str, Any]) -> JourneyModel:
    return JourneyModel().fit(market["events"], market["end"], market["buyers"], market["items"])


def test_stages_agree_with_the_latent_truth(market: dict[str, Any], fitted: JourneyModel) -> None:
    """Measured (seed 1, 2000 buyers, 1626 with events): accuracy 0.65 against a
    majority-class 0.38; churned recall 0.81, loyal recall 0.68 and precision 0.74."""
    stages = fitted.stage_of(market["events"], market["end"], market["buyers"], market["items"])
    truth = market["truth"].select("buyer_id", pl.col("stage").alias("truth"))
    joined = stages.join(truth, on="buyer_id", how="inner")
    assert joined.height == stages.height > 1500
    accuracy = float(joined.select((pl.col("stage") == pl.col("truth")).mean()).item())
    majority = float(joined.group_by("truth").len().select(pl.col("len").max()).item())
    majority /= joined.height
    assert accuracy > 0.6
    assert accuracy > majority + 0.2

    def recall(stage: str) -> float:
        rows = joined.filter(pl.col("truth") == stage)
        return float(rows.select((pl.col("stage") == stage).mean()).item())

    def precision(stage: str) -> float:
        rows = joined.filter(pl.col("stage") == stage)
        return float(rows.select((pl.col("truth") == stage).mean()).item())

    assert recall("churned") > 0.75
    assert recall("loyal") > 0.6
    assert precision("loyal") > 0.65
    assert recall("repeat") > 0.55
    assert fitted.time_scale_days_ == pytest.approx(12.0, abs=2.0)


def test_transition_rows_sum_to_one_on_the_market(market: dict[str, Any]) -> None:
    end = market["end"]
    times = [end - timedelta(weeks=w) for w in (12, 8, 4, 0)]
    tm = transition_matrix(market["events"], times, JourneyConfig())
    sums = tm.group_by("from_stage").agg(pl.col("probability").sum())
    assert np.allclose(sums["probability"].to_numpy(), 1.0)
    assert set(tm["from_stage"]) == set(STAGES)
    probs = {(f, t): p for f, t, _, p in tm.iter_rows()}
    # stages persist more than they change, except the short-lived ones
    assert probs[("churned", "churned")] > 0.7
    assert probs[("loyal", "loyal")] > 0.5


def test_predict_gives_stage_and_probability(market: dict[str, Any], fitted: JourneyModel) -> None:
    end = market["end"]
    pred = fitted.predict(market["events"], end, market["buyers"], market["items"])
    assert pred.columns == ["buyer_id", "stage", "p_purchase"]
    assert pred["buyer_id"].is_sorted()
    assert pred.height == buyer_features(market["events"], end).height
    p = pred["p_purchase"].to_numpy()
    assert np.all((p >= 0) & (p <= 1))
    mean_by_stage = dict(pred.group_by("stage").agg(pl.col("p_purchase").mean()).iter_rows())
    assert mean_by_stage["loyal"] > mean_by_stage["repeat"] > mean_by_stage["churned"]


def test_predict_from_features_computed_once_is_predict(
    market: dict[str, Any], fitted: JourneyModel
) -> None:
    end = market["end"]
    args = (market["events"], end, market["buyers"], market["items"])
    features = buyer_features(*args)
    assert fitted.predict_features(features).equals(fitted.predict(*args))


def test_holdout_auc_and_calibration(market: dict[str, Any], fitted: JourneyModel) -> None:
    """Measured (seed 1): AUC 0.90, Brier 0.066 against 0.071 (stage rate) and 0.102 (base
    rate); 11.5 % of 1569 buyers bought in the holdout week."""
    report = fitted.evaluate_holdout(
        market["events"], market["end"], market["buyers"], market["items"]
    )
    assert isinstance(report, HoldoutReport)
    assert report.as_of == market["end"] - timedelta(days=7)
    assert report.n_buyers > 1500
    assert report.model.roc_auc > 0.85
    assert report.model.brier < 0.9 * report.base_rate.brier
    assert report.model.brier < report.stage_baseline.brier
    assert report.model.log_loss < report.base_rate.log_loss
    assert report.model.roc_auc > report.stage_baseline.roc_auc
    assert report.base_rate.roc_auc == pytest.approx(0.5)
    # reliability: the top decile buys far more than the bottom one, as predicted
    bins = report.reliability
    assert bins["n"].sum() == report.n_buyers
    assert bins["observed_rate"][-1] > 0.4 > 0.05 > bins["observed_rate"][0]
    assert "roc auc" in report.format()
    assert report.to_dict()["model_roc_auc"] == report.model.roc_auc
    # the report fits its own copy: the model itself is unchanged
    assert fitted.n_train_ > 0 and fitted.is_fitted


def test_save_load_round_trip(market: dict[str, Any], fitted: JourneyModel, tmp_path: Path) -> None:
    args = (market["events"], market["end"], market["buyers"], market["items"])
    path = fitted.save(tmp_path / "journey")
    loaded = JourneyModel.load(path)
    assert loaded.get_config() == fitted.get_config()
    assert loaded.time_scale_days_ == fitted.time_scale_days_
    assert loaded.stage_rates_ == fitted.stage_rates_
    assert loaded.predict(*args).equals(fitted.predict(*args))
    with pytest.raises(FileNotFoundError):
        JourneyModel.load(tmp_path / "nothing")


def test_refit_is_deterministic(market: dict[str, Any], fitted: JourneyModel) -> None:
    args = (market["events"], market["end"], market["buyers"], market["items"])
    again = JourneyModel().fit(*args)
    assert again.predict(*args).equals(fitted.predict(*args))


def test_extra_features_are_joined_and_required(market: dict[str, Any]) -> None:
    events, end = market["events"], market["end"]
    rng = np.random.default_rng(0)
    ids = market["buyers"]["buyer_id"]
    extra = pl.DataFrame({"buyer_id": ids, "mf_0": rng.normal(size=len(ids))})
    config = JourneyConfig(training_snapshots=1, model=PurchaseModelSettings(max_iter=20))
    model = JourneyModel(config).fit(events, end, extra_features=extra)
    assert model.feature_names_[-1] == "mf_0"
    assert model.predict(events, end, extra_features=extra).height > 0
    with pytest.raises(ValueError, match="pass extra_features"):
        model.predict(events, end)
    with pytest.raises(ValueError, match="mf_0"):
        model.predict(events, end, extra_features=extra.rename({"mf_0": "mf_1"}))
    with pytest.raises(ValueError, match="repeated buyer_id"):
        model.predict(events, end, extra_features=pl.concat([extra, extra.head(2)]))
    with pytest.raises(ValueError, match="not numeric"):
        JourneyModel(config).fit(
            events, end, extra_features=extra.with_columns(pl.lit("x").alias("country"))
        )
