"""`recsys train`, `recsys promote` and `recsys score --model models:/...` end to end.

The commands run as subprocesses, as a data scientist runs them, against a throwaway
SQLite tracking store. The runs build on each other (a champion, then a worse
challenger on a `ray start --head` cluster, then a manual promotion, then a sweep), so
the tests of this module run in file order on shared state.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
RECSYS = str(Path(sys.executable).with_name("recsys"))
RAY = str(Path(sys.executable).with_name("ray"))
MODEL = "promo-ranker"
SMALL = ["--set", "data.synthetic.buyers=2000", "--set", "evaluation.item_k=10"]

pytestmark = pytest.mark.slow


class Store:
    """A working directory with its own tracking store and synthetic-data cache."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"sqlite:///{root / 'm.db'}"
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.uri,
            "OPENBLAS_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
        }
        self.env.pop("RAY_ADDRESS", None)

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RECSYS, *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)

    def alias(self, alias: str) -> str:
        return str(self.client().get_model_version_by_alias(MODEL, alias).version)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def first_run(store: Store) -> subprocess.CompletedProcess[str]:
    done = store.run("train", "--config", str(REPO / "configs/default.yaml"), *SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_unknown_config_key_fails_before_any_work(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  mf:\n    factorz: 8\n")
    done = store.run("train", "--config", str(bad))
    assert done.returncode == 2
    assert "model.mf.factorz" in done.stderr
    assert "factors" in done.stderr  # the allowed keys are listed
    assert "ray:" not in done.stdout  # failed before Ray started
    assert not (store.root / ".recsys").exists()  # and before data was generated


def test_unknown_set_key_fails_naming_it(store: Store) -> None:
    done = store.run("train", "--set", "evaluation.primary_metrik=qini_uplift")
    assert done.returncode == 2
    assert "evaluation.primary_metrik" in done.stderr


def test_first_run_is_tracked_with_params_metrics_artifacts(
    store: Store, first_run: subprocess.CompletedProcess[str]
) -> None:
    client = store.client()
    experiment = client.get_experiment_by_name("promo-recsys")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id in first_run.stdout  # the run id is printed at the end
    assert run.data.params["model.mf.factors"] == "64"
    assert run.data.params["data.synthetic.buyers"] == "2000"
    assert int(run.data.params["data.rows.events"]) > 10_000
    assert len(run.data.params["data.digest"]) == 64
    metrics = run.data.metrics
    for name in (
        "policy_value_dr",
        "baseline_nothing_dr",
        "baseline_random_dr",
        "qini_uplift",
        "qini_response",
        "auc_p_redeem",
        "item_recall_mf",
        "item_recall_popularity",
    ):
        assert name in metrics, name
    assert 0.5 < metrics["auc_p_redeem"] <= 1.0
    assert metrics["item_recall_mf"] > metrics["item_recall_popularity"]
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "evaluation", "fit_report.txt", "data_summary.txt"} <= files
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    for name in ("gain_curve.png", "qini_curve.png", "calibration.png", "report.txt"):
        assert f"evaluation/{name}" in plots
    # The table of metrics against baselines closes the output.
    assert "learned policy" in first_run.stdout and "nothing" in first_run.stdout


def test_first_version_is_challenger_and_champion(
    store: Store, first_run: subprocess.CompletedProcess[str]
) -> None:
    assert store.alias("challenger") == "1"
    assert store.alias("champion") == "1"
    tags = store.client().get_model_version(MODEL, "1").tags
    assert tags["gate.promoted"] == "true"


def test_score_uses_the_registered_champion(
    store: Store, first_run: subprocess.CompletedProcess[str]
) -> None:
    data = next((store.root / ".recsys" / "synthetic").iterdir())
    pairs = pl.read_parquet(data / "truth" / "offers.parquet").select("buyer_id", "offer_id")
    pairs = pairs.head(200)
    pairs.write_csv(store.root / "pairs.csv")
    done = store.run(
        "score",
        "--model",
        f"models:/{MODEL}@champion",
        "--pairs",
        "pairs.csv",
        "--out",
        "scores.csv",
    )
    assert done.returncode == 0, done.stderr
    scores = pl.read_csv(store.root / "scores.csv")
    assert scores.select("buyer_id", "offer_id").equals(pairs)
    assert scores["p_redeem"].is_between(0, 1).all()
    assert scores["expected_value"].is_not_null().all()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ray_cluster(store: Store) -> object:
    """A separate Ray cluster from `ray start --head` (stopped by SIGTERM to --block)."""
    port = _free_port()
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=store.env,
        cwd=store.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        probe = subprocess.run(
            [RAY, "status", f"--address={address}"],
            env=store.env,
            capture_output=True,
            timeout=60,
        )
        if probe.returncode == 0:
            break
        if time.monotonic() > deadline or head.poll() is not None:
            head.kill()
            pytest.fail(f"ray start --head did not come up: {probe.stderr.decode()[-500:]}")
        time.sleep(2)
    yield address
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def test_a_run_that_does_not_beat_the_champion_on_a_ray_cluster_stays_challenger(
    store: Store, first_run: subprocess.CompletedProcess[str], ray_cluster: str
) -> None:
    """The first run's config again, on a cluster: runs are reproducible to the bit, so it
    ties the champion -- and a challenger must beat the champion to take its place."""
    done = store.run(
        "train",
        "--config",
        str(REPO / "configs/default.yaml"),
        *SMALL,
        env={"RAY_ADDRESS": ray_cluster},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ray: connecting to {ray_cluster}" in done.stdout
    assert "challenger only" in done.stdout
    assert store.alias("challenger") == "2"
    assert store.alias("champion") == "1"
    tags = store.client().get_model_version(MODEL, "2").tags
    assert tags["gate.promoted"] == "false"
    assert "same evaluation data" in tags["gate.reason"]
    assert float(tags["gate.challenger"]) == float(tags["gate.champion"])


def test_promote_overrides_the_gate(store: Store) -> None:
    if store.alias("challenger") != "2":
        pytest.skip("needs the run that stayed challenger")
    done = store.run("promote", "2", "--reason", "test")
    assert done.returncode == 0, done.stderr
    assert store.alias("champion") == "2"
    assert "was v1" in done.stdout
    missing = store.run("promote", "99")
    assert missing.returncode == 1
    assert "no version 99" in missing.stderr


def test_sweep_logs_trials_as_child_runs_and_registers_the_best(
    store: Store, first_run: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "sweep:\n  num_samples: 1\n  params:\n    model.mf.factors:\n      grid: [4, 64]\n"
    )
    done = store.run("train", "--config", str(sweep), *SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    client = store.client()
    experiment = client.get_experiment_by_name("promo-recsys")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if "sweep.trial" in r.data.tags]
    assert len(trials) == 2
    parents = {r.data.tags["mlflow.parentRunId"] for r in trials}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    best = parent.data.tags["sweep.best_trial"]
    by_factors = {r.data.params["model.mf.factors"]: r for r in trials}
    assert set(by_factors) == {"4", "64"}
    # The best trial by the primary metric is the one whose values were refit.
    winner = max(trials, key=lambda r: r.data.metrics["policy_value_dr"])
    assert winner.data.tags["sweep.trial"] == best
    assert parent.data.params["model.mf.factors"] == winner.data.params["model.mf.factors"]
    assert parent.data.tags["registered_version"] == "3"
