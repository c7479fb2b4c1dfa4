"""One training run end to end: (sweep) -> pipeline -> MLflow -> registry gate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from recsys.evaluation.holdout import best_blanket, holdout_split
from recsys.models.ranker import RankerConfig
from training.config import TrainConfig
from training.failures import StageFailureError, describe_failure
from training.pipeline import (
    LoadedData,
    PipelineResult,
    check_data_paths,
    evaluate_config,
    init_ray,
    load_data,
    peak_rss_mb,
    prefer_this_interpreter,
    run_pipeline,
    threaded,
    with_truth_margins,
)
from training.registry import GateDecision, champion_version, crown, judge, register
from training.sweep import SweepResult, run_sweep, trial_model
from training.tracking import (
    FIX_URI,
    check_reachable,
    connect,
    evaluation_digest,
    experiment_id,
    log_pipeline_run,
    log_trial_run,
    tracking_step,
)

Echo = Callable[[str], None]


@dataclass
class TrainOutcome:
    run_id: str
    model_uri: str
    tracking_uri: str
    version: str | None
    decision: GateDecision | None
    result: PipelineResult
    sweep: SweepResult | None
    seconds: float

    def summary(self, primary_metric: str) -> str:
        lines = ["== result ==", self.result.evaluation.table()]
        value = self.result.evaluation.metrics.get(primary_metric)
        if value is not None:
            lines.append(f"primary metric {primary_metric}: {value:.4f}")
        lines.append(f"MLflow run id: {self.run_id} ({self.tracking_uri})")
        if self.version is not None and self.decision is not None:
            verdict = "champion" if self.decision.promoted else "challenger only"
            lines.append(f"registered version {self.version}: {verdict}: {self.decision.reason}")
        lines.append(
            f"wall time {self.seconds:.1f}s; peak memory: driver "
            f"{self.result.peak_rss_mb.get('driver', 0):.0f} MB, largest task "
            f"{max(self.result.peak_rss_mb.values(), default=0):.0f} MB"
        )
        return "\n".join(lines)


def with_money_terms(model: RankerConfig, source: RankerConfig) -> RankerConfig:
    """`model` judged under `source`'s reward definition (margins, costs, horizon): money
    terms describe the business, so two models are compared under the same ones."""
    out = model.model_copy(deep=True)
    out.seller_margins = dict(source.seller_margins)
    out.policy.margin_default = source.policy.margin_default
    out.policy.send_cost = source.policy.send_cost
    out.policy.default_shipping_cost = source.policy.default_shipping_cost
    out.response.horizon_days = source.response.horizon_days
    return out


def train(config: TrainConfig, echo: Echo = print) -> TrainOutcome:
    """Run the whole training job; see the README's "Training" section.

    Order matters: everything that can fail cheaply fails before any work. The data paths
    and the tracking server are checked first, then the dataset is loaded and validated in
    this process (a `ContractError` stops the run before Ray starts or MLflow records
    anything). Moving `champion` is the very last step, after every other record of the
    run: an MLflow failure anywhere before it (`TrackingError`) leaves the alias where it
    was.
    """
    check_data_paths(config.data)  # a wrong path fails before MLflow and Ray start
    uri = config.tracking_uri()
    check_reachable(uri, config.tracking.experiment)  # a server that is down: seconds
    prefer_this_interpreter()
    import ray

    began = time.perf_counter()
    data = load_data(config.data, echo)  # bad data stops here: nothing started, no record
    name = config.tracking.registered_model
    with tracking_step(uri, "opening the experiment", f"Nothing was recorded. Fix: {FIX_URI}"):
        client = connect(uri)
        experiment = experiment_id(client, config.tracking.experiment, uri)
        before = champion_version(client, name) if config.tracking.register_model else None
    echo(f"mlflow: {uri}, experiment '{config.tracking.experiment}'")
    kept = f"Fix: {FIX_URI}; then train again"
    if config.tracking.register_model:
        kept = (
            f"The champion alias was not moved (it still points to {_version(before)}): "
            f"moving it is a run's last step. {kept}"
        )
    started_ray = not ray.is_initialized()
    try:
        sweep = None
        if config.sweep is not None and config.sweep.params:
            sweep = _sweep(config, data, echo)
            config = config.model_copy(deep=True)
            config.model = trial_model(config.model, sweep.best.params)
            echo(f"sweep: refitting the best trial's values on all data: {sweep.best.params}")
        try:
            result = run_pipeline(config, echo, data)
        except Exception as exc:  # a known kind of stage failure becomes one line
            known = describe_failure(exc, data.info.rows)
            if known is None:
                raise
            raise StageFailureError(known) from None
        with tracking_step(uri, "logging the run (params, metrics, artifacts, model)", kept):
            run_id, model_uri = log_pipeline_run(
                config, result, experiment, config.tracking.run_name
            )
            if sweep is not None:
                for trial in sweep.trials:
                    log_trial_run(
                        experiment, run_id, trial.index, trial.params, trial.metrics, trial.status
                    )
                client.set_tag(run_id, "sweep.best_trial", str(sweep.best.index))
        version = decision = None
        if config.tracking.register_model:
            with tracking_step(uri, f"registering the model of run {run_id}", kept):
                version = register(client, name, model_uri, run_id)
            metric = config.evaluation.primary_metric
            value = result.evaluation.metrics.get(metric, float("nan"))
            if not math.isfinite(value):
                echo(
                    f"warning: the primary metric {metric} could not be computed on this "
                    "data (see the notes above); the gate cannot compare models by it. "
                    "Set evaluation.primary_metric to a metric this data supports, "
                    "such as item_recall_mf."
                )

            def reevaluate(champion: RankerConfig) -> float:
                judged = with_money_terms(champion, result.model_config)
                report = evaluate_config(config, judged, echo, data)
                return report.metrics.get(metric, float("nan"))

            with tracking_step(uri, f"running the promotion gate for v{version}", kept):
                decision = judge(
                    client,
                    name,
                    version,
                    metric,
                    value,
                    evaluation_digest(result.data.digest, result, config),
                    config.evaluation.min_improvement,
                    reevaluate,
                    echo,
                    best_blanket(result.evaluation.metrics),
                )
        seconds = time.perf_counter() - began
        with tracking_step(uri, f"recording the outcome on run {run_id}", kept):
            if version is not None and decision is not None:
                client.set_tag(run_id, "registered_version", version)
                client.set_tag(run_id, "gate.promoted", str(decision.promoted).lower())
            client.log_metric(run_id, "seconds.total", seconds)
            client.log_metric(run_id, "peak_rss_mb.driver_final", peak_rss_mb())
        if version is not None and decision is not None and decision.promoted:
            # The last step: nothing of this run is left to record once champion moves.
            with tracking_step(
                uri,
                f"moving the champion alias to v{version}",
                f"Everything else was recorded; champion should still point to "
                f"{_version(before)}. Fix: {FIX_URI}; then `recsys promote {version}` "
                "finishes the promotion",
            ):
                crown(client, name, version)
        return TrainOutcome(run_id, model_uri, uri, version, decision, result, sweep, seconds)
    finally:
        if started_ray and ray.is_initialized():
            ray.shutdown()


def _version(version: str | None) -> str:
    return f"v{version}" if version else "no version"


def _sweep(config: TrainConfig, data: LoadedData, echo: Echo) -> SweepResult:
    """The sweep's trials on the run's dataset, as loaded (before it is shared)."""
    init_ray(config, echo)
    dataset = data.dataset
    assert dataset is not None, "the sweep runs before the dataset is shared"
    path = data.path
    split = holdout_split(dataset, config.evaluation.waves)
    if split is None:
        raise ValueError(
            "sweep: the data has no randomized campaign waves to judge trials on; "
            "remove the sweep section or add exposures with propensities"
        )
    model, _ = with_truth_margins(config.model, path, config.data)
    return run_sweep(config, threaded(model, config.ray.cpus_per_task), dataset, split, echo)
