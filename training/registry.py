"""The model registry: register `promo-ranker`, gate `challenger` -> `champion`.

A new version always gets the alias `challenger`. It takes `champion` only if its own
held-out evaluation does not rate it below the best one-kind-for-everyone policy (a
blanket) by more than the standard error of their difference, and it beats the current
champion on the configured primary metric *on the same evaluation data*:

- when the champion's run was judged on the same data, split and reward definition (its
  `evaluation_digest` tag equals the challenger's), its logged metric is used;
- otherwise the champion's model config is refit on the challenger's training split and
  judged on the challenger's held-out decisions (`reevaluate`), so both numbers come from
  the same evaluation.

`promote(version)` moves `champion` by hand (the override), recording who decided.

Only "not found" answers of the registry mean "no such model or alias": any other
failure (the tracking server unreachable, an internal error) is raised, never taken for
"there is no champion", which would promote a challenger without comparing it.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient

from recsys.evaluation.holdout import LOWER_IS_BETTER
from recsys.locations import ranker_dir
from recsys.models.ranker import RankerConfig

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class GateDecision:
    """Whether the challenger becomes champion, with the numbers and the reason."""

    promoted: bool
    metric: str
    challenger: float
    champion: float | None
    reason: str


def decide(
    metric: str,
    challenger: float,
    champion: float | None,
    min_improvement: float = 0.0,
    floor: tuple[str, float, float] | None = None,
) -> GateDecision:
    """The gate itself: a pure comparison (direction from the metric's name).

    `floor`: (name, value, standard error of the difference) of the best blanket judged
    on the same decisions: a challenger below it by more than that error is refused,
    champion or none -- a policy its own evaluation rates below sending one offer to
    everyone is not shipped.

    >>> decide("policy_value_dr", 1.2, 1.0).promoted
    True
    >>> decide("ece_p_redeem", 0.05, 0.02).promoted
    False
    >>> decide("policy_value_dr", 1.384, None, floor=("blanket_percent_off", 1.517, 0.05)).promoted
    False
    """
    if floor is not None and metric not in LOWER_IS_BETTER:
        name, value, se = floor
        slack = se if math.isfinite(se) else 0.0
        if math.isfinite(challenger) and math.isfinite(value) and challenger < value - slack:
            return GateDecision(
                False,
                metric,
                challenger,
                champion,
                f"challenger {metric} {challenger:.6g} is below {name} ({value:.6g}) by more "
                f"than the standard error of the difference ({slack:.3g}): a policy rated "
                "below a blanket is never champion",
            )
    if champion is None:
        caveat = "" if math.isfinite(challenger) else f" (its {metric} could not be computed)"
        return GateDecision(True, metric, challenger, None, "there was no champion" + caveat)
    if not math.isfinite(challenger):
        return GateDecision(
            False, metric, challenger, champion, f"challenger {metric} is not finite"
        )
    if not math.isfinite(champion):
        return GateDecision(True, metric, challenger, champion, f"champion {metric} is not finite")
    lower = metric in LOWER_IS_BETTER
    margin = (champion - challenger) if lower else (challenger - champion)
    better = margin > min_improvement
    word = "lower" if lower else "higher"
    verdict = "beats" if better else "does not beat"
    reason = (
        f"challenger {metric} {challenger:.6g} {verdict} champion {champion:.6g} "
        f"({word} is better; required margin > {min_improvement:g})"
    )
    return GateDecision(better, metric, challenger, champion, reason)


_NOT_FOUND = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)}
_NO_ALIAS = _NOT_FOUND | {ErrorCode.Name(INVALID_PARAMETER_VALUE)}
"""Error codes of a missing model, and of a missing model or alias (MLflow answers an
unknown alias with INVALID_PARAMETER_VALUE)."""


def register(client: MlflowClient, name: str, model_uri: str, run_id: str) -> str:
    """Register the logged model as a new version of `name`; alias it `challenger`.

    `model_uri` is what logging the model returned: in MLflow 3 a logged model's
    `models:/<model_id>`, whose id a tracking server needs beside it (it refuses the
    source alone; a local store accepts either).
    """
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
        client.create_registered_model(
            name, description="Promotion ranker: which offer, if any, to give each buyer."
        )
    version = client.create_model_version(
        name, model_uri, run_id=run_id, model_id=_logged_model_id(model_uri)
    )
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


def _logged_model_id(model_uri: str) -> str | None:
    """The id in a logged model's URI `models:/<model_id>`; None for other URIs (a run's
    `runs:/...`, a registered `models:/name/version` or `models:/name@alias`).

    >>> _logged_model_id("models:/m-0123abcd"), _logged_model_id("runs:/r1/model")
    ('m-0123abcd', None)
    """
    rest = model_uri.removeprefix("models:/")
    if rest == model_uri or not rest or "/" in rest or "@" in rest:
        return None
    return rest


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version `champion` points to; None when the model or the alias does not exist
    (any other registry failure is raised)."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code not in _NO_ALIAS:
            raise
        return None


def champion_config(client: MlflowClient, name: str) -> RankerConfig:
    """The model config of the current champion (read from its saved ranker)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}@{CHAMPION}", dst_path=tmp
        )
        meta = json.loads((ranker_dir(local) / "ranker.json").read_text())
    return RankerConfig.from_dict(meta["config"], source=f"models:/{name}@{CHAMPION}")


def gate(
    client: MlflowClient,
    name: str,
    version: str,
    metric: str,
    challenger_value: float,
    evaluation_digest: str,
    min_improvement: float,
    reevaluate: Callable[[RankerConfig], float],
    echo: Callable[[str], None] = print,
    floor: tuple[str, float, float] | None = None,
) -> GateDecision:
    """Run the promotion gate for `version` and move `champion` if it wins (`judge`, then
    `crown`)."""
    decision = judge(
        client,
        name,
        version,
        metric,
        challenger_value,
        evaluation_digest,
        min_improvement,
        reevaluate,
        echo,
        floor,
    )
    if decision.promoted:
        crown(client, name, version)
    return decision


def judge(
    client: MlflowClient,
    name: str,
    version: str,
    metric: str,
    challenger_value: float,
    evaluation_digest: str,
    min_improvement: float,
    reevaluate: Callable[[RankerConfig], float],
    echo: Callable[[str], None] = print,
    floor: tuple[str, float, float] | None = None,
) -> GateDecision:
    """The gate's decision for `version`, recorded as its `gate.*` tags; no alias moves.

    A training run calls `crown` for a promoted version only after everything else of
    the run is logged, so a failure anywhere before leaves `champion` where it was.
    """
    current = champion_version(client, name)
    champion_value: float | None = None
    how = ""
    if current is not None:
        champ = client.get_model_version(name, current)
        run = client.get_run(champ.run_id) if champ.run_id else None
        if (
            run is not None
            and run.data.tags.get("evaluation_digest") == evaluation_digest
            and metric in run.data.metrics
        ):
            champion_value = float(run.data.metrics[metric])
            how = f"champion v{current}'s logged {metric} (same evaluation data)"
        else:
            echo(f"gate: re-evaluating champion v{current}'s config on this run's held-out data")
            champion_value = reevaluate(champion_config(client, name))
            how = f"champion v{current}'s config refit and judged on this run's held-out data"
    decision = decide(metric, challenger_value, champion_value, min_improvement, floor)
    tags = {
        "gate.metric": metric,
        "gate.challenger": f"{challenger_value:.10g}",
        "gate.champion": "none" if champion_value is None else f"{champion_value:.10g}",
        "gate.champion_version": current or "none",
        "gate.promoted": str(decision.promoted).lower(),
        "gate.reason": decision.reason + (f"; {how}" if how else ""),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return decision


def crown(client: MlflowClient, name: str, version: str) -> None:
    """Move `champion` to `version`: one call, the last of a training run."""
    client.set_registered_model_alias(name, CHAMPION, version)


def promote(client: MlflowClient, name: str, version: str, reason: str = "") -> str | None:
    """Make `version` champion by hand; returns the previous champion's version."""
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code not in _NO_ALIAS:
            raise
        raise ValueError(f"{name} has no version {version}") from None
    previous = champion_version(client, name)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "gate.promoted", "manual")
    client.set_model_version_tag(
        name, version, "gate.reason", f"promoted by hand over v{previous or 'none'}: {reason}"
    )
    return previous


def resolve_model(uri: str, dst: Path) -> Path:
    """A saved ranker directory for `uri`: a registry or run URI is downloaded into `dst`;
    a plain path is returned as is."""
    if not (uri.startswith(("models:/", "runs:/")) or "://" in uri):
        return Path(uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    except MlflowException as exc:
        raise FileNotFoundError(
            f"cannot fetch {uri} from {mlflow.get_tracking_uri()}: {exc}"
        ) from None
    return ranker_dir(local)
