"""Known kinds of stage failure, told in one line: the stage, the figures, the setting.

A Ray stage killed for memory, or a model that cannot be fitted on the data, is not a bug
to debug but a situation with a fix. `describe_failure` turns such an exception (as
`ray.get` raises it in the driver: Ray's own error, or a task's error wrapped by Ray) into
one message naming the stage, the figures that explain it (memory in GB, the data's rows)
and the setting to change; `recsys train` prints it instead of a traceback and exits 1.
Anything else is left alone: an unexpected error keeps its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from recsys.models.base import CannotFitError

LARGE_DATA_FIX = (
    "--set ray.heavy_stages=1 (one memory-heavy stage at a time, with all CPUs) and "
    "--set evaluation.refit=false (no second full fit), as docs/training.md advises for "
    "large data on one machine (both are the defaults from ray.large_data_from_events "
    "events on); or run on a node with more memory"
)


class StageFailureError(Exception):
    """A stage failed in a known way; the message is the whole story (one line)."""


def describe_failure(exc: BaseException, rows: Mapping[str, int]) -> str | None:
    """One line explaining `exc`, or None when it is not a known kind of failure.

    `rows` are the dataset's row counts per table (the run's `DataInfo.rows`).
    """
    from ray import exceptions as ray_errors

    cause = getattr(exc, "cause", None) if isinstance(exc, ray_errors.RayTaskError) else exc
    text = str(exc)
    data = _rows(rows)
    if isinstance(exc, ray_errors.OutOfMemoryError) or isinstance(
        cause, ray_errors.OutOfMemoryError
    ):
        stage = _first(r"name=([\w.]+)", text) or _stage(text) or "a Ray stage"
        used = _first(r"memory used=([\d.]+)\s*GB", text)
        node = re.search(r"was ([\d.]+)\s*GB(?: used)? / ([\d.]+)\s*GB", text)
        figures = f"the task held {used} GB" if used else "the task was killed"
        if node:
            figures += f" with the node at {node.group(1)} of {node.group(2)} GB"
        return (
            f"out of memory in stage {stage}: Ray killed it ({figures}) training on {data}. "
            f"Fix: {LARGE_DATA_FIX}."
        )
    if isinstance(exc, ray_errors.WorkerCrashedError):
        return (
            f"a stage's worker process died while training on {data} (the usual cause is "
            f"the system running out of memory). Fix: {LARGE_DATA_FIX}."
        )
    if isinstance(cause, CannotFitError):
        task = _stage(text) if cause is not exc else None
        where = f" in stage {task}" if task else ""
        return f"a model cannot be fitted{where} on {data}: {_one_line(str(cause))}"
    return None


def _rows(rows: Mapping[str, int]) -> str:
    shown = [f"{n:,} {name}" for name, n in rows.items() if name in _SHOWN and n]
    return ", ".join(shown) if shown else "this data"


_SHOWN = ("events", "buyers", "items", "offer_items", "exposures", "redemptions")


def _stage(text: str) -> str | None:
    """The stage function's name in a Ray task error (`ray::response_stage()`)."""
    return _first(r"ray::(\w+)", text)


def _first(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text)
    return found.group(1) if found else None


def _one_line(text: str) -> str:
    return " ".join(text.split())
