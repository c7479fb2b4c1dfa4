"""Hyperparameter search with Ray Tune over the config's `sweep:` section.

Each trial fits the ranker with its sampled values on the training split and judges it on
the held-out decisions, reporting every metric; the primary metric picks the best. The
driver logs each trial as an MLflow child run of the training run (so concurrent trials
never write to the tracking store at once), and the best trial's values are refit on all
the data and registered.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recsys.data import Dataset
from recsys.evaluation.holdout import LOWER_IS_BETTER, HoldoutConfig, HoldoutSplit, evaluate_holdout
from recsys.models.ranker import PromoRanker, RankerConfig
from training.config import SweepConfig, SweepParam, TrainConfig, apply_overrides


@dataclass
class Trial:
    """One finished (or failed) trial: its sampled values and metrics."""

    index: int
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "ok"


@dataclass
class SweepResult:
    trials: list[Trial]
    best: Trial


def search_space(sweep: SweepConfig) -> dict[str, Any]:
    """Ray Tune's param_space for the sweep's params (keys stay dotted config paths)."""
    from ray import tune

    def domain(spec: SweepParam) -> Any:
        if spec.choice is not None:
            return tune.choice(spec.choice)
        if spec.grid is not None:
            return tune.grid_search(spec.grid)
        if spec.uniform is not None:
            return tune.uniform(*spec.uniform)
        if spec.loguniform is not None:
            return tune.loguniform(*spec.loguniform)
        assert spec.randint is not None
        return tune.randint(*spec.randint)

    return {path: domain(spec) for path, spec in sweep.params.items()}


def trial_model(base: RankerConfig, params: dict[str, Any]) -> RankerConfig:
    """The base model config with a trial's values set (paths under `model.`)."""
    overrides = [f"{path.removeprefix('model.')}={_yaml(value)}" for path, value in params.items()]
    return RankerConfig.from_dict(apply_overrides(base.to_dict(), overrides), source="sweep trial")


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def fit_and_judge(
    model: RankerConfig, dataset: Dataset, split: HoldoutSplit, evaluation: HoldoutConfig
) -> dict[str, float]:
    """One trial's work: fit on the training split, judge on the held-out decisions."""
    ranker = PromoRanker(model).fit(dataset.before(split.start), as_of=split.start)
    return evaluate_holdout(ranker, dataset, split, evaluation).metrics


def run_sweep(
    config: TrainConfig,
    model: RankerConfig,
    dataset: Dataset,
    split: HoldoutSplit,
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Run the trials on Ray Tune; returns every trial and the best by the primary metric."""
    # Tune's newer console output ignores verbose=0 and prints every metric of every
    # trial; the classic reporter honours it, and Progress below says what matters.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    sweep = config.sweep
    assert sweep is not None and sweep.params
    metric = config.evaluation.primary_metric
    mode = "min" if metric in LOWER_IS_BETTER else "max"
    cpus = config.ray.cpus_per_task
    evaluation = HoldoutConfig.from_dict(
        {k: v for k, v in config.evaluation.to_dict().items() if k in HoldoutConfig.model_fields}
    )

    def trainable(params: dict[str, Any], dataset: Dataset) -> None:
        trial = trial_model(model, params)
        tune.report(fit_and_judge(trial, dataset, split, evaluation))

    available = int(ray.cluster_resources().get("CPU", 1))
    concurrent = sweep.max_concurrent or max(1, available // cpus)
    echo(
        f"sweep: {len(sweep.params)} values searched, {sweep.num_samples} sample(s), "
        f"up to {concurrent} trials at once, optimizing {metric} ({mode})"
    )

    class Progress(tune.Callback):
        """One line per finished trial (Tune's own tables would print every metric)."""

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            value = (trial.last_result or {}).get(metric, float("nan"))
            echo(f"  trial {trial.trial_id} finished: {metric} {value:.4f}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            echo(f"  trial {trial.trial_id} failed")

    with tempfile.TemporaryDirectory(prefix="promo-tune-") as storage:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, dataset=dataset), {"cpu": cpus}),
            param_space=search_space(sweep),
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                num_samples=sweep.num_samples,
                search_alg=BasicVariantGenerator(
                    random_state=sweep.seed, max_concurrent=concurrent
                ),
            ),
            run_config=tune.RunConfig(
                storage_path=storage, name="sweep", verbose=0, callbacks=[Progress()]
            ),
        )
        grid = tuner.fit()
        trials = []
        for index in range(len(grid)):
            result = grid[index]
            params = {path: (result.config or {}).get(path) for path in sweep.params}
            if result.error is not None:
                trials.append(Trial(index, params, status=f"error: {result.error}"))
                continue
            metrics = {k: float(v) for k, v in (result.metrics or {}).items() if _number(v)}
            trials.append(Trial(index, params, metrics))
    ok = [t for t in trials if t.status == "ok" and metric in t.metrics]
    if not ok:
        raise RuntimeError(f"every sweep trial failed; first error: {trials[0].status}")
    best = (min if mode == "min" else max)(ok, key=lambda t: t.metrics[metric])
    for trial in trials:
        shown = f"{trial.metrics[metric]:.4f}" if metric in trial.metrics else trial.status
        mark = "  <- best" if trial is best else ""
        echo(f"  trial {trial.index:3d} {trial.params} {metric} {shown}{mark}")
    return SweepResult(trials=trials, best=best)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
