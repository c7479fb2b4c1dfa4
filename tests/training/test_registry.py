"""The model registry and the promotion gate, against a throwaway SQLite MLflow store.

The store is created once per module (creating its tables takes seconds); every test
registers its own model name, so the tests do not depend on each other.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from recsys.models.ranker import RankerConfig
from training.registry import (
    CHALLENGER,
    CHAMPION,
    champion_config,
    champion_version,
    decide,
    gate,
    promote,
    register,
    resolve_model,
)

METRIC = "policy_value_dr"

pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated"  # inside MLflow's SQL store
)
_names = itertools.count()


@dataclass
class Store:
    root: Path
    uri: str
    client: MlflowClient
    experiment: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'm.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.chdir(root)
        with _use_tracking_uri(uri):  # restores the previous URI (and its env var) after
            client = MlflowClient(tracking_uri=uri)
            experiment = client.create_experiment(
                "registry-tests", artifact_location=(root / "artifacts").as_uri()
            )
            yield Store(root, uri, client, experiment)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing a test does lands in the repository


@pytest.fixture
def name() -> str:
    return f"ranker-{next(_names)}"


def log_model(
    store: Store,
    config: RankerConfig | None = None,
    digest: str | None = None,
    metrics: dict[str, float] | None = None,
    with_ranker: bool = True,
) -> tuple[str, str]:
    """A run holding a fake pyfunc model directory (only ranker.json); (run id, model URI)."""
    run = store.client.create_run(store.experiment)
    run_id = run.info.run_id
    model = store.root / "models" / run_id
    inner = model / "artifacts" / "ranker"
    inner.mkdir(parents=True)
    if with_ranker:
        meta = {"config": (config or RankerConfig()).to_dict()}
        (inner / "ranker.json").write_text(json.dumps(meta))
    else:
        (inner / "other.txt").write_text("not a ranker")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifacts(str(model), "model")
        if digest is not None:
            mlflow.set_tag("evaluation_digest", digest)
        for key, value in (metrics or {}).items():
            mlflow.log_metric(key, value)
    return run_id, f"runs:/{run_id}/model"


def new_version(store: Store, name: str, **kwargs: object) -> str:
    run_id, uri = log_model(store, **kwargs)  # type: ignore[arg-type]
    return register(store.client, name, uri, run_id)


def alias(store: Store, name: str, which: str) -> str:
    return str(store.client.get_model_version_by_alias(name, which).version)


def tags(store: Store, name: str, version: str) -> dict[str, str]:
    return dict(store.client.get_model_version(name, version).tags)


def never(config: RankerConfig) -> float:
    raise AssertionError("reevaluate must not be called")


class Reevaluate:
    """A fake re-evaluation: records the configs it was given, answers `value`."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.configs: list[RankerConfig] = []

    def __call__(self, config: RankerConfig) -> float:
        self.configs.append(config)
        return self.value


# --------------------------------------------------------------------------- decide


def test_decide_higher_is_better() -> None:
    win = decide(METRIC, 1.2, 1.0)
    assert win.promoted and (win.metric, win.challenger, win.champion) == (METRIC, 1.2, 1.0)
    assert "beats" in win.reason and "higher is better" in win.reason
    lose = decide(METRIC, 0.9, 1.0)
    assert not lose.promoted and "does not beat" in lose.reason


@pytest.mark.parametrize("metric", ["ece_p_redeem", "brier_p_redeem"])
def test_decide_lower_is_better(metric: str) -> None:
    win = decide(metric, 0.02, 0.05)
    assert win.promoted and "lower is better" in win.reason
    assert not decide(metric, 0.05, 0.02).promoted


@pytest.mark.parametrize("metric", [METRIC, "ece_p_redeem"])
def test_decide_equal_values_are_not_promoted(metric: str) -> None:
    assert not decide(metric, 0.25, 0.25).promoted
    assert not decide(metric, 0.25, 0.25, min_improvement=0.0).promoted


def test_decide_needs_more_than_the_min_improvement() -> None:
    # margins here are exact in binary floating point
    assert not decide(METRIC, 1.25, 1.0, min_improvement=0.25).promoted  # equal to it
    assert not decide(METRIC, 1.125, 1.0, min_improvement=0.25).promoted
    assert decide(METRIC, 1.5, 1.0, min_improvement=0.25).promoted
    assert not decide("ece_p_redeem", 0.5, 0.75, min_improvement=0.25).promoted
    assert decide("ece_p_redeem", 0.25, 0.75, min_improvement=0.25).promoted
    assert "margin > 0.25" in decide(METRIC, 1.5, 1.0, min_improvement=0.25).reason


def test_decide_without_champion_promotes() -> None:
    decision = decide(METRIC, -3.0, None, min_improvement=10.0)
    assert decision.promoted and decision.champion is None
    assert decision.reason == "there was no champion"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_decide_non_finite_values(bad: float) -> None:
    assert not decide(METRIC, bad, 1.0).promoted
    assert not decide("ece_p_redeem", bad, 1.0).promoted
    assert "challenger policy_value_dr is not finite" in decide(METRIC, bad, 1.0).reason
    assert decide(METRIC, 1.0, bad).promoted  # a broken champion is replaced
    assert "champion policy_value_dr is not finite" in decide(METRIC, 1.0, bad).reason
    assert not decide(METRIC, bad, bad).promoted


# --------------------------------------------------------------------------- register


def test_register_creates_the_model_and_aliases_challenger(store: Store, name: str) -> None:
    client = store.client
    run_id, uri = log_model(store)
    assert register(client, name, uri, run_id) == "1"
    assert client.get_registered_model(name).name == name
    assert alias(store, name, CHALLENGER) == "1"
    assert champion_version(client, name) is None  # registering never makes a champion
    version = client.get_model_version(name, "1")
    assert version.run_id == run_id

    second = new_version(store, name)
    assert second == "2"
    assert alias(store, name, CHALLENGER) == "2"  # the alias moves to the new version
    assert len(client.search_model_versions(f"name='{name}'")) == 2


def test_champion_version_is_none_without_model_or_alias(store: Store, name: str) -> None:
    assert champion_version(store.client, name) is None
    new_version(store, name)
    assert champion_version(store.client, name) is None


# --------------------------------------------------------------------------- gate


def test_gate_without_champion_promotes_and_tags_the_version(store: Store, name: str) -> None:
    version = new_version(store, name, digest="d1", metrics={METRIC: 0.5})
    said: list[str] = []
    decision = gate(store.client, name, version, METRIC, 0.5, "d1", 0.0, never, said.append)
    assert decision.promoted and decision.champion is None
    assert alias(store, name, CHAMPION) == version
    assert alias(store, name, CHALLENGER) == version
    written = {k: v for k, v in tags(store, name, version).items() if k.startswith("gate.")}
    assert written == {
        "gate.metric": METRIC,
        "gate.challenger": "0.5",
        "gate.champion": "none",
        "gate.champion_version": "none",
        "gate.promoted": "true",
        "gate.reason": "there was no champion",
    }
    assert said == []


def _with_champion(store: Store, name: str, value: float, digest: str, **kwargs: object) -> str:
    version = new_version(store, name, digest=digest, metrics={METRIC: value}, **kwargs)
    assert gate(store.client, name, version, METRIC, value, digest, 0.0, never).promoted
    return version


def test_gate_uses_the_champions_logged_metric_on_the_same_evaluation(
    store: Store, name: str
) -> None:
    champion = _with_champion(store, name, 1.0, "same")

    worse = new_version(store, name, digest="same", metrics={METRIC: 0.8})
    decision = gate(store.client, name, worse, METRIC, 0.8, "same", 0.0, never)
    assert not decision.promoted and decision.champion == 1.0
    assert alias(store, name, CHAMPION) == champion  # unchanged
    assert alias(store, name, CHALLENGER) == worse
    written = tags(store, name, worse)
    assert written["gate.promoted"] == "false"
    assert (written["gate.champion"], written["gate.champion_version"]) == ("1", champion)
    assert "logged policy_value_dr (same evaluation data)" in written["gate.reason"]

    equal = new_version(store, name, digest="same", metrics={METRIC: 1.0})
    assert not gate(store.client, name, equal, METRIC, 1.0, "same", 0.0, never).promoted

    better = new_version(store, name, digest="same", metrics={METRIC: 1.5})
    decision = gate(store.client, name, better, METRIC, 1.5, "same", 0.0, never)
    assert decision.promoted and decision.champion == 1.0
    assert alias(store, name, CHAMPION) == better
    assert tags(store, name, better)["gate.promoted"] == "true"


def test_gate_min_improvement_keeps_a_slightly_better_challenger_out(
    store: Store, name: str
) -> None:
    champion = _with_champion(store, name, 1.0, "same")
    slightly = new_version(store, name, digest="same")
    assert not gate(store.client, name, slightly, METRIC, 1.125, "same", 0.25, never).promoted
    assert alias(store, name, CHAMPION) == champion


def test_gate_lower_is_better_metric(store: Store, name: str) -> None:
    first = new_version(store, name, digest="same", metrics={"ece_p_redeem": 0.05})
    assert gate(store.client, name, first, "ece_p_redeem", 0.05, "same", 0.0, never).promoted
    higher = new_version(store, name, digest="same")
    assert not gate(store.client, name, higher, "ece_p_redeem", 0.08, "same", 0.0, never).promoted
    lower = new_version(store, name, digest="same")
    assert gate(store.client, name, lower, "ece_p_redeem", 0.01, "same", 0.0, never).promoted
    assert alias(store, name, CHAMPION) == lower


def test_gate_reevaluates_the_champion_config_on_other_evaluation_data(
    store: Store, name: str
) -> None:
    config = RankerConfig.from_dict({"mf": {"factors": 7}, "seller_margins": {"s1": 0.3}})
    champion = _with_champion(store, name, 9.0, "old-data", config=config)

    challenger = new_version(store, name, digest="new-data")
    judge = Reevaluate(2.0)
    said: list[str] = []
    decision = gate(
        store.client, name, challenger, METRIC, 1.5, "new-data", 0.0, judge, said.append
    )
    assert judge.configs == [config]  # read back from the champion's saved ranker
    assert not decision.promoted and decision.champion == 2.0  # not the logged 9.0
    assert alias(store, name, CHAMPION) == champion
    written = tags(store, name, challenger)
    assert written["gate.champion"] == "2"
    assert "refit and judged on this run's held-out data" in written["gate.reason"]
    assert said == [
        f"gate: re-evaluating champion v{champion}'s config on this run's held-out data"
    ]

    judge = Reevaluate(1.0)
    decision = gate(
        store.client, name, challenger, METRIC, 1.5, "new-data", 0.0, judge, said.append
    )
    assert len(judge.configs) == 1
    assert decision.promoted and alias(store, name, CHAMPION) == challenger


def test_gate_reevaluates_when_the_champion_run_lacks_the_metric(store: Store, name: str) -> None:
    champion = new_version(store, name, digest="same", metrics={"auc_p_redeem": 0.7})
    promote(store.client, name, champion)
    challenger = new_version(store, name, digest="same")
    judge = Reevaluate(3.0)
    said: list[str] = []
    decision = gate(store.client, name, challenger, METRIC, 2.0, "same", 0.0, judge, said.append)
    assert len(judge.configs) == 1 and decision.champion == 3.0 and not decision.promoted


def test_champion_config_reads_the_saved_ranker(store: Store, name: str) -> None:
    config = RankerConfig.from_dict({"learning": {"z": 2.0}})
    _with_champion(store, name, 1.0, "d", config=config)
    assert champion_config(store.client, name) == config


# --------------------------------------------------------------------------- promote


def test_promote_moves_champion_and_returns_the_previous(store: Store, name: str) -> None:
    first = _with_champion(store, name, 1.0, "d")
    second = new_version(store, name)
    assert promote(store.client, name, second, "ops asked") == first
    assert alias(store, name, CHAMPION) == second
    written = tags(store, name, second)
    assert written["gate.promoted"] == "manual"
    assert written["gate.reason"] == f"promoted by hand over v{first}: ops asked"
    assert promote(store.client, name, first) == second  # and back
    assert alias(store, name, CHAMPION) == first


def test_promote_without_a_champion_returns_none(store: Store, name: str) -> None:
    version = new_version(store, name)
    assert promote(store.client, name, version, "first") is None
    assert alias(store, name, CHAMPION) == version
    assert tags(store, name, version)["gate.reason"] == "promoted by hand over vnone: first"


def test_promote_unknown_version_names_it(store: Store, name: str) -> None:
    version = new_version(store, name)
    promote(store.client, name, version)
    with pytest.raises(ValueError, match=f"{name} has no version 42"):
        promote(store.client, name, "42")
    assert alias(store, name, CHAMPION) == version  # nothing moved
    with pytest.raises(ValueError, match="no-such-model has no version 1"):
        promote(store.client, "no-such-model", "1")


# --------------------------------------------------------------------------- resolve_model


@pytest.mark.parametrize("plain", ["models/ranker", "/abs/path/ranker", "ranker:v2"])
def test_resolve_model_returns_a_plain_path_unchanged(plain: str, tmp_path: Path) -> None:
    assert resolve_model(plain, tmp_path / "dst") == Path(plain)
    assert not (tmp_path / "dst").exists()  # nothing fetched


def test_resolve_model_downloads_the_champion(store: Store, name: str, tmp_path: Path) -> None:
    config = RankerConfig.from_dict({"mf": {"factors": 5}})
    version = _with_champion(store, name, 1.0, "d", config=config)
    new_version(store, name)  # a later challenger must not be what @champion fetches

    local = resolve_model(f"models:/{name}@{CHAMPION}", tmp_path / "dst")
    assert local.parts[-2:] == ("artifacts", "ranker")
    assert local.is_relative_to(tmp_path / "dst")
    meta = json.loads((local / "ranker.json").read_text())
    assert RankerConfig.from_dict(meta["config"]) == config

    by_number = resolve_model(f"models:/{name}/{version}", tmp_path / "v")
    assert json.loads((by_number / "ranker.json").read_text()) == meta
    run_id = store.client.get_model_version(name, version).run_id
    by_run = resolve_model(f"runs:/{run_id}/model", tmp_path / "r")
    assert json.loads((by_run / "ranker.json").read_text()) == meta


def test_resolve_model_unknown_alias_is_file_not_found(
    store: Store, name: str, tmp_path: Path
) -> None:
    new_version(store, name)
    with pytest.raises(FileNotFoundError, match=f"cannot fetch models:/{name}@{CHAMPION}"):
        resolve_model(f"models:/{name}@{CHAMPION}", tmp_path / "dst")


def test_resolve_model_that_is_not_a_ranker_is_file_not_found(
    store: Store, name: str, tmp_path: Path
) -> None:
    version = new_version(store, name, with_ranker=False)
    with pytest.raises(FileNotFoundError, match="is not a promo-ranker model"):
        resolve_model(f"models:/{name}/{version}", tmp_path / "dst")


@pytest.mark.parametrize(
    ("uri", "model_id"),
    [
        ("models:/m-0123abcd", "m-0123abcd"),  # what logging a model returns (MLflow 3)
        ("runs:/r1/model", None),
        ("models:/promo-ranker/3", None),
        ("models:/promo-ranker@champion", None),
    ],
)
def test_registration_names_the_logged_model_a_server_needs(uri: str, model_id: str | None) -> None:
    from training.registry import _logged_model_id

    assert _logged_model_id(uri) == model_id


def test_a_challenger_its_own_evaluation_rates_below_a_blanket_is_refused() -> None:
    """The floor: below the best blanket by more than the paired standard error, never
    champion -- with or without a champion to beat; within it, the usual comparison."""
    floor = ("blanket_percent_off", 1.517, 0.05)
    refused = decide("policy_value_dr", 1.384, None, floor=floor)
    assert not refused.promoted and "below blanket_percent_off" in refused.reason
    assert not decide("policy_value_dr", 1.384, 1.0, floor=floor).promoted
    close = decide("policy_value_dr", 1.48, 1.0, floor=floor)  # within one SE: compared
    assert close.promoted and "beats champion" in close.reason
    # A metric where lower is better has no blanket floor.
    assert decide("ece_p_redeem", 0.01, 0.02, floor=floor).promoted
