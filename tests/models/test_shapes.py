"""The ranker on the data shapes of issue 17, judged against each profile's ground truth.

Each test generates a profile (`recsys.data.synthetic.profiles`) small enough to fit in
seconds and fits the whole ranker in process.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.data.synthetic.profiles import profile_config, synthesize
from recsys.evaluation.policy_eval import policy_values_on_truth
from recsys.models.ranker import PromoRanker, RankerConfig

pytestmark = pytest.mark.slow


def _profile(root: Path, name: str, **fields: object) -> Path:
    out = root / name
    synthesize(name, out, profile_config(name, {"seed": 11, **fields}), overwrite=True)
    return out


def _config(path: Path) -> RankerConfig:
    sellers = pl.read_parquet(path / "truth" / "sellers.parquet")
    return RankerConfig(
        seller_margins=dict(zip(sellers["seller_id"], sellers["margin"], strict=True))
    )


def test_customers_known_by_attributes_alone_are_scored_from_them(tmp_path: Path) -> None:
    """No history at all, one offer randomized over two thirds of the customers: the
    journey's purchase model is skipped with its reason, the uplift is learned from the
    attributes, and the policy earns more, truly, on the customers to decide for than
    sending to all of them or to as many at random."""
    path = _profile(tmp_path, "attributes-experiment", buyers=60_000)
    dataset = load_dataset(path)
    ranker = PromoRanker(_config(path)).fit(dataset)
    report = ranker.report_.format()
    assert "uplift (treated vs control" in report
    assert "skipped: P(purchase) of the journey model: no buyer has an event before" in report
    truth = pl.read_parquet(path / "truth" / "buyers.parquet")
    undecided = truth.filter(~pl.col("in_experiment"))
    offers = pl.read_parquet(path / "truth" / "offers.parquet").join(
        undecided.select("buyer_id"), on="buyer_id"
    )
    scored = ranker.candidates(offers.select("buyer_id", "offer_id"))
    tau = scored.join(undecided, on="buyer_id")["tau"].to_numpy()
    assert scored["uplift"].null_count() == 0
    assert np.corrcoef(scored["uplift"].to_numpy(), tau)[0, 1] > 0.6
    values = policy_values_on_truth(offers, ranker.score(offers.select("buyer_id", "offer_id")))
    assert values["learned"] > 2 * values["blanket_percent_off"]
    assert values["learned"] > 2 * values["random_same_volume"]


def test_one_email_wave_with_a_control_third_learns_which_reminder_to_send(
    tmp_path: Path,
) -> None:
    """Outcomes are item-less views and purchases; nobody ever put anything in a cart, so
    those journey features have no values: they are left out with a note, not a crash."""
    path = _profile(tmp_path, "email-experiment", buyers=10_000)
    ranker = PromoRanker(_config(path)).fit(load_dataset(path))
    report = ranker.report_.format()
    assert "learned: uplift" in report
    assert "feature days_since_last_cart_add left out (no values)" in report
    assert "response not learned: " in report  # reminders are never redeemed
    truth = pl.read_parquet(path / "truth" / "offers.parquet")
    values = policy_values_on_truth(truth, ranker.score(truth.select("buyer_id", "offer_id")))
    assert values["learned"] > 1.3 * values["blanket_reminder"]
    assert values["learned"] > 0.8 * values["oracle"]


def test_a_till_log_alone_trains_matrix_factorization_and_the_journey(tmp_path: Path) -> None:
    """Purchases only (no offers, no exposures): MF and the journey are learned, response
    and uplift skipped with the reason; with the mailers, the response is learned but no
    uplift (no control group, no propensities), and the report says so."""
    path = _profile(tmp_path, "grocery-coupons", buyers=100, items=2_000, coupons=60)
    dataset = load_dataset(path)
    till = replace(dataset, offers=None, offer_items=None, exposures=None, redemptions=None)
    alone = PromoRanker(_config(path)).fit(till).report_
    assert any(line.startswith("matrix factorization (als, 100 buyers") for line in alone.learned)
    assert any(line.startswith("purchase journey (time scale") for line in alone.learned)
    assert any(line.startswith("response and uplift: the dataset has no") for line in alone.skipped)
    mailers = PromoRanker(_config(path)).fit(dataset).report_
    assert "response P(redeem | issued)" in mailers.learned
    assert "uplift: ranking falls back to response" in mailers.skipped
