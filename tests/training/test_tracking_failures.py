"""MLflow unreachable during `recsys train`: a clear error, and `champion` never moves.

Unreachable from the start (a closed port, a server that never answers): the run fails
before any work, within a bounded time, naming the URI and the fix. Unreachable mid-run:
MLflow client calls are made to fail as a dead server makes them fail (the same
`MlflowException`) at each step after the run was created — logging the model,
registering, the gate, recording the outcome, moving the alias — and each time the
command fails naming the step while `champion` stays on the version it had. The pipeline
itself is replaced by a fixed result (no Ray here); the store is a throwaway SQLite one.
`tests/training/test_tracking_server.py` repeats the mid-run case with a real server.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from cli.main import make_app
from recsys.evaluation.holdout import HoldoutReport
from recsys.models.ranker import RankerConfig
from tests.data.test_loader import write_dataset
from training import tracking
from training.config import TrainConfig
from training.pipeline import DataInfo, PipelineResult
from training.registry import CHALLENGER, CHAMPION, champion_version, crown, register
from training.run import train
from training.tracking import TrackingError, check_reachable, evaluation_digest

METRIC = "auc_p_redeem"

pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated"  # inside MLflow's SQL store
)
_names = itertools.count()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection_refused(uri: str) -> MlflowException:
    """What MLflow's client raises when its server is gone (its message, shortened)."""
    return MlflowException(
        f"API request to {uri}/api/2.0/mlflow/registered-models/alias failed with exception "
        "HTTPConnectionPool(host='127.0.0.1'): Max retries exceeded (Caused by "
        "NewConnectionError('Failed to establish a new connection: [Errno 111] Connection "
        "refused'))"
    )


# --------------------------------------------------------------------------- from the start


def test_a_closed_port_fails_the_check_fast_naming_the_uri_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")  # MLflow's default: minutes
    uri = f"http://127.0.0.1:{closed_port()}"
    began = time.perf_counter()
    with pytest.raises(TrackingError) as info:
        check_reachable(uri, "promo-recsys")
    assert time.perf_counter() - began < 15  # bounded retries, not MLflow's minutes
    message = str(info.value)
    assert message.startswith(f"MLflow tracking server {uri} did not answer")
    assert "Connection refused" in message and "Nothing was trained" in message
    assert "Fix: start the tracking server" in message and "MLFLOW_TRACKING_URI" in message
    assert "Traceback" not in message
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"  # the user's setting is back
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_a_server_that_never_answers_fails_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracking, "REACH_TIMEOUT_S", 1)
    monkeypatch.setattr(tracking, "REACH_RETRIES", 1)
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        began = time.perf_counter()
        with pytest.raises(TrackingError, match="did not answer"):
            check_reachable(uri, "promo-recsys")
        assert time.perf_counter() - began < 8  # two attempts of one second, one backoff


def test_local_stores_are_not_checked(tmp_path: Path) -> None:
    check_reachable(f"sqlite:///{tmp_path / 'store' / 'm.db'}", "promo-recsys")
    assert not (tmp_path / "store").exists()


def test_train_with_an_unreachable_server_stops_before_the_data_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the data was loaded before the tracking server was checked")

    monkeypatch.setattr("training.run.load_data", never)
    monkeypatch.setattr(tracking, "REACH_RETRIES", 0)  # the bound is tested above
    uri = f"http://127.0.0.1:{closed_port()}"
    config = TrainConfig.from_dict(
        {"data": {"path": str(write_dataset(tmp_path / "ds"))}, "tracking": {"tracking_uri": uri}}
    )
    with pytest.raises(TrackingError, match=f"MLflow tracking server {uri} did not answer"):
        train(config, echo=lambda line: None)


def test_recsys_train_with_an_unreachable_server_exits_1_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tracking, "REACH_RETRIES", 0)
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    data = write_dataset(tmp_path / "ds")
    result = CliRunner().invoke(make_app(), ["train", "--data", str(data)])
    assert result.exit_code == 1, result.output
    assert f"MLflow tracking server {uri} did not answer" in result.output
    assert "Fix: start the tracking server" in result.output
    assert "Traceback" not in result.output and "ray:" not in result.output
    assert not (tmp_path / "mlruns").exists()


# --------------------------------------------------------------------------- mid-run


class FakeRanker:
    """Stands in for a fitted PromoRanker: saves its config, as the real one does."""

    def __init__(self, config: RankerConfig) -> None:
        self.config = config
        self.report_ = self

    def format(self) -> str:
        return "fit report"

    def save(self, path: Path) -> Path:
        path.mkdir(parents=True)
        (path / "ranker.json").write_text(json.dumps({"config": self.config.to_dict()}))
        return path


def fake_result(value: float, data: Path) -> PipelineResult:
    """What the pipeline would return: a ranker and its held-out `METRIC` = `value`."""
    model = RankerConfig()
    return PipelineResult(
        ranker=FakeRanker(model),  # type: ignore[arg-type]
        model_config=model,
        evaluation=HoldoutReport(metrics={METRIC: value}),
        data=DataInfo(path=str(data), digest="d" * 64, rows={"events": 5}, summary="5 events"),
    )


@dataclass
class Setup:
    """A store whose model `name` has champion v1 (metric 0.6), and a config to train
    a better model (0.9) into it: without a fault, the gate would make it champion."""

    uri: str
    name: str
    config: TrainConfig

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)

    def champion(self) -> str | None:
        return champion_version(self.client(), self.name)


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, new_store: Callable[[Path], str]
) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("tracking")
    uri = new_store(root / "mlflow.db")
    MlflowClient(tracking_uri=uri).create_experiment(
        "promo-recsys", artifact_location=(root / "artifacts").as_uri()
    )
    return uri, write_dataset(root / "ds")


@pytest.fixture
def setup(
    store: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Setup]:
    uri, data = store
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    name = f"ranker-{next(_names)}"
    config = TrainConfig.from_dict(
        {
            "data": {"path": str(data)},
            "tracking": {"tracking_uri": uri, "registered_model": name},
            "evaluation": {"primary_metric": METRIC},
        }
    )
    # The champion: a run judged on the same evaluation data, its metric logged.
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("promo-recsys")
    assert experiment is not None
    run = client.create_run(experiment.experiment_id)
    digest = evaluation_digest("d" * 64, fake_result(0.6, data), config)
    client.set_tag(run.info.run_id, "evaluation_digest", digest)
    client.log_metric(run.info.run_id, METRIC, 0.6)
    client.set_terminated(run.info.run_id)
    version = register(client, name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    crown(client, name, version)

    def pipeline(config: TrainConfig, echo: Any, loaded: Any = None) -> PipelineResult:
        return fake_result(0.9, data)

    def no_reevaluation(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the champion was judged on the same data: no re-evaluation")

    monkeypatch.setattr("training.run.run_pipeline", pipeline)
    monkeypatch.setattr("training.run.evaluate_config", no_reevaluation)
    yield Setup(uri, name, config)
    left = mlflow.active_run()
    if left is not None:
        mlflow.end_run()
    assert left is None, "a failed run must not stay active in this process"


class Fault:
    """Makes an MLflow client method fail as a dead server makes it, when `when` says so."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        owner: Any,
        method: str,
        uri: str,
        when: Callable[..., bool] = lambda *args, **kwargs: True,
    ) -> None:
        self.calls = 0
        self.active = True
        real = getattr(owner, method)

        def failing(*args: Any, **kwargs: Any) -> Any:
            if self.active and when(*args, **kwargs):
                self.calls += 1
                raise connection_refused(uri)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, method, failing)


def _fails(setup: Setup, fault: Fault, step: str) -> str:
    """Train with `fault` on; the message. The champion must still be v1."""
    with pytest.raises(TrackingError) as info:
        train(setup.config, echo=lambda line: None)
    fault.active = False
    assert fault.calls >= 1
    message = str(info.value)
    assert message.startswith(f"MLflow tracking at {setup.uri} failed while {step}")
    assert "Connection refused" in message
    assert setup.champion() == "1"
    return message


KEPT = "The champion alias was not moved (it still points to v1)"


def test_without_a_fault_the_better_model_becomes_champion_as_the_last_step(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the runs below fail only because of their fault."""
    calls: list[str] = []
    for method in ("set_tag", "log_metric", "set_model_version_tag", "set_registered_model_alias"):
        real = getattr(MlflowClient, method)

        def record(*args: Any, _real: Any = real, _method: str = method, **kwargs: Any) -> Any:
            calls.append(f"{_method}{tuple(str(a) for a in args[1:])}")
            return _real(*args, **kwargs)

        monkeypatch.setattr(MlflowClient, method, record)
    outcome = train(setup.config, echo=lambda line: None)
    assert outcome.version == "2" and outcome.decision is not None and outcome.decision.promoted
    assert setup.champion() == "2"
    assert calls[-1] == f"set_registered_model_alias{(setup.name, CHAMPION, '2')}"
    moves = [call for call in calls if call.startswith("set_registered_model_alias")]
    assert moves == [  # challenger when registered; champion once, after all else
        f"set_registered_model_alias{(setup.name, CHALLENGER, '2')}",
        f"set_registered_model_alias{(setup.name, CHAMPION, '2')}",
    ]
    run = setup.client().get_run(outcome.run_id)
    assert run.data.tags["registered_version"] == "2" and "seconds.total" in run.data.metrics


def test_server_lost_while_logging_the_model(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    fault = Fault(monkeypatch, mlflow.pyfunc, "log_model", setup.uri)
    message = _fails(setup, fault, "logging the run")
    assert KEPT in message and "Fix: start the tracking server" in message
    assert setup.client().search_model_versions(f"name='{setup.name}'")[0].version in (1, "1")


def test_server_lost_while_registering(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    fault = Fault(monkeypatch, MlflowClient, "create_model_version", setup.uri)
    message = _fails(setup, fault, "registering the model of run")
    assert KEPT in message
    assert len(setup.client().search_model_versions(f"name='{setup.name}'")) == 1


def test_server_lost_while_the_gate_tags_the_version(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = Fault(monkeypatch, MlflowClient, "set_model_version_tag", setup.uri)
    message = _fails(setup, fault, "running the promotion gate for v2")
    assert KEPT in message
    assert setup.client().get_model_version_by_alias(setup.name, CHALLENGER).version in (2, "2")


def test_a_failed_champion_lookup_is_not_taken_for_no_champion(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry error while the gate reads the champion must not look like "there is
    no champion" (which would promote without a comparison)."""
    registered: list[str] = []
    real = MlflowClient.create_model_version

    def create(*args: Any, **kwargs: Any) -> Any:
        registered.append("yes")
        return real(*args, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_model_version", create)
    fault = Fault(
        monkeypatch,
        MlflowClient,
        "get_model_version_by_alias",
        setup.uri,
        when=lambda *args, **kwargs: bool(registered),  # only once the gate runs
    )
    message = _fails(setup, fault, "running the promotion gate for v2")
    assert KEPT in message


def test_server_lost_while_recording_the_outcome(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = Fault(monkeypatch, MlflowClient, "log_metric", setup.uri)
    message = _fails(setup, fault, "recording the outcome on run")
    assert KEPT in message


def test_server_lost_while_moving_the_alias(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    fault = Fault(
        monkeypatch,
        MlflowClient,
        "set_registered_model_alias",
        setup.uri,
        when=lambda client, name, alias, version: alias == CHAMPION,
    )
    message = _fails(setup, fault, "moving the champion alias to v2")
    assert "Everything else was recorded; champion should still point to v1" in message
    assert "`recsys promote 2` finishes the promotion" in message


def test_the_cli_reports_a_mid_run_failure_without_a_traceback(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    Fault(monkeypatch, MlflowClient, "create_model_version", setup.uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", setup.uri)
    args = ["train", "--data", str(setup.config.data.path), "--set"]
    args += [
        f"tracking.registered_model={setup.name}",
        "--set",
        f"evaluation.primary_metric={METRIC}",
    ]
    result = CliRunner().invoke(make_app(), args)
    assert result.exit_code == 1, result.output
    assert f"MLflow tracking at {setup.uri} failed while registering the model" in result.output
    assert KEPT in result.output and "Traceback" not in result.output
    assert setup.champion() == "1"
