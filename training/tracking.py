"""MLflow tracking of a training run: params, data digest, metrics, artifacts, model.

All MLflow calls of training live here and in `registry`, in named functions tests can
call against a throwaway SQLite store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recsys.locations import RANKER_ARTIFACT, default_artifact_location, default_tracking_uri
from recsys.models.ranker import PromoRanker
from training.config import TrainConfig
from training.pipeline import PipelineResult
from training.plots import evaluation_figures
from training.pyfunc import RankerModel, signature

MODEL_NAME_IN_RUN = "model"
"""The logged model's name within its run (`runs:/<id>/model`)."""

MONEY_TERMS = (
    "seller_margins",
    "policy.margin_default",
    "policy.send_cost",
    "policy.default_shipping_cost",
    "response.horizon_days",
)
"""Model-config values that define the realized reward, not the model's choices."""


REACH_RETRIES = 2
"""Retries of the up-front reachability check (MLflow's own default is 7, minutes of
backoff): a server that is down fails the run within seconds."""

REACH_TIMEOUT_S = 10
"""Seconds the reachability check waits for each answer (MLflow's default is 120)."""

FIX_URI = (
    "start the tracking server (or correct its address), or point MLFLOW_TRACKING_URI "
    "(or tracking.tracking_uri in the config) at one that answers; unset both to use the "
    "embedded store sqlite:///mlruns/mlflow.db"
)


def is_tracking_failure(exc: BaseException) -> bool:
    """Whether `exc` is what MLflow's client raises when its server cannot be reached or
    fails: an `MlflowException`, or an HTTP error of `requests` / `urllib3` (artifact
    uploads). Errors of other libraries (a Ray task's, a disk's) are not."""
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, MlflowException) or module in ("requests", "urllib3")


class TrackingError(RuntimeError):
    """The MLflow tracking server could not be reached, or failed during a run."""


def check_reachable(uri: str, experiment: str) -> None:
    """`TrackingError` unless the tracking server at an HTTP(S) `uri` answers a read.

    Run before any work, so a server that is down or misaddressed fails the run in
    seconds rather than after training. Bounded: `REACH_RETRIES` retries with a short
    backoff, `REACH_TIMEOUT_S` per attempt (lower values set in MLflow's
    `MLFLOW_HTTP_REQUEST_MAX_RETRIES` / `MLFLOW_HTTP_REQUEST_TIMEOUT` are kept). Reads
    only (the experiment by name): nothing is created. Local stores (`sqlite:///`,
    files) are not checked: `connect` creates them.
    """
    if not uri.lower().startswith(("http://", "https://")):
        return
    began = time.perf_counter()
    try:
        with _bounded_http(REACH_RETRIES, REACH_TIMEOUT_S):
            MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except Exception as exc:
        if not is_tracking_failure(exc):
            raise
        seconds = time.perf_counter() - began
        raise TrackingError(
            f"MLflow tracking server {uri} did not answer (checked before any work: "
            f"{seconds:.0f}s, up to {REACH_RETRIES + 1} attempts): {_reason(exc)}. "
            f"Nothing was trained or recorded. Fix: {FIX_URI}."
        ) from None


@contextmanager
def _bounded_http(retries: int, timeout: int) -> Iterator[None]:
    """MLflow's HTTP retries and timeout bounded by `retries` and `timeout` (seconds),
    with a one-second backoff factor, for the calls inside; the environment is restored."""
    bounds = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": retries,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": timeout,
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1,
    }
    saved = {name: os.environ.get(name) for name in bounds}
    try:
        for name, bound in bounds.items():
            current = saved[name]
            lower = min(bound, int(current)) if current and current.isdigit() else bound
            os.environ[name] = str(lower)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def tracking_step(uri: str, step: str, consequence: str = "") -> Iterator[None]:
    """Turn an MLflow client failure inside into a `TrackingError` that says which step of
    the run failed, against which server, and `consequence` (what it left behind)."""
    try:
        yield
    except Exception as exc:
        if not is_tracking_failure(exc):
            raise
        after = f" {consequence.rstrip('.')}." if consequence else ""
        raise TrackingError(
            f"MLflow tracking at {uri} failed while {step}: {_reason(exc)}.{after}"
        ) from exc


def _reason(exc: BaseException) -> str:
    """The first line of an MLflow client error, without its trailing dot, kept short."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
    return text if len(text) <= 400 else text[:397] + "..."


def connect(uri: str) -> MlflowClient:
    """Point MLflow at `uri` (the embedded SQLite store's directory is created)."""
    # Progress bars of artifact downloads flood logs and CI output; keep a user's choice.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, creating it (with local artifacts for the embedded store)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if uri == default_tracking_uri():
        location = default_artifact_location()
    elif uri.startswith("sqlite:///"):  # a local store: artifacts beside its database
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def flat_params(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Dotted key -> value string for every leaf (long mappings summarized)."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if len(value) > 20:
                yield name, f"<{len(value)} entries; see config.yaml>"
            else:
                yield from flat_params(value, name + ".")
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            yield name, text[:500]


def evaluation_digest(data_digest: str, result: PipelineResult, config: TrainConfig) -> str:
    """Identifies the evaluation data: same digest, same held-out decisions and rewards.

    Two runs with equal digests judged their models on the same decisions with the same
    reward definition, so their metrics are directly comparable.
    """
    split = result.evaluation.split
    model = result.model_config.to_dict()
    terms = {term: _get(model, term) for term in MONEY_TERMS}
    evaluation = config.evaluation.to_dict()
    for key in ("primary_metric", "min_improvement", "refit"):  # not what is judged, nor how
        evaluation.pop(key)
    payload = {
        "data": data_digest,
        "split": split.start.isoformat() if split else None,
        "evaluation": evaluation,
        "money": terms,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node[part]
    return node


def finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """MLflow rejects NaN in some stores; drop non-finite values (they are in the JSON)."""
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)
    }


def log_pipeline_run(
    config: TrainConfig,
    result: PipelineResult,
    experiment: str,
    run_name: str | None,
    parent_run_id: str | None = None,
) -> tuple[str, str]:
    """Log one run (params, data, metrics, artifacts, pyfunc model); (run id, model uri)."""
    resolved = (result.config or config).model_copy(deep=True)
    resolved.model = result.model_config
    resolved.data.path = Path(result.data.path)
    tags = {
        "data_digest": result.data.digest,
        "evaluation_digest": evaluation_digest(result.data.digest, result, config),
        "primary_metric": config.evaluation.primary_metric,
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    with mlflow.start_run(experiment_id=experiment, run_name=run_name, tags=tags) as run:
        params = dict(flat_params(resolved.to_dict()))
        params.update({f"data.rows.{k}": str(v) for k, v in result.data.rows.items()})
        params["data.digest"] = result.data.digest
        mlflow.log_params(params)
        metrics = finite_metrics(result.evaluation.metrics)
        metrics.update({f"seconds.{_metric_key(k)}": v for k, v in result.seconds.items()})
        metrics.update({f"peak_rss_mb.{_metric_key(k)}": v for k, v in result.peak_rss_mb.items()})
        metrics.update({f"cpu_seconds.{_metric_key(k)}": v for k, v in result.cpu_seconds.items()})
        mlflow.log_metrics(metrics)
        mlflow.log_text(yaml.safe_dump(resolved.to_dict(), sort_keys=False), "config.yaml")
        mlflow.log_text(result.evaluation.table(), "evaluation/report.txt")
        mlflow.log_dict(
            {"metrics": result.evaluation.metrics, "notes": result.evaluation.notes},
            "evaluation/metrics.json",
        )
        mlflow.log_text(result.ranker.report_.format(), "fit_report.txt")
        mlflow.log_text(result.data.summary, "data_summary.txt")
        for name, figure in evaluation_figures(result.evaluation.curves).items():
            mlflow.log_figure(figure, f"evaluation/{name}")
        model_uri = log_ranker_model(result.ranker)
        return run.info.run_id, model_uri


def _metric_key(label: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in label).strip()


def log_ranker_model(ranker: PromoRanker) -> str:
    """Log `ranker` as the active run's pyfunc model (`runs:/<id>/model`); its model URI."""
    with tempfile.TemporaryDirectory() as tmp, _quiet_model_logging():
        saved = ranker.save(Path(tmp) / RANKER_ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=RankerModel(),
            artifacts={RANKER_ARTIFACT: str(saved)},
            signature=signature(),
            pip_requirements=_requirements(),
        )
    return str(info.model_uri)


@contextmanager
def _quiet_model_logging() -> Iterator[None]:
    """The model is a class of this package with a signature; MLflow's advice to log from
    code or pass an input example (which would load and run it) is noise here."""
    quiet = [logging.getLogger(n) for n in ("mlflow.pyfunc", "mlflow.utils.environment")]
    levels = [q.level for q in quiet]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for q in quiet:
            q.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for q, level in zip(quiet, levels, strict=True):
                q.setLevel(level)


def _requirements() -> list[str]:
    """What loading the model needs: this package and its core dependencies."""
    from importlib.metadata import PackageNotFoundError, version

    names = ("promo-recsys", "implicit", "scikit-learn", "polars", "pyarrow", "numpy", "scipy")
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def log_trial_run(
    experiment: str,
    parent_run_id: str,
    index: int,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    status: str,
) -> str:
    """One sweep trial as a child run of the sweep's run."""
    tags = {"mlflow.parentRunId": parent_run_id, "sweep.trial": str(index), "sweep.status": status}
    with mlflow.start_run(
        experiment_id=experiment, run_name=f"trial-{index:03d}", tags=tags
    ) as run:
        mlflow.log_params({k: json.dumps(v) for k, v in params.items()})
        mlflow.log_metrics(finite_metrics(metrics))
        return run.info.run_id
