"""The demo's training step: `recsys train` on the demo's marketplace, tracked in MLflow."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from training.config import TrainConfig


def demo_config(out: Path) -> TrainConfig:
    """Train on the demo's data; track into `out/mlruns` unless MLFLOW_TRACKING_URI is set."""
    uri = (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{(out / 'mlruns' / 'mlflow.db').resolve()}"
    )
    return TrainConfig.from_dict(
        {"data": {"path": str(out / "data")}, "tracking": {"tracking_uri": uri}},
        source="demo",
    )


def train_step(out: Path, echo: Callable[[str], None]) -> None:
    """Run the training job (Ray stages, MLflow run, registry gate) and say where it is."""
    from training.run import train

    config = demo_config(out)
    outcome = train(config, echo=echo)
    echo(outcome.summary(config.evaluation.primary_metric))
    uri = config.tracking_uri()
    echo(
        "score with the registered champion:\n"
        f"  MLFLOW_TRACKING_URI={uri} recsys score --model models:/promo-ranker@champion "
        "--pairs pairs.csv --out scores.csv\n"
        f"compare runs: mlflow ui --backend-store-uri {uri}"
    )
