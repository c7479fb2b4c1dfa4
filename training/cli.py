"""`recsys train` and `recsys promote`, and registry URIs for `recsys score --model`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def resolve_model(reference: str, scratch: Path) -> Path:
    """A saved ranker directory for a path or an MLflow URI (models:/name@alias,
    models:/name/version, runs:/id/model), using MLFLOW_TRACKING_URI or the embedded store."""
    if not (reference.startswith(("models:/", "runs:/")) or "://" in reference):
        return Path(reference)
    from training.config import TrainConfig
    from training.registry import resolve_model as fetch
    from training.tracking import connect

    connect(TrainConfig().tracking_uri())
    return fetch(reference, scratch)


def train(
    config: Annotated[
        Path | None,
        typer.Option(
            help="training config YAML; default: the built-in defaults that "
            "configs/default.yaml spells out"
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="dataset directory; overrides the config's data.path")
    ] = None,
    decisions: Annotated[
        list[Path] | None,
        typer.Option(
            "--decisions",
            help="a serving decision log directory (the serve config's decision_log_dir) "
            "whose decisions and outcomes are added to the data (repeatable; adds to "
            "data.decision_logs)",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="override a config value: key.path=value (repeatable), "
            "e.g. --set model.mf.factors=32",
        ),
    ] = None,
) -> None:
    """Train on Ray, track the run in MLflow, register promo-ranker behind the gate."""
    from recsys.config import ConfigError
    from recsys.data import ContractError
    from training.config import load_config

    try:
        cfg = load_config(config, set_ or [], data, decisions or [])
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    from training.failures import StageFailureError
    from training.run import train as run_training
    from training.tracking import TrackingError

    try:
        outcome = run_training(cfg, echo=typer.echo)
    except ContractError as exc:
        # Rebuilt from the violations: one raised in a Ray task would carry its traceback.
        clean = ContractError.from_violations(exc.violations)
        where = f" {cfg.data.path}" if cfg.data.path is not None else ""
        raise _fail(f"invalid dataset{where}:\n{clean}", code=1) from None
    except (TrackingError, StageFailureError) as exc:
        raise _fail(str(exc), code=1) from None
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc), code=1) from None
    typer.echo(outcome.summary(cfg.evaluation.primary_metric))


def promote(
    version: Annotated[str, typer.Argument(help="the registered version to make champion")],
    model: Annotated[str, typer.Option(help="registered model name")] = "promo-ranker",
    reason: Annotated[str, typer.Option(help="why (recorded on the version)")] = "",
) -> None:
    """Make VERSION the champion by hand, overriding the gate."""
    from training.config import TrainConfig
    from training.registry import promote as move
    from training.tracking import FIX_URI, TrackingError, connect, tracking_step

    uri = TrainConfig().tracking_uri()
    try:
        with tracking_step(uri, f"making v{version} champion", f"Fix: {FIX_URI}"):
            previous = move(connect(uri), model, version, reason)
    except ValueError as exc:
        raise _fail(f"{exc} (tracking store {uri})", code=1) from None
    except TrackingError as exc:
        raise _fail(str(exc), code=1) from None
    typer.echo(f"{model} v{version} is champion (was v{previous or 'none'})")


def add_training_commands(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("promote")(promote)
