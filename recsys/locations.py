"""Where things are found by default, shared by training (which writes them) and serving
(which reads them): the embedded MLflow store, and the saved ranker inside a packaged
model. Plain paths: no MLflow import."""

from __future__ import annotations

from pathlib import Path

DEFAULT_TRACKING_DIR = Path("mlruns")
"""Embedded MLflow: SQLite store and artifacts under here, in the working directory."""

RANKER_ARTIFACT = "ranker"
"""Name of the saved-ranker artifact inside the logged model."""


def default_tracking_uri() -> str:
    """The embedded store: SQLite in ./mlruns (created on first use, git-ignored)."""
    return f"sqlite:///{(DEFAULT_TRACKING_DIR / 'mlflow.db').resolve()}"


def default_artifact_location() -> str:
    return (DEFAULT_TRACKING_DIR / "artifacts").resolve().as_uri()


def ranker_dir(model_dir: str | Path) -> Path:
    """The saved ranker inside a downloaded pyfunc model directory."""
    path = Path(model_dir) / "artifacts" / RANKER_ARTIFACT
    if not (path / "ranker.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a promo-ranker model (no {path})")
    return path
