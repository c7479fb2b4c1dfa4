"""Training on serving decision logs: `data.decision_logs`, `recsys train --decisions`.

The dataset is the tiny hand-built one of `tests/data/test_loader.py` (exposures e1, e2,
e3); a log adds decisions d1 and d2, so the answers are known row by row.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import make_app
from recsys.config import ConfigError
from recsys.data import ContractError
from tests.data.test_loader import write_dataset
from tests.data.test_parts import exposure_rows, write_parts
from training.config import TrainConfig, load_config
from training.pipeline import (
    CONTRACT_FILES,
    check_data_paths,
    file_digest,
    load_stage,
)

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    out = tmp_path / "log"
    write_parts(out / "exposures", exposure_rows(["d1", "d2"]))
    return out


# --------------------------------------------------------------------------- the config key


def test_decision_logs_default_to_none_and_round_trip(tmp_path: Path) -> None:
    assert TrainConfig().data.decision_logs == []
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"decision_logs": ["logs/a", "/srv/b"]}}))
    cfg = load_config(path)
    assert cfg.data.decision_logs == [Path("logs/a"), Path("/srv/b")]
    plain = cfg.to_dict()
    assert plain["data"]["decision_logs"] == ["logs/a", "/srv/b"]
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain
    assert TrainConfig.from_dict(plain) == cfg


def test_decisions_are_added_after_the_configured_logs(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"decision_logs": ["a"], "path": "p"}}))
    cfg = load_config(path, ["data.margins_from_truth=false"], Path("q"), [Path("b"), Path("c")])
    assert cfg.data.decision_logs == [Path("a"), Path("b"), Path("c")]
    assert cfg.data.path == Path("q") and cfg.data.margins_from_truth is False
    assert load_config(None, decisions=[Path("b")]).data.decision_logs == [Path("b")]


def test_decision_logs_must_be_a_list_and_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'data\.decision_logs' must be a list"):
        load_config(None, ["data.decision_logs=one/dir"], decisions=[Path("b")])
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.decision_logs=one/dir"])
    assert "'data.decision_logs'" in str(info.value)
    with pytest.raises(ConfigError) as typo:
        load_config(None, ["data.decision_log=[a]"])
    assert "unknown key 'data.decision_log'" in str(typo.value)
    assert "decision_logs" in str(typo.value).split("allowed keys here: ")[1]


def test_a_missing_decision_log_is_named_before_any_work(tmp_path: Path, dataset: Path) -> None:
    cfg = load_config(None, data=dataset, decisions=[tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match=r"decision_logs: .*nowhere is not a directory"):
        check_data_paths(cfg.data)


# --------------------------------------------------------------------------- the load stage


def test_load_stage_adds_the_logs_rows_and_digests_them(dataset: Path, log: Path) -> None:
    _, plain_info = load_stage(str(dataset))
    merged, info = load_stage(str(dataset), [str(log)])
    assert merged.exposures is not None
    assert merged.exposures["exposure_id"].to_list() == ["e1", "e2", "e3", "d1", "d2"]
    assert (plain_info.rows["exposures"], info.rows["exposures"]) == (3, 5)
    assert info.digest == file_digest(dataset, [log]) != plain_info.digest
    assert f"decision logs added: {log}" in info.summary


def test_a_decision_in_the_dataset_and_in_a_log_stops_the_load(dataset: Path, log: Path) -> None:
    write_parts(dataset / "exposures", exposure_rows(["d2"]))
    with pytest.raises(ContractError) as info:
        load_stage(str(dataset), [str(log)])
    assert {v.file for v in info.value.violations} == {
        "exposures/part-001.parquet",
        f"{log}/exposures/part-001.parquet",
    }


def test_the_digest_of_plain_table_files_is_the_one_earlier_runs_logged(dataset: Path) -> None:
    # The digest before part directories existed: the gate compares runs by it.
    before = hashlib.sha256()
    for name in CONTRACT_FILES:
        for file in sorted(dataset.glob(f"{name}.*")):
            before.update(file.name.encode())
            before.update(file.read_bytes())
    assert file_digest(dataset) == before.hexdigest()


# --------------------------------------------------------------------------- the command


class _Outcome:
    def summary(self, primary_metric: str) -> str:
        return f"trained ({primary_metric})"


def test_train_decisions_option_reaches_the_run(
    monkeypatch: pytest.MonkeyPatch, dataset: Path, log: Path, tmp_path: Path
) -> None:
    seen: list[TrainConfig] = []

    def fake_train(config: TrainConfig, echo: Any = print) -> _Outcome:
        seen.append(config)
        return _Outcome()

    monkeypatch.setattr("training.run.train", fake_train)
    other = tmp_path / "other-log"
    result = runner.invoke(
        make_app(),
        ["train", "--data", str(dataset), "--decisions", str(log), "--decisions", str(other)],
    )
    assert result.exit_code == 0, result.output
    assert "trained (policy_value_dr)" in result.output
    assert seen[0].data.decision_logs == [log, other]
    assert seen[0].data.path == dataset


def test_train_with_a_missing_decision_log_fails_before_mlflow_and_ray(
    monkeypatch: pytest.MonkeyPatch, dataset: Path, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = runner.invoke(make_app(), ["train", "--data", str(dataset), "--decisions", "nowhere"])
    assert result.exit_code == 1
    assert "data.decision_logs: nowhere is not a directory" in result.output
    assert not (tmp_path / "mlruns").exists()


def test_an_invalid_dataset_is_reported_without_the_ray_traceback(
    monkeypatch: pytest.MonkeyPatch, dataset: Path
) -> None:
    class RayTaskContractError(ContractError):
        """What a `ContractError` raised in a Ray task looks like on the driver."""

        def __str__(self) -> str:
            return 'ray::load_stage()\n  File "pipeline.py", line 1\n' + super().__str__()

    def fake_train(config: TrainConfig, echo: Any = print) -> _Outcome:
        raise RayTaskContractError("exposures/part-001.parquet", "a duplicate exposure_id", n_bad=1)

    monkeypatch.setattr("training.run.train", fake_train)
    result = runner.invoke(make_app(), ["train", "--data", str(dataset)])
    assert result.exit_code == 1
    assert "exposures/part-001.parquet: 1 row has a duplicate exposure_id" in result.output
    assert "ray::" not in result.output and "File " not in result.output
