"""Fixtures shared by the training tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="session")
def _empty_store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # makes its tables
    return path


@pytest.fixture(scope="module")
def new_store(_empty_store_file: Path) -> object:
    """Make a fresh SQLite tracking store at a path: a copy of one made once per session
    (MLflow takes seconds to create a store's tables). Returns its URI."""

    def make(path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_empty_store_file, path)
        return f"sqlite:///{path}"

    return make
