"""The training config: one YAML file, typed, with `--set key.path=value` overrides.

Every section forbids unknown keys, so a typo fails before Ray starts, naming the key and
the keys allowed there. Sweep params can only be given in YAML (`--set` splits keys on
every dot).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import Field, model_validator

from recsys.config import ConfigError, StrictConfig, read_yaml_mapping
from recsys.data.synthetic import SyntheticConfig
from recsys.evaluation.holdout import HoldoutConfig
from recsys.locations import default_tracking_uri
from recsys.models.ranker import RankerConfig

PrimaryMetric = Literal[
    "policy_value_dr",
    "policy_value_snips",
    "policy_value_ips",
    "policy_lift_over_nothing_dr",
    "qini_uplift",
    "auc_p_redeem",
    "gain_at_10pct",
    "gain_at_20pct",
    "ece_p_redeem",
    "brier_p_redeem",
    "item_recall_mf",
    "item_ndcg_mf",
]
"""Metrics a promotion gate may use (all computed on the held-out data of every run)."""


class SyntheticSource(SyntheticConfig):
    """The synthetic marketplace a default run trains on (the demo's, at a larger size)."""

    buyers: int = Field(20_000, ge=10, description="number of buyers")
    seed: int = Field(1, ge=0)


class DataConfig(StrictConfig):
    """Where the training data comes from."""

    path: Path | None = Field(
        None,
        description="a dataset directory in the data contract's form; null: generate the "
        "synthetic marketplace described under `synthetic`",
    )
    synthetic: SyntheticSource = Field(
        default_factory=SyntheticSource,
        description="the synthetic marketplace to generate when `path` is null",
    )
    synthetic_dir: Path = Field(
        Path(".recsys/synthetic"),
        description="where generated marketplaces are kept, one directory per config",
    )
    margins_from_truth: bool = Field(
        True,
        description="on a synthetic marketplace, take seller margins and the send cost "
        "from its truth/ directory where model.seller_margins is empty and "
        "model.policy.send_cost is not given",
    )
    decision_logs: list[Path] = Field(
        default_factory=list,
        description="serving decision logs kept outside the dataset (each a serve config's "
        "decision_log_dir): their exposures and redemptions are added to the dataset's "
        "before validation; a decision in both is a duplicate exposure_id, an error",
    )


class EvaluationConfig(HoldoutConfig):
    """How runs are judged, which model is shipped and which one becomes champion."""

    refit: bool | None = Field(
        None,
        description="true: fit the model again on all the data after judging the held-out "
        "fit, and register that one; false: register the held-out fit itself (models "
        "fitted before the held-out waves, features brought up to the data's end), which "
        "saves about half the training work on large data; null: true below "
        "ray.large_data_from_events events, false from there. Without held-out waves the "
        "model is always fitted on all the data",
    )

    primary_metric: PrimaryMetric = Field(
        "policy_value_dr",
        description="the metric the promotion gate and the sweep optimize",
    )
    min_improvement: float = Field(
        0.0,
        ge=0,
        description="a challenger must beat the champion by more than this to replace it",
    )


class RayConfig(StrictConfig):
    """Where the stages run."""

    address: str | None = Field(
        None,
        description="a Ray cluster (e.g. ray://head:10001 or auto); null: RAY_ADDRESS if "
        "set, else a local Ray sized to this machine",
    )
    num_cpus: int | None = Field(None, ge=1, description="local Ray only; null: all cores")
    cpus_per_task: int = Field(
        1, ge=1, description="CPUs (and threads) each model-fitting task gets"
    )
    heavy_stages: int | None = Field(
        None,
        ge=1,
        description="at most this many memory-heavy stages (response and uplift fits, "
        "evaluation, feature refresh: each holds a few times the dataset) run at once; "
        "null: 1 from large_data_from_events events on, else as many as CPUs allow. "
        "1 keeps a large run on one machine to one such "
        "stage's memory, at little cost in time (the light stages fill the other CPUs). "
        "With a limit, every stage runs in a fresh worker process (freed memory is "
        "returned when it exits)",
    )
    fresh_workers_from_events: int | None = Field(
        1_000_000,
        ge=0,
        description="from this many events on, every stage runs in a worker process of "
        "its own that exits with it, so a finished stage's memory goes back to the "
        "machine instead of staying with an idle worker (a grocer's 10 million events: "
        "2.5 GB held by the finished item-ranking worker at the run's peak); below it, "
        "workers are reused (each new one costs a second or two of start-up). null: "
        "only with heavy_stages set",
    )

    large_data_from_events: int | None = Field(
        5_000_000,
        ge=0,
        description="from this many events on, the run takes the large-data settings "
        "where they are left null: ray.heavy_stages 1 and evaluation.refit false (at a "
        "million buyers, 21 million events, they take a run on 2 cores from 10.3 minutes "
        "and 11.1 GiB to 7.6 minutes and 8.0 GiB); null: never",
    )


class TrackingConfig(StrictConfig):
    """MLflow tracking and the model registry."""

    tracking_uri: str | None = Field(
        None,
        description="null: MLFLOW_TRACKING_URI if set, else a SQLite store in mlruns/",
    )
    experiment: str = "promo-recsys"
    registered_model: str = Field("promo-ranker", min_length=1)
    register_model: bool = Field(True, description="register the model and run the promotion gate")
    run_name: str | None = None


class SweepParam(StrictConfig):
    """A search space for one config value: exactly one of the fields."""

    choice: list[Any] | None = None
    grid: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = Field(None, description="[low, high), integers")

    @model_validator(mode="after")
    def _exactly_one(self) -> SweepParam:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of choice, grid, uniform, loguniform, randint "
                f"(got {', '.join(given) or 'none'})"
            )
        return self


class SweepConfig(StrictConfig):
    """Hyperparameter search with Ray Tune; the best trial's config is refit and registered."""

    params: dict[str, SweepParam] = Field(
        default_factory=dict,
        description="dotted config path under model. -> its search space",
    )
    num_samples: int = Field(4, ge=1, description="trials (per grid point with grid)")
    max_concurrent: int | None = Field(None, ge=1, description="null: one trial per CPU")
    seed: int = 0

    @model_validator(mode="after")
    def _paths_exist(self) -> SweepConfig:
        for path in self.params:
            if not path.startswith("model."):
                raise ValueError(f"sweep param '{path}': only model.* values can be searched")
            _check_path(RankerConfig, path.removeprefix("model.").split("."), path)
        return self


class TrainConfig(StrictConfig):
    """A whole training run (configs/default.yaml)."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: RankerConfig = Field(default_factory=RankerConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    sweep: SweepConfig | None = Field(None, description="present: search before training")

    def tracking_uri(self) -> str:
        """The MLflow tracking URI this run uses (config, then env, then embedded)."""
        uri = self.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return uri or default_tracking_uri()

    def ray_address(self) -> str | None:
        return self.ray.address or os.environ.get("RAY_ADDRESS") or None


def _check_path(annotation: Any, parts: list[str], full: str) -> None:
    """Raise unless `parts` is a path into the config type `annotation`."""
    if not parts:
        return
    members = [annotation, *get_args(annotation)]
    if any(m is dict or get_origin(m) is dict for m in members):
        return  # a mapping (seller_margins, budgets) takes any key
    model = next((m for m in members if hasattr(m, "model_fields")), None)
    if model is None:
        raise ValueError(f"sweep param '{full}': '{parts[0]}' is inside a plain value")
    fields = model.model_fields
    if parts[0] not in fields:
        raise ValueError(
            f"sweep param '{full}': unknown key '{parts[0]}'; allowed keys here: "
            f"{', '.join(sorted(fields))}"
        )
    _check_path(fields[parts[0]].annotation, parts[1:], full)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value); the value is read as YAML (1, 0.5, true,
    null, [1, 2] and strings all work)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: write it as key.path=value, e.g. model.mf.factors=32")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `data` with each `key.path=value` set (intermediate mappings created)."""
    out = _deep_copy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {text!r}: '{where}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    data: Path | None = None,
    decisions: list[Path] | None = None,
) -> TrainConfig:
    """Read a YAML config, apply `--set` overrides, `--data` and `--decisions`, validate.

    `data` replaces `data.path`; `decisions` are added after the config's
    `data.decision_logs`. Raises `ConfigError` naming any unknown key (and the allowed
    ones) or bad value.
    """
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        raw, source = read_yaml_mapping(path), str(path)
    raw = apply_overrides(raw, list(overrides or []))
    if data is not None or decisions:
        section = raw.setdefault("data", {})
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: 'data' must be a section")
        if data is not None:
            section["path"] = str(data)
        if decisions:
            logs = section.get("decision_logs") or []
            if not isinstance(logs, list):
                raise ConfigError(
                    f"{source}: 'data.decision_logs' must be a list of directories to add "
                    f"--decisions to (got {logs!r})"
                )
            section["decision_logs"] = [*logs, *(str(d) for d in decisions)]
    if overrides:
        source += " with --set " + " ".join(overrides)
    return TrainConfig.from_dict(raw, source=source)


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}
