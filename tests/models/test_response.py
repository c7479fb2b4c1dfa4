"""Response model P(redeem | issued) on the synthetic marketplace.

The marketplace (3,000 buyers, seed 3) has a hand-sent campaign without control or
propensities and four randomized waves. The model is trained on everything before the
last wave and judged on the last wave's issued exposures, with features as of the wave's
start: an honest hold-out. (What offers change -- uplift, value -- is learned by
`recsys.learning` and tested under tests/learning.)
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import ConfigError
from recsys.data import Dataset, load_dataset
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.evaluation.targeting import roc_auc
from recsys.features.pairs import FeatureStore, exposure_outcomes
from recsys.models import NotFittedError
from recsys.models.response import ResponseConfig, ResponseModel, sample_issued


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("market")
    generate(SyntheticConfig(buyers=3000, seed=3), out)
    return load_dataset(out)


@pytest.fixture(scope="module")
def last_wave(market: Dataset) -> datetime:
    assert market.exposures is not None
    start = market.exposures["ts"].max()
    assert isinstance(start, datetime)
    return start


@pytest.fixture(scope="module")
def fitted(market: Dataset, last_wave: datetime) -> ResponseModel:
    return ResponseModel().fit(market.before(last_wave))


@pytest.fixture(scope="module")
def heldout(market: Dataset, last_wave: datetime) -> pl.DataFrame:
    """Pair features of the last wave's issued exposures as of its start, with outcomes."""
    outcomes = exposure_outcomes(market, ResponseConfig().horizon_days).filter(
        (pl.col("ts") == last_wave) & pl.col("offer_id").is_not_null()
    )
    store = FeatureStore.build(market, last_wave)
    return store.pair_features(
        outcomes.select("exposure_id", "buyer_id", "offer_id", "redeemed", "purchased")
    )


def test_fit_learns_response_from_every_issued_exposure(
    fitted: ResponseModel, market: Dataset, last_wave: datetime
) -> None:
    assert fitted.support_.response
    assert market.exposures is not None
    issued = market.exposures.filter(
        pl.col("offer_id").is_not_null() & (pl.col("ts") < last_wave)
    ).height
    assert fitted.support_.rows["issued"] == issued  # the hand-sent campaign included


def test_p_redeem_ranks_heldout_redemptions(fitted: ResponseModel, heldout: pl.DataFrame) -> None:
    """Measured: AUC 0.825 on 1,366 exposures with 40 redemptions; the buyer's order count
    at the offer's seller (a strong heuristic) gets 0.716."""
    redeemed = heldout["redeemed"].to_numpy()
    assert 20 <= redeemed.sum() < 0.1 * len(redeemed)
    p = fitted.predict(heldout)
    auc = roc_auc(p, redeemed)
    assert auc > 0.7
    assert auc > roc_auc(heldout["bs_orders"].to_numpy(), redeemed)


def test_mean_p_redeem_matches_the_heldout_redemption_rate(
    fitted: ResponseModel, heldout: pl.DataFrame
) -> None:
    rate = float(heldout["redeemed"].mean())  # type: ignore[arg-type]
    mean_p = float(fitted.predict(heldout).mean())
    assert rate / 2 < mean_p < rate * 2


def test_sample_keeps_every_redemption_and_weights_the_rest_back() -> None:
    outcomes = pl.DataFrame(
        {
            "exposure_id": [f"x{i:05d}" for i in range(10_000)],
            "redeemed": [1.0 if i % 100 == 0 else 0.0 for i in range(10_000)],
        }
    )
    assert sample_issued(outcomes, 10_000).equals(outcomes)  # fits: unchanged
    sample = sample_issued(outcomes, 2_000, seed=1)
    assert sample.filter(pl.col("redeemed") > 0).height == 100
    assert sample.filter(pl.col("redeemed") > 0)["_weight"].unique().to_list() == [1.0]
    negatives = sample.filter(pl.col("redeemed") == 0)
    assert 1_700 < negatives.height < 2_100
    # Weighted back, the negatives stand for all 9,900 (within the sample's noise).
    assert 9_900 * 0.93 < negatives["_weight"].sum() < 9_900 * 1.07
    assert sample.equals(sample_issued(outcomes, 2_000, seed=1))  # a fixed hash


def test_a_sample_of_the_issued_exposures_predicts_as_all_do(
    market: Dataset, last_wave: datetime, heldout: pl.DataFrame
) -> None:
    """With fewer rows than the issued exposures, P(redeem) is learned from every
    redemption and a weighted share of the rest: still calibrated, still ranking."""
    model = ResponseModel(ResponseConfig(max_rows=1_000)).fit(market.before(last_wave))
    assert model.support_.rows["issued"] < 1_300
    assert any("weighted back (response.max_rows = 1,000)" in n for n in model.support_.notes)
    rate = float(heldout["redeemed"].mean())  # type: ignore[arg-type]
    p = model.predict(heldout)
    assert rate / 2 < float(p.mean()) < rate * 2
    assert roc_auc(p, heldout["redeemed"].to_numpy()) > 0.65


def test_predict_one_value_per_input_row_in_order(
    fitted: ResponseModel, heldout: pl.DataFrame
) -> None:
    features = heldout.head(300)
    p = fitted.predict(features)
    assert p.shape == (features.height,)
    assert ((p > 0) & (p < 1)).all()
    np.testing.assert_array_equal(fitted.predict(features.reverse()), p[::-1])
    order = np.random.default_rng(0).permutation(features.height)
    np.testing.assert_array_equal(fitted.predict(features[order]), p[order])


def test_save_load_gives_identical_predictions(
    fitted: ResponseModel, heldout: pl.DataFrame, tmp_path: Path
) -> None:
    loaded = ResponseModel.load(fitted.save(tmp_path / "response"))
    assert loaded.is_fitted
    assert loaded.support_ == fitted.support_
    assert loaded.get_config() == fitted.get_config()
    np.testing.assert_array_equal(loaded.predict(heldout), fitted.predict(heldout))


def test_refit_gives_identical_predictions(
    market: Dataset, last_wave: datetime, fitted: ResponseModel, heldout: pl.DataFrame
) -> None:
    again = ResponseModel().fit(market.before(last_wave))
    np.testing.assert_array_equal(again.predict(heldout), fitted.predict(heldout))


def test_no_issued_exposures_learns_nothing_and_says_why(market: Dataset) -> None:
    assert market.exposures is not None
    control_only = replace(market, exposures=market.exposures.filter(pl.col("offer_id").is_null()))
    model = ResponseModel().fit(control_only)
    assert not model.support_.response
    assert "response not learned" in " ".join(model.support_.notes)
    assert np.isnan(model.predict(pl.DataFrame({"buyer_id": ["b"], "offer_id": ["o"]}))).all()


def test_unfitted_model_raises_not_fitted(heldout: pl.DataFrame, tmp_path: Path) -> None:
    model = ResponseModel()
    with pytest.raises(NotFittedError, match=r"ResponseModel.*predict"):
        model.predict(heldout)
    with pytest.raises(NotFittedError, match="save"):
        model.save(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_config_rejects_an_unknown_key_by_name() -> None:
    with pytest.raises(ConfigError, match="lerning_rate"):
        ResponseConfig.from_dict({"lerning_rate": 0.1})
    with pytest.raises(ConfigError, match="lerning_rate"):
        ResponseModel.from_config({"lerning_rate": 0.1})
    config = ResponseConfig.from_dict({"learning_rate": 0.05})
    assert ResponseModel.from_config(config.to_dict()).get_config() == config


# ---------------------------------------------------------------------------- no leakage


def _orders_before(market: Dataset) -> pl.DataFrame:
    """Purchase orders with buyer, seller and time, computed here, not by the feature code."""
    return (
        market.events.filter(pl.col("event_type") == "purchase")
        .join(market.items.select("item_id", "seller_id"), on="item_id")
        .group_by("buyer_id", "seller_id", "order_id")
        .agg(pl.col("ts").max())
    )


def test_feature_store_at_the_snapshot_does_not_see_the_outcome_window(
    market: Dataset, last_wave: datetime
) -> None:
    """A buyer who bought from the offer's seller inside the outcome window: that order is
    not in `bs_orders` as of the exposure's snapshot, and is one day later."""
    outcomes = exposure_outcomes(market, 7.0).filter(
        (pl.col("ts") == last_wave) & (pl.col("purchased") == 1.0)
    )
    row = outcomes.sort("exposure_id").row(0, named=True)
    orders = _orders_before(market).filter(
        (pl.col("buyer_id") == row["buyer_id"]) & (pl.col("seller_id") == row["seller_key"])
    )
    before = orders.filter(pl.col("ts") < last_wave).height
    in_window = orders.filter(
        (pl.col("ts") >= last_wave) & (pl.col("ts") < row["window_end"])
    ).height
    assert in_window >= 1
    pair = pl.DataFrame({"buyer_id": [row["buyer_id"]], "offer_id": [row["offer_id"]]})
    at_snapshot = FeatureStore.build(market, last_wave).pair_features(pair)
    assert at_snapshot["bs_orders"].item() == before
    later = FeatureStore.build(market, row["window_end"]).pair_features(pair)
    assert later["bs_orders"].item() >= before + in_window


def test_training_rows_use_features_as_of_each_exposures_snapshot(market: Dataset) -> None:
    """Every issued training row's order count and redemption count equal the ones before
    its exposure's day, computed independently; many rows would differ if the outcome
    window leaked in."""
    model = ResponseModel()
    treated = model._training_rows(market, None)
    assert market.exposures is not None and market.redemptions is not None
    issued = market.exposures.filter(pl.col("offer_id").is_not_null())
    assert treated.height == issued.height
    snapshot = pl.col("ts").dt.truncate("1d")
    rows = treated.select(
        "exposure_id",
        "buyer_id",
        "seller_key",
        "bs_orders",
        "past_redemptions",
        "purchased",
        "redeemed",
        snapshot.alias("snapshot"),
    )
    orders = _orders_before(market).rename({"seller_id": "seller_key", "ts": "o_ts"})
    counted = (
        rows.join(orders, on=["buyer_id", "seller_key"], how="left")
        .group_by("exposure_id")
        .agg(
            (pl.col("o_ts") < pl.col("snapshot")).sum().alias("orders_before"),
            (pl.col("o_ts") < pl.col("snapshot") + pl.duration(days=8)).sum().alias("leaky"),
        )
    )
    redemptions = market.redemptions.select("buyer_id", pl.col("ts").alias("r_ts"))
    redeemed = (
        rows.join(redemptions, on="buyer_id", how="left")
        .group_by("exposure_id")
        .agg((pl.col("r_ts") < pl.col("snapshot")).sum().alias("redemptions_before"))
    )
    check = rows.join(counted, on="exposure_id").join(redeemed, on="exposure_id")
    assert check.height == treated.height
    assert (check["bs_orders"] == check["orders_before"].cast(pl.Float64)).all()
    assert (check["past_redemptions"] == check["redemptions_before"].cast(pl.Float64)).all()
    # The check has teeth: with the week after the snapshot counted, rows that led to a
    # purchase (and every redeemed one) would show more orders.
    bought = check.filter(pl.col("purchased") == 1.0)
    assert bought.height > 100
    assert (bought["leaky"] > bought["orders_before"]).all()
