"""The loop through the real training command: the served decision log of
`tests/test_loop.py`, fed to `recsys train --data DIR --decisions LOG` (Ray, MLflow, the
promotion gate), gives a registered model that learned from the holdout, and that model
is served for one more simulated week, where it earns more by the truth than the model
before it would have on the same requests.

A reliability test (`make test-reliability`): the command starts Ray and trains twice
(held-out and full fits), about 100 s on two shared cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import mlflow
import polars as pl
import pytest

from recsys.models.ranker import PromoRanker
from recsys.policy.holdout import HoldoutConfig
from tests.test_loop import SERVED, SHARE, Served, run_loop
from training.cli import resolve_model

pytestmark = pytest.mark.reliability

RECSYS = str(Path(sys.executable).with_name("recsys"))


def test_recsys_train_learns_from_the_served_log_and_its_model_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = run_loop(tmp_path / "loop", SHARE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "OPENBLAS_NUM_THREADS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [RECSYS, "train", "--data", str(loop["data"]), "--decisions", str(loop["log"])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    # The policy was learned from the served decisions (the holdout's control rows).
    assert "cross-validated value per decision" in out, out[-4000:]
    assert "registered version 1" in out

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = mlflow.get_tracking_uri()
    try:
        ranker = PromoRanker.load(resolve_model("models:/promo-ranker/1", tmp_path / "scratch"))
    finally:
        mlflow.set_tracking_uri(before)  # the resolver connects this process to the store
    assert ranker.learner_ is not None and ranker.learner_.learned
    market = loop["market"]
    served = Served(
        ranker,
        "promo-ranker/1",
        tmp_path / "next_log",
        HoldoutConfig(share=SHARE, period_days=7 * (SERVED + 1)),
    )
    first = loop["first"]
    assert isinstance(first, PromoRanker)
    first_earned: list[float] = []

    def decide(at: datetime, requests: pl.DataFrame) -> pl.DataFrame:
        """The registered model decides; the model before it is valued on the same
        requests by the truth (no holdout: its share of nothing only costs the new one)."""
        offers = Served(first, "first", None, None).answers(at, requests)
        chosen = requests.with_columns(pl.Series("offer_id", offers, dtype=pl.String))
        first_earned.append(float(market.true_value(chosen).sum()))  # type: ignore[attr-defined]
        return served.decide(at, requests)

    week = market.serve_week(decide)  # type: ignore[attr-defined]
    assert week.height > 1000
    assert set(week["policy"]) == {"promo-ranker/1"}
    assert week.filter(pl.col("arm") == "control")["offer_id"].null_count() > 0
    # The model `recsys train` learned from the loop earns more than the one before it.
    assert float(week["incremental_profit"].sum()) > sum(first_earned), first_earned
