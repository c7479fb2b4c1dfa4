"""The ranker bundle end to end on a small synthetic marketplace, and `recsys score`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.data import load_dataset
from recsys.data.schema import SCORES_SCHEMA
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.features.pairs import purchase_lines, scoped_purchases
from recsys.models.base import NotFittedError
from recsys.models.ranker import PromoRanker, RankerConfig, data_end


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ranker") / "d"
    generate(SyntheticConfig(buyers=2000, seed=5), out)
    return out


@pytest.fixture(scope="module")
def fitted(market: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[PromoRanker, Path]:
    ranker = PromoRanker(RankerConfig()).fit(load_dataset(market))
    saved = ranker.save(tmp_path_factory.mktemp("model") / "ranker")
    return ranker, saved


@pytest.fixture(scope="module")
def pairs(market: Path) -> pl.DataFrame:
    """Known pairs, then an unseen buyer, an unseen offer, and a duplicate, in that order."""
    known = pl.read_parquet(market / "truth" / "offers.parquet").select("buyer_id", "offer_id")
    known = known.sample(300, seed=1)
    extra = pl.DataFrame(
        {
            "buyer_id": ["never-seen-buyer", known["buyer_id"][0], known["buyer_id"][1]],
            "offer_id": [known["offer_id"][0], "never-seen-offer", known["offer_id"][1]],
        }
    )
    return pl.concat([known, extra])


def test_scores_follow_the_contract(fitted: tuple[PromoRanker, Path], pairs: pl.DataFrame) -> None:
    ranker, _ = fitted
    scores = ranker.score(pairs)
    assert scores.schema == pl.Schema(SCORES_SCHEMA)
    assert scores.select("buyer_id", "offer_id").equals(pairs)  # same rows, same order
    assert scores["p_redeem"].is_between(0, 1).all()
    assert scores["expected_value"].null_count() == 0
    # The score is what the policy decides by: the expected value moved by its doubt
    # (`decision_scores`), so never far from it.
    assert scores["score"].null_count() == 0
    assert (scores["score"] - scores["expected_value"]).abs().max() < 1.0


def test_unseen_buyers_and_offers_are_cold_start_not_errors(
    fitted: tuple[PromoRanker, Path], pairs: pl.DataFrame
) -> None:
    scores = fitted[0].score(pairs)
    tail = scores.tail(3)
    assert tail["cold_start"].to_list()[:2] == [True, True]
    assert tail["score"].null_count() == 0
    assert tail["uplift"][1] is None  # an unknown offer's uplift is not supported
    assert not scores.head(300)["cold_start"].all()


def test_save_load_round_trip_scores_identically(
    fitted: tuple[PromoRanker, Path], pairs: pl.DataFrame
) -> None:
    ranker, saved = fitted
    assert PromoRanker.load(saved).score(pairs).equals(ranker.score(pairs))


def test_scoring_with_data_recomputes_features(
    fitted: tuple[PromoRanker, Path], pairs: pl.DataFrame, market: Path
) -> None:
    """With the same data the features are the same, so are the scores."""
    ranker, _ = fitted
    with_data = ranker.score(pairs, dataset=load_dataset(market))
    assert with_data.select("buyer_id", "offer_id").equals(pairs)
    assert with_data["score"].to_list() == pytest.approx(ranker.score(pairs)["score"].to_list())


def test_refreshed_ranker_keeps_its_models_and_scores_with_features_of_the_data(
    market: Path, pairs: pl.DataFrame
) -> None:
    """A ranker fitted on older data, its features brought up to the data's end, scores
    like the same ranker given the data at scoring time."""
    dataset = load_dataset(market)
    end = data_end(dataset)
    older = PromoRanker(RankerConfig()).fit(dataset, as_of=end - timedelta(days=14))
    refreshed = older.refreshed(dataset)
    assert refreshed.store_ is not None and refreshed.store_.as_of == end
    assert refreshed.mf_ is older.mf_ and refreshed.response_ is older.response_
    assert older.store_ is not None and older.store_.as_of < end  # the original is unchanged
    assert "features as of" in refreshed.report_.format()
    refreshed.seller_order_value_ = older.seller_order_value_  # candidates() keeps the fit's
    assert refreshed.score(pairs).equals(older.score(pairs, dataset=dataset))


def test_a_ranker_cut_to_some_buyers_scores_their_pairs_the_same(
    fitted: tuple[PromoRanker, Path], pairs: pl.DataFrame
) -> None:
    ranker, _ = fitted
    some = pairs.head(40)
    view = ranker.for_buyers(some["buyer_id"].unique())
    assert view.store_ is not None and ranker.store_ is not None
    assert view.store_.buyer_seller.height < ranker.store_.buyer_seller.height
    assert view.score(some).equals(ranker.score(some))


def test_report_says_what_was_learned(fitted: tuple[PromoRanker, Path]) -> None:
    text = fitted[0].report_.format()
    assert "matrix factorization" in text and "policy" in text
    assert "cross-validated value per decision" in text  # every candidate's value


def test_scored_decisions_are_what_policy_learning_valued_its_candidates_on(
    fitted: tuple[PromoRanker, Path], market: Path
) -> None:
    ranker = fitted[0]
    dataset = load_dataset(market)
    scored = ranker.scored_decisions(dataset)
    assert scored is not None and ranker.learner_ is not None
    options = scored.options
    per_decision = options.group_by("exposure_id").agg(
        pl.col("offer_id").null_count().alias("nothing"), pl.col("is_logged").sum().alias("logged")
    )
    assert (per_decision["nothing"] == 1).all() and (per_decision["logged"] == 1).all()
    assert per_decision.height == ranker.learner_.support_.rows["decisions"]
    assert len(scored.scores.dr_reward) == options.height
    # The scores do not depend on whether the ranker itself learned a policy: a ranker
    # fitted without policy learning scores the same decisions the same way.
    without = RankerConfig.from_dict({**ranker.config.to_dict(), "learning": {"enabled": False}})
    again = (
        PromoRanker(without).fit(dataset).scored_decisions(dataset, learning=ranker.config.learning)
    )
    assert again is not None
    assert again.options["exposure_id"].equals(options["exposure_id"])
    assert np.allclose(again.scores.dr_reward, scored.scores.dr_reward, rtol=1e-9, atol=1e-9)


def test_without_exposures_uplift_is_skipped_and_said(market: Path) -> None:
    dataset = load_dataset(market)
    from dataclasses import replace

    no_control = replace(
        dataset,
        exposures=dataset.exposures.filter(  # type: ignore[union-attr]
            pl.col("offer_id").is_not_null()
        ).with_columns(pl.lit(None, pl.Float64).alias("propensity")),
    )
    ranker = PromoRanker().fit(no_control)
    assert any("policy learning" in s for s in ranker.report_.skipped)
    assert "control group" in ranker.report_.format()
    pairs = pl.read_parquet(market / "truth" / "offers.parquet").select("buyer_id", "offer_id")
    scores = ranker.score(pairs.head(50))
    assert scores["uplift"].null_count() == 50
    assert scores["p_redeem"].null_count() == 0
    assert ranker.scored_decisions(no_control) is None  # nothing randomized to score


def test_unfitted_ranker_refuses_to_score(pairs: pl.DataFrame, market: Path) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        PromoRanker().score(pairs)
    with pytest.raises(NotFittedError, match="scored_decisions"):
        PromoRanker().scored_decisions(load_dataset(market))


def test_cli_score_writes_one_row_per_pair(
    fitted: tuple[PromoRanker, Path], pairs: pl.DataFrame, tmp_path: Path
) -> None:
    pairs.write_csv(tmp_path / "pairs.csv")
    out = tmp_path / "scores.parquet"
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--model",
            str(fitted[1]),
            "--pairs",
            str(tmp_path / "pairs.csv"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    written = pl.read_parquet(out)
    assert written.select("buyer_id", "offer_id").equals(pairs)
    assert written["cold_start"].sum() >= 2


def test_cli_score_names_a_bad_model_path(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("buyer_id,offer_id\nb1,o1\n")
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--model",
            str(tmp_path / "nope"),
            "--pairs",
            str(tmp_path / "p.csv"),
            "--out",
            str(tmp_path / "o.csv"),
        ],
    )
    assert result.exit_code != 0
    assert "nope" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_refitting_on_the_same_data_gives_the_same_scores(
    market: Path, fitted: tuple[PromoRanker, Path], pairs: pl.DataFrame
) -> None:
    """Fixed seeds and order-independent sums: a retrain is reproducible to the bit."""
    again = PromoRanker(RankerConfig()).fit(load_dataset(market))
    assert again.score(pairs).equals(fitted[0].score(pairs))


def test_a_buyer_who_always_redeems_one_tool_is_predicted_to_redeem_it_most(market: Path) -> None:
    """Learned end to end: a buyer given every tool in every wave who only ever redeemed
    free shipping is predicted most likely to redeem it.

    The policy's score need not follow: each of those redemptions costs the seller the
    shipping, and for a habitual redeemer most of them are purchases that would have
    happened anyway — so the score must charge free shipping its expected cost.
    """
    from dataclasses import replace
    from datetime import timedelta

    dataset = load_dataset(market)
    assert dataset.offers is not None and dataset.exposures is not None
    assert dataset.redemptions is not None
    buyer = "b0000042"
    waves = dataset.offers.filter(pl.col("synthetic_kind") == "wave")
    home = (
        pl.read_parquet(market / "truth" / "buyers.parquet")
        .filter(pl.col("buyer_id") == buyer)["home_seller_id"]
        .item()
    )
    given = waves.filter(pl.col("seller_id") == home)
    exposures = given.select(
        (pl.lit("fan-") + pl.col("offer_id")).alias("exposure_id"),
        pl.lit(buyer).alias("buyer_id"),
        "offer_id",
        (pl.col("start_ts") + timedelta(hours=2)).alias("ts"),
        pl.lit(1 / 6).alias("propensity"),
        pl.lit("logging_policy_v1").alias("policy"),
    )
    redeemed = exposures.join(given.select("offer_id", "tool"), on="offer_id").filter(
        pl.col("tool") == "free_shipping"
    )
    redemptions = redeemed.select(
        "buyer_id",
        "offer_id",
        (pl.col("ts") + timedelta(hours=5)).alias("ts"),
        "exposure_id",
        pl.lit(None, pl.String).alias("order_id"),
        pl.lit(30.0).alias("amount"),
    )
    fan = replace(
        dataset,
        exposures=pl.concat([dataset.exposures, exposures], how="diagonal_relaxed"),
        redemptions=pl.concat([dataset.redemptions, redemptions], how="diagonal_relaxed"),
    )
    ranker = PromoRanker(RankerConfig()).fit(fan)
    next_offers = dataset.offers.filter(
        (pl.col("synthetic_kind") == "decision") & (pl.col("seller_id") == home)
    )
    scores = ranker.score(next_offers.select(pl.lit(buyer).alias("buyer_id"), "offer_id"))
    scored = scores.join(next_offers.select("offer_id", "tool"), on="offer_id")
    assert scored.sort("p_redeem", descending=True)["tool"][0] == "free_shipping"
    others = scored.filter(pl.col("tool") != "free_shipping")["p_redeem"].max()
    shipping = scored.filter(pl.col("tool") == "free_shipping")
    assert shipping["p_redeem"].item() > 1.5 * others  # type: ignore[operator]
    cand = ranker.candidates(shipping.select("buyer_id", "offer_id")).row(0, named=True)
    policy = RankerConfig().policy
    cost = cand["offer_cost"] if cand["offer_cost"] is not None else policy.default_shipping_cost
    expected = (
        cand["margin"] * cand["uplift"] * cand["order_value"]
        - cand["p_redeem"] * cost
        - policy.send_cost
    )
    assert shipping["score"].item() == pytest.approx(expected)


def test_the_fitted_store_keeps_scope_purchases_of_the_offers_still_valid(
    fitted: tuple[PromoRanker, Path], market: Path
) -> None:
    """The model keeps (buyer, offer) scope rows only for offers not ended at its as-of,
    and those rows are the whole table's: ended offers cannot be issued any more."""
    ranker, _ = fitted
    dataset = load_dataset(market)
    assert ranker.store_ is not None and dataset.offers is not None
    as_of = ranker.store_.as_of
    ended = dataset.offers.filter(pl.col("end_ts") <= as_of)["offer_id"]
    whole = scoped_purchases(dataset, purchase_lines(dataset, before=as_of))
    assert whole.filter(pl.col("offer_id").is_in(ended.implode())).height > 0
    kept = ranker.store_.scoped
    assert kept.filter(pl.col("offer_id").is_in(ended.implode())).height == 0
    live = whole.filter(~pl.col("offer_id").is_in(ended.implode()))
    assert live.height > 0
    assert kept.sort("buyer_id", "offer_id").equals(live.sort("buyer_id", "offer_id"))
