"""A real MLflow tracking server that dies mid-run: the run fails, `champion` stays put.

The test starts `mlflow server` on loopback (SQLite store, artifacts served over HTTP, as
in production), trains a champion through it, then stops the server at the worst moments
of a better model's run — just before registration, and just before `champion` moves —
and starts it again on the same store to look. The pipeline is replaced by a fixed result
(`test_tracking_failures`); everything MLflow does goes over HTTP. Takes about a minute
(three server starts), so it runs with `make test-reliability`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.data.test_loader import write_dataset
from tests.training.test_tracking_failures import METRIC, closed_port, fake_result
from training.config import TrainConfig
from training.pipeline import PipelineResult
from training.registry import CHALLENGER, champion_version, promote
from training.run import train
from training.tracking import TrackingError

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
NAME = "promo-ranker"

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]


class Server:
    """`mlflow server` on a loopback port over one SQLite store, stoppable and restartable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = closed_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                MLFLOW,
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers in a group of their own, stopped together
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server did not start on {self.uri}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_the_server_dying_mid_run_never_moves_champion(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dead server fails a call within seconds, not MLflow's default minutes of retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    data = write_dataset(tmp_path / "ds")
    config = TrainConfig.from_dict(
        {
            "data": {"path": str(data)},
            "tracking": {"tracking_uri": server.uri, "registered_model": NAME},
            "evaluation": {"primary_metric": METRIC},
        }
    )
    value = {"now": 0.6}

    def pipeline(config: TrainConfig, echo: Any, loaded: Any = None) -> PipelineResult:
        return fake_result(value["now"], data)

    monkeypatch.setattr("training.run.run_pipeline", pipeline)
    quiet = {"echo": lambda line: None}

    # 1. A champion, v1, trained through the server (its model uploaded over HTTP).
    first = train(config, **quiet)
    assert first.version == "1" and champion_version(server.client(), NAME) == "1"

    # 2. A better model; the server dies once its run is logged, before registration.
    value["now"] = 0.9
    from training import run

    real_register = run.register

    def register_after_death(*args: Any, **kwargs: Any) -> str:
        server.stop()
        return real_register(*args, **kwargs)

    monkeypatch.setattr("training.run.register", register_after_death)
    began = time.perf_counter()
    with pytest.raises(TrackingError) as info:
        train(config, **quiet)
    assert time.perf_counter() - began < 90
    message = str(info.value)
    assert message.startswith(f"MLflow tracking at {server.uri} failed while registering")
    assert "The champion alias was not moved (it still points to v1)" in message
    server.start()
    client = server.client()
    assert champion_version(client, NAME) == "1"
    assert [str(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == ["1"]
    monkeypatch.setattr("training.run.register", real_register)

    # 3. Again; this time the server dies just before champion moves (the last step).
    real_crown = run.crown

    def crown_after_death(*args: Any, **kwargs: Any) -> None:
        server.stop()
        real_crown(*args, **kwargs)

    monkeypatch.setattr("training.run.crown", crown_after_death)
    with pytest.raises(TrackingError) as info:
        train(config, **quiet)
    message = str(info.value)
    assert message.startswith(f"MLflow tracking at {server.uri} failed while moving the champ")
    assert "champion should still point to v1" in message and "recsys promote 2" in message
    server.start()
    client = server.client()
    assert champion_version(client, NAME) == "1"
    assert str(client.get_model_version_by_alias(NAME, CHALLENGER).version) == "2"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["gate.promoted"] == "true"  # the gate's decision was recorded before
    # The command the message names finishes the promotion.
    assert promote(client, NAME, "2", "server was down") == "1"
    assert champion_version(client, NAME) == "2"
