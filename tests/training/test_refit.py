"""`recsys train --set evaluation.refit=false`: the held-out fit is what gets registered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

RECSYS = str(Path(sys.executable).with_name("recsys"))

# A whole `recsys train` run (~75 s): in `make test-reliability`, to keep `make test` near 10 min.
pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def test_without_refit_the_held_out_fit_is_registered_with_current_features(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "OPENBLAS_NUM_THREADS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [
            RECSYS,
            "train",
            "--set",
            "data.synthetic.buyers=1500",
            "--set",
            "evaluation.refit=false",
            "--set",
            "ray.heavy_stages=1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "finished feature store as of the data's end" in done.stdout
    assert "(full fit)" not in done.stdout  # no second fit on all the data
    assert "evaluation.refit is false" in done.stdout
    # one heavy stage at a time: the refresh waited for the evaluation, which waited for
    # the held-out response fit
    lines = done.stdout.splitlines()

    def finished(stage: str) -> int:
        return next(i for i, line in enumerate(lines) if f"finished {stage}" in line)

    assert (
        finished("response and uplift (held-out fit)")
        < finished("evaluation")
        < finished("feature store as of the data's end")
    )
    client = MlflowClient(tracking_uri=uri)
    # The version this run registered (its challenger alias): whether the gate also makes
    # it champion depends on how its policy compares with the blankets, not on refit.
    version = client.get_model_version_by_alias("promo-ranker", "challenger")
    run = client.get_run(version.run_id)
    assert run.data.params["evaluation.refit"] == "False"
    report = client.download_artifacts(version.run_id, "fit_report.txt", str(tmp_path))
    text = Path(report).read_text()
    assert "features as of" in text  # models as of the split, features as of the end
