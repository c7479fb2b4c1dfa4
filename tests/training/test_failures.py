"""Known kinds of stage failure end `recsys train` with one line: the stage, the figures
and the setting to change; no traceback, exit 1 (issue 17)."""

from __future__ import annotations

import traceback

import pytest
import typer
from ray.exceptions import OutOfMemoryError, RayTaskError, WorkerCrashedError
from typer.testing import CliRunner

from recsys.models.base import CannotFitError
from training.cli import add_training_commands
from training.failures import StageFailureError, describe_failure

ROWS = {"items": 92_000, "events": 1_008_389, "exposures": 524_748, "redemptions": 982}

# The message Ray's memory monitor gives (raylet), as `ray.get` raises it in the driver.
RAY_OOM = (
    "Task was killed due to the node running low on memory.\n"
    "Memory on the node (IP: 10.0.0.5, ID: 7f3a) where the task (task ID: ffff01, "
    "name=response_stage, pid=4242, memory used=20.51GB) was running was 22.31GB / "
    "23.47GB (0.950567), which exceeds the memory usage threshold of 0.95. Ray killed "
    "this worker (ID: 9c1d) because it was the most recently scheduled task; to see more "
    "information about memory usage on this node, use `ray logs raylet.out -ip 10.0.0.5`."
)


def _in_task(exc: Exception, stage: str) -> Exception:
    """`exc` as `ray.get` raises it when a task named `stage` raised it."""
    try:
        raise exc
    except Exception as raised:
        wrapped = RayTaskError(
            stage, traceback.format_exc(), raised, proctitle=f"ray::{stage}", pid=1, ip="1.2.3.4"
        )
    return wrapped.as_instanceof_cause()


def test_out_of_memory_names_the_stage_the_gigabytes_the_rows_and_the_settings() -> None:
    text = describe_failure(OutOfMemoryError(RAY_OOM), ROWS)
    assert text is not None and "\n" not in text
    assert text.startswith("out of memory in stage response_stage: ")
    assert "the task held 20.51 GB with the node at 22.31 of 23.47 GB" in text
    assert "1,008,389 events" in text and "524,748 exposures" in text
    assert "--set ray.heavy_stages=1" in text and "--set evaluation.refit=false" in text


# The same, as Ray 2.60's memory monitor words it (seen on this machine, object store
# statistics cut).
RAY_260_OOM = (
    "1 worker(s) were killed due to the node running low on memory. Memory on the node "
    "(IP: 192.0.2.2, ID: 58d1) was 21.21GB used / 23.54GB limit (0.901)\nOOM kill reason: "
    "Memory usage 22774290176B exceeded threshold of 21183144320B\nRay killed 1 worker(s) "
    "based on the killing policy\nSelected to kill: (Task: job ID=01000000, task "
    "name=evaluate_stage, required resources={CPU: 1}, pid=9392, actual memory "
    "used=14.89GB, worker ID=ef63)"
)


def test_out_of_memory_in_ray_260_words_too() -> None:
    text = describe_failure(OutOfMemoryError(RAY_260_OOM), ROWS)
    assert text is not None
    assert text.startswith("out of memory in stage evaluate_stage: ")
    assert "the task held 14.89 GB with the node at 21.21 of 23.54 GB" in text


def test_a_worker_killed_by_the_system_says_memory_and_the_fix() -> None:
    text = describe_failure(WorkerCrashedError(), ROWS)
    assert text is not None and "out of memory" in text and "ray.heavy_stages=1" in text


def test_a_model_that_cannot_fit_in_a_stage_is_one_line_with_its_reason() -> None:
    reason = "no feature has values\nthat vary; give more history (model.journey.horizon_days)"
    text = describe_failure(_in_task(CannotFitError(reason), "journey_stage"), ROWS)
    assert text == (
        "a model cannot be fitted in stage journey_stage on 92,000 items, 1,008,389 events, "
        "524,748 exposures, 982 redemptions: no feature has values that vary; give more "
        "history (model.journey.horizon_days)"
    )
    assert "Traceback" not in text


@pytest.mark.parametrize(
    "error", [ValueError("a bug"), KeyError("x"), _in_task(ZeroDivisionError(), "mf_stage")]
)
def test_other_errors_are_not_explained_away(error: Exception) -> None:
    assert describe_failure(error, ROWS) is None


def test_recsys_train_prints_the_one_line_and_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    line = describe_failure(OutOfMemoryError(RAY_OOM), ROWS)

    def killed(*args: object, **kwargs: object) -> None:
        raise StageFailureError(line)

    monkeypatch.setattr("training.run.train", killed)
    app = typer.Typer()
    add_training_commands(app)
    result = CliRunner().invoke(app, ["train", "--set", "data.synthetic.buyers=100"])
    assert result.exit_code == 1
    assert result.output.strip() == line
    assert "Traceback" not in result.output
