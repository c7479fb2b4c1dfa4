"""Assemble the `recsys` command from the packages that own each part.

`recsys` (the core library) defines data, score and demo; `training` adds train and
promote and resolves registry URIs for `score --model`; `serving` adds serve and keys.
Dependencies point one way: this module imports them, never the reverse.
"""

from __future__ import annotations

import typer

from recsys.cli import build_app
from serving.cli import add_serving_commands
from training.cli import add_training_commands, resolve_model
from training.demo import train_step


def make_app() -> typer.Typer:
    app = build_app(
        resolve_model=resolve_model,
        demo_steps=[("train on Ray, track in MLflow, register behind the gate", train_step)],
    )
    add_training_commands(app)
    add_serving_commands(app)
    return app


def main() -> None:  # pragma: no cover - console entry point
    make_app()()
