"""The serve config (configs/serve.yaml): which model, where decisions go, who may call."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from recsys.config import StrictConfig
from recsys.policy import PolicyConfig
from recsys.policy.holdout import HoldoutConfig
from serving.auth import ApiKeyEntry
from serving.schemas import MAX_BODY_BYTES


class BatchingConfig(StrictConfig):
    """Dynamic batching of /v1/rank (Ray Serve's @serve.batch)."""

    max_batch_size: int = Field(32, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)


class ExplorationConfig(StrictConfig):
    """How the API explores: it is what makes every listed offer's propensity exact and
    positive, and the decision log fit for off-policy evaluation and retraining.

    Applied on top of the serving policy (the model's own, or `policy`). With `none`, the
    policy is greedy: the first offer has propensity 1 and later ones 0 (never taken).
    """

    mode: Literal["none", "epsilon", "softmax"] = Field(
        "epsilon", description="epsilon: a uniformly random eligible action with prob. epsilon"
    )
    epsilon: float = Field(0.05, ge=0, le=1, description="share of decisions explored")
    temperature: float = Field(1.0, gt=0, description="softmax temperature, in money")


class ServeConfig(StrictConfig):
    """Everything `recsys serve` and `serve deploy` need."""

    model_uri: str = Field(
        "models:/promo-ranker@champion",
        description="a registry alias to follow, or a saved model directory (never swapped)",
    )
    tracking_uri: str | None = Field(
        None, description="null: MLFLOW_TRACKING_URI, else the embedded mlruns/ store"
    )
    poll_seconds: float = Field(
        10.0, gt=0, description="how often to check the alias for a new champion"
    )
    decision_log_dir: Path = Field(
        Path("decision_log"), description="exposures/ and redemptions/ parts are written here"
    )
    api_keys: list[ApiKeyEntry] = Field(
        default_factory=list,
        description="hashed keys (see `recsys keys new`); RECSYS_API_KEYS adds raw ones",
    )
    policy: PolicyConfig | None = Field(
        None, description="serving policy (exploration, caps); null: the model's own"
    )
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    holdout: HoldoutConfig = Field(
        default_factory=HoldoutConfig,
        description="the per-seller control group given no offer (default 5 %, stable per "
        "buyer and seller for `period_days`), so the engine's lift is measured",
    )
    score_cache_rows: int = Field(
        1_000_000, ge=0, description="model outputs kept for reuse (0: score every request)"
    )
    as_of: datetime | None = Field(
        None,
        description="decide as if the service started at this moment (its clock then runs "
        "at the real pace, so decision times and frequency caps advance): for demos and "
        "replays on historical data; null: the real clock",
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    max_body_bytes: int = Field(
        MAX_BODY_BYTES,
        ge=4096,
        le=1024**3,
        description="largest request body read, in bytes; a bigger one is refused with 413 "
        "(the default fits the largest valid /v1/rank/batch call with a margin)",
    )
    session_hours: float = Field(
        8.0,
        gt=0,
        le=24 * 30,
        description="how long a seller page session lasts after sign-in (signing out "
        "ends it at once)",
    )
    sessions_dir: Path | None = Field(
        None,
        description="where seller page sessions are kept, shared by every replica; null: "
        "<decision_log_dir>/.sessions",
    )
    decision_index_rows: int = Field(
        2_000_000,
        ge=1000,
        description="decisions each replica keeps in memory to accept their outcomes "
        "(about 100 bytes each; the oldest go first beyond this or the outcome window)",
    )
    replicas: int = Field(1, ge=1)
    cpus_per_replica: float = Field(1.0, gt=0)

    incrementality_report: Path | None = Field(
        None,
        description="the incrementality report the seller route, page and gauges show "
        "(`recsys report incrementality --out`); null: <decision_log_dir>/incrementality.json",
    )

    @property
    def incrementality_path(self) -> Path:
        """`incrementality_report`, else `incrementality.json` in the decision log directory."""
        return self.incrementality_report or self.decision_log_dir / "incrementality.json"

    @property
    def sessions_directory(self) -> Path:
        """`sessions_dir`, else `.sessions` inside the decision log directory."""
        return self.sessions_dir or self.decision_log_dir / ".sessions"

    def serving_policy(self, model_policy: PolicyConfig) -> PolicyConfig:
        """The policy the API decides with: `policy` (else the model's), explored as
        `exploration` says."""
        base = self.policy if self.policy is not None else model_policy
        return base.model_copy(
            update={
                "exploration": self.exploration.mode,
                "epsilon": self.exploration.epsilon,
                "temperature": self.exploration.temperature,
            }
        )
