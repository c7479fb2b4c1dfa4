"""The loop from serving back to training, end to end, in process, on a known world.

A synthetic marketplace (`recsys.data.synthetic.served.ServedMarket`) has 12 weeks of
history with no randomized campaign (one campaign sent by hand: no control, no
propensity), so the first model cannot learn uplift and ranks by response. It is served
through `RankingService` for four weeks with a 5 % holdout and no exploration: the
holdout is the only randomized data. Each week the simulated buyers answer the service's
decisions with the world's causal effects; the decision log and the simulated events
become the next training set (`load_dataset(data, decision_logs=[log])`, what
`recsys train --data DIR --decisions LOG` reads), and a second model is fitted on it
(`PromoRanker.fit`, the fit `recsys train` runs in its full branch; the command itself,
Ray, MLflow and the gate, runs on the same loop in `tests/training/test_loop_train.py`,
a reliability test).

What it shows, against the simulator's truth:
- the holdout's observed share is the configured one, within binomial tolerance;
- uplift becomes learnable with the holdout alone: the second model learns a policy, and
  the same loop served without a holdout learns none;
- the incrementality report's 90 % interval of the profit and purchase-rate lift covers
  the true expected lift of the decisions it measured;
- the second model earns more than the first on the last week's requests, valued exactly
  by the truth (`ServedMarket.true_value`). The first ranks by response and, with the
  send cost counted, finds few offers worth sending; the second has learned from the
  holdout that the reminder pays. It does not learn which tool pays per buyer: at this
  size (about 250 held-out buyers) realized profit is too noisy for that.
"""

from __future__ import annotations

import copy
import itertools
import math
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

import numpy as np
import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.data.synthetic import SyntheticConfig
from recsys.data.synthetic.served import DECISION_OFFSET_S, ServedMarket
from recsys.evaluation.incrementality import OVERALL, IncrementalityConfig, incrementality
from recsys.models.ranker import PromoRanker, RankerConfig
from recsys.policy.holdout import HoldoutConfig
from serving import service as service_module
from serving.auth import ADMIN_PRINCIPAL
from serving.decision_log import DecisionLog, read_log
from serving.schemas import RankRequest
from serving.service import RankingService

pytestmark = pytest.mark.slow

HISTORY, SERVED, SHARE = 12, 4, 0.05


def world() -> SyntheticConfig:
    weeks = HISTORY + SERVED + 1  # the last week only compares the two models
    return SyntheticConfig(
        buyers=3000,
        weeks=weeks,
        wave_weeks=tuple(range(HISTORY, weeks)),  # offers of the served weeks, no waves
        manual_campaign_week=HISTORY - 3,
        seed=7,
    )


class Served:
    """A `RankingService` answering the simulator's requests (one per buyer and week);
    its decision log's rows are what the simulator is told."""

    def __init__(
        self, ranker: PromoRanker, version: str, log: Path | None, holdout: HoldoutConfig | None
    ) -> None:
        self.now = datetime.min
        self.log_dir = log
        self.log = DecisionLog(log) if log is not None else None
        greedy = ranker.config.policy.model_copy(update={"exploration": "none"})
        self.service = RankingService(
            ranker, version, decision_log=self.log, policy=greedy, clock=lambda: self.now,
            seed=1, holdout=holdout, score_cache_rows=0,
        )  # fmt: skip

    def answers(self, at: datetime, requests: pl.DataFrame) -> list[str | None]:
        self.now = at
        pairs = list(requests.select("buyer_id", "seller_id").iter_rows())
        offers: list[str | None] = []
        for start in range(0, len(pairs), 500):
            chunk = [RankRequest(buyer_id=b, seller_id=s, k=1) for b, s in pairs[start:][:500]]
            for answer in self.service.rank(chunk, [ADMIN_PRINCIPAL] * len(chunk)):
                offers.append(answer.offers[0].offer_id if answer.offers else None)
        return offers

    def decide(self, at: datetime, requests: pl.DataFrame) -> pl.DataFrame:
        self.answers(at, requests)
        assert self.log is not None and self.log_dir is not None
        self.log.flush()
        return read_log(self.log_dir)["exposures"].filter(pl.col("ts") == at)


def fit(market: ServedMarket, data: Path, logs: list[Path]) -> PromoRanker:
    config = RankerConfig().with_seller_terms(market.terms())
    return PromoRanker(config).fit(load_dataset(data, logs))


def run_loop(root: Path, share: float) -> dict[str, object]:
    """History, model 1, four served weeks, model 2. Decision ids are numbered instead of
    random, so the run (and what the learner sees, in decision-id order) is repeatable."""
    ids = itertools.count(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            service_module,
            "new_decision_ids",
            lambda n: [UUID(int=next(ids)).hex for _ in range(n)],
        )
        return _run_loop(root, share)


def _run_loop(root: Path, share: float) -> dict[str, object]:
    market = ServedMarket(world())
    market.run(HISTORY)
    first = fit(market, market.write(root / "history"), [])
    log = root / "decision_log"
    served = Served(first, "m1", log, HoldoutConfig(share=share, period_days=7 * (SERVED + 1)))
    for _ in range(SERVED):
        market.serve_week(served.decide)
    data = market.write(root / "served")
    second = fit(market, data, [log])
    return {"market": market, "first": first, "second": second, "data": data, "log": log}


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return run_loop(tmp_path_factory.mktemp("loop"), SHARE)


def test_the_first_model_could_not_learn_uplift(loop: dict[str, object]) -> None:
    first = loop["first"]
    assert isinstance(first, PromoRanker) and first.learner_ is not None
    assert not first.learner_.learned
    assert any("policy not learned" in n for n in first.learner_.support_.notes)


def test_the_holdout_share_observed_is_the_configured_one(loop: dict[str, object]) -> None:
    market = loop["market"]
    assert isinstance(market, ServedMarket)
    served = pl.concat(market.served)
    control = served["arm"] == "control"
    n = served.height
    assert abs(control.mean() - SHARE) < 4 * math.sqrt(SHARE * (1 - SHARE) / n)
    assert served.filter(control)["offer_id"].null_count() == int(control.sum())
    # No exploration: an offer's propensity is 1 - share, a held-out nothing's share
    # plus (1 - share) x P(the greedy policy chooses nothing) = share here.
    given = served.filter(pl.col("offer_id").is_not_null())
    assert np.allclose(given["propensity"].to_numpy(), 1 - SHARE)


def test_with_the_holdout_alone_uplift_is_learned(loop: dict[str, object], tmp_path: Path) -> None:
    second = loop["second"]
    assert isinstance(second, PromoRanker) and second.learner_ is not None
    assert second.learner_.learned, second.learner_.support_.notes
    assert second.learner_.support_.rows["control_decisions"] > 100
    without = run_loop(tmp_path, 0.0)["second"]
    assert isinstance(without, PromoRanker) and without.learner_ is not None
    assert not without.learner_.learned
    # Served greedily, every decision was certain: nothing to learn another action from.
    assert any("at propensity 1" in n for n in without.learner_.support_.notes)


def test_the_measured_lift_covers_the_truth(loop: dict[str, object]) -> None:
    market, data, log = loop["market"], loop["data"], loop["log"]
    assert isinstance(market, ServedMarket) and isinstance(data, Path) and isinstance(log, Path)
    end = market.week_start(market.week) + timedelta(seconds=DECISION_OFFSET_S)
    report = incrementality(
        load_dataset(data, [log]),
        IncrementalityConfig(
            window_days=7,
            margins=market.terms().margins,
            send_cost=market.config.send_cost,
            end=end,
        ),
    )
    # The truth of what the report measured: each unit's first decision, treated ones.
    served = pl.concat(market.served).sort("week")
    units = served.group_by("buyer_id", "seller_id", maintain_order=True).first()
    treated = units.filter(pl.col("arm") == "treated")
    true_profit = float(treated["incremental_profit"].mean())
    true_rate = float((treated["p_purchase_treated"] - treated["p_purchase_control"]).mean())
    profit = report.row("overall", OVERALL, "profit")
    rate = report.row("overall", OVERALL, "purchase_rate")
    assert profit is not None and rate is not None
    assert profit["n_treated"] + profit["n_control"] == units.height
    assert profit["low"] <= true_profit <= profit["high"], (profit, true_profit)
    assert rate["low"] <= true_rate <= rate["high"], (rate, true_rate)


def test_the_second_model_earns_more_than_the_first(loop: dict[str, object]) -> None:
    """The last simulated week, answered by each model for the same requests and valued
    by the truth: the model learned from the served weeks' holdout earns more."""
    market = copy.deepcopy(loop["market"])  # serving a week moves the market on
    assert isinstance(market, ServedMarket)
    earned: dict[str, float] = {}

    def both(at: datetime, requests: pl.DataFrame) -> pl.DataFrame:
        for name in ("first", "second"):
            model = loop[name]
            assert isinstance(model, PromoRanker)
            offers = Served(model, name, None, None).answers(at, requests)
            chosen = requests.with_columns(pl.Series("offer_id", offers, dtype=pl.String))
            earned[name] = float(market.true_value(chosen).sum())
        return requests.with_columns(  # the week itself sends nothing
            pl.Series("exposure_id", [f"cmp{i}" for i in range(requests.height)]),
            pl.lit(None, pl.String).alias("offer_id"),
            pl.lit(None, pl.Float64).alias("propensity"),
        )

    market.serve_week(both)
    assert earned["second"] > earned["first"], earned
