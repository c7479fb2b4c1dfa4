"""Assemble the `recsys` command from the packages that own each part.

`recsys` (the core library) defines data, score and demo; `training` adds train and
promote and resolves registry URIs for `score --model`; `serving` adds serve and keys.
Dependencies point one way: this module imports them, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from recsys.cli import build_app
from serving.cli import add_serving_commands
from training.cli import add_training_commands, resolve_model
from training.demo import demo_config, train_step


def train_demo_step(out: Path, echo: Callable[[str], None]) -> None:
    """The demo's training step, on a local Ray left running for the serving step
    (starting Ray takes seconds; the serving step stops it)."""
    config = demo_config(out)
    if config.ray_address() is None:
        from training.pipeline import init_ray

        init_ray(config, echo)
    train_step(out, echo)


def serve_demo_step(out: Path, echo: Callable[[str], None]) -> None:
    """The demo's serving step, on the MLflow store the training step registered into."""
    from serving.demo import serve_step

    serve_step(out, echo, tracking_uri=demo_config(out).tracking_uri())


def make_app() -> typer.Typer:
    app = build_app(
        resolve_model=resolve_model,
        demo_steps=[
            ("train on Ray, track in MLflow, register behind the gate", train_demo_step),
            ("serve the ranking API on Ray Serve and call it over HTTP", serve_demo_step),
        ],
    )
    add_training_commands(app)
    add_serving_commands(app)
    return app


def main() -> None:  # pragma: no cover - console entry point
    make_app()()
