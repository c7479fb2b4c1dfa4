"""Purchase journey: each buyer's stage, the moves between stages, and P(purchase soon).

Stages
------
A buyer's stage as of a moment is decided from `recsys.features.buyer_features` by the
first rule that holds, in this order. ``s`` is the data's time scale in days
(`recsys.features.time_scale_days`: the median inter-order gap, or
`JourneyConfig.time_scale_days` when set), and every threshold is a multiple of it
(`StageRules`, defaults in brackets), so one set of rules serves weekly grocery shoppers
and quarterly buyers alike:

1. ``churned`` -- nothing at all for more than ``churn_after`` [2.0] x s (a buyer who never
   bought) or ``churn_after_buyer`` [3.5] x s (a past buyer, whose visits are sparser);
2. ``lapsing`` -- bought before, but no purchase for more than ``lapse_after`` [2.5] x s;
3. ``loyal`` -- at least ``loyal_min_orders`` [4] orders, a mean inter-order gap of at most
   ``loyal_max_gap`` [1.25] x s, and a purchase within ``loyal_recent`` [2.0] x s;
4. ``repeat`` -- any other buyer with at least one order (recent enough not to lapse);
5. ``cart_abandoner`` -- an item put in the cart, or a checkout left without a purchase,
   within ``cart_window`` [0.5] x s and after the last purchase (if any);
6. ``new`` -- known for less than ``new_within`` [0.5] x s, never bought;
7. ``browsing`` -- everyone else (active, never bought or bought long ago and came back).

Only buyers with an event before the moment have a stage. The rules and their defaults
are written up in ``docs/journey.md`` with their agreement with the synthetic marketplace's
latent stages.

Purchase model
--------------
`JourneyModel` predicts the probability that a buyer places an order within
``horizon_days`` after ``as_of``. It learns from the past with a time split: features as of
``as_of - horizon`` (and a few earlier snapshots, one horizon apart), labels = any purchase
in the following horizon; a histogram gradient-boosting classifier on the buyer features,
the stage and optional caller features, calibrated by isotonic regression over
cross-validation folds (`sklearn.calibration.CalibratedClassifierCV`).
`JourneyModel.evaluate_holdout` repeats the split one horizon earlier and reports Brier
score, log loss and ROC AUC against two baselines: the training base rate and the
purchase rate of the buyer's stage.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Self

import joblib
import numpy as np
import polars as pl
import sklearn
from pydantic import Field
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from recsys.config import StrictConfig
from recsys.data.schema import JOURNEY_STAGES
from recsys.features.buyer import BUYER_FEATURES, as_utc, buyer_features, time_scale_days
from recsys.features.matrix import usable_columns
from recsys.models.base import CannotFitError, Estimator
from recsys.models.threads import limit_threads

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = JOURNEY_STAGES
"""Journey stages, in the order of a buyer's life (not the order the rules are tried)."""

_FORMAT = "recsys.models.journey"
_FORMAT_VERSION = 1
_STAGE_FEATURE = "stage_code"
_RULE_COLUMNS = (
    "days_since_last_event",
    "days_since_last_purchase",
    "days_since_last_cart_add",
    "days_since_last_abandoned_checkout",
    "orders_total",
    "mean_inter_order_gap_days",
    "tenure_days",
)
_LOG_LOSS_EPS = 1e-6


class StageRules(StrictConfig):
    """Stage thresholds, each a multiple of the time scale (see the module docstring)."""

    churn_after: float = Field(default=2.0, gt=0)
    """Never bought: churned after this many time scales without any event."""
    churn_after_buyer: float = Field(default=3.5, gt=0)
    """Bought before: churned after this many time scales without any event."""
    lapse_after: float = Field(default=2.5, gt=0)
    """Bought before: lapsing after this many time scales without a purchase."""
    loyal_min_orders: int = Field(default=4, ge=1)
    """Loyal needs at least this many orders ..."""
    loyal_max_gap: float = Field(default=1.25, gt=0)
    """... a mean inter-order gap of at most this many time scales ..."""
    loyal_recent: float = Field(default=2.0, gt=0)
    """... and a purchase within this many time scales."""
    cart_window: float = Field(default=0.5, gt=0)
    """Cart abandoner: a cart add or abandoned checkout within this many time scales."""
    new_within: float = Field(default=0.5, gt=0)
    """New: tenure below this many time scales and no purchase."""


class PurchaseModelSettings(StrictConfig):
    """The calibrated gradient-boosting classifier behind `JourneyModel.predict`."""

    max_iter: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    max_leaf_nodes: int = Field(default=7, ge=2)
    min_samples_leaf: int = Field(default=40, ge=1)
    l2_regularization: float = Field(default=1.0, ge=0)
    calibration: Literal["isotonic", "sigmoid"] = "isotonic"
    calibration_folds: int = Field(default=3, ge=2)
    random_state: int = 0
    num_threads: int = Field(default=1, ge=1)
    """OpenMP threads of the booster; 1 avoids oversubscription on a shared machine."""


class JourneyConfig(StrictConfig):
    """Configuration of the journey stages and of `JourneyModel`."""

    time_scale_days: float | None = Field(default=None, gt=0)
    """Fix the time scale in days instead of measuring it; 1.0 makes the thresholds
    absolute days."""
    horizon_days: float = Field(default=7.0, gt=0)
    """The purchase model predicts an order within this many days after ``as_of``."""
    training_snapshots: int = Field(default=4, ge=1)
    """Training snapshots, one horizon apart, ending at ``as_of - horizon``."""
    rules: StageRules = Field(default_factory=StageRules)
    model: PurchaseModelSettings = Field(default_factory=PurchaseModelSettings)

    @property
    def horizon(self) -> timedelta:
        return timedelta(days=self.horizon_days)


def assign_stages(
    features: pl.DataFrame, config: JourneyConfig | StageRules, scale_days: float
) -> pl.DataFrame:
    """Stage of every row of `buyer_features` output: a frame ``buyer_id``, ``stage``.

    Rules are applied in precedence order (module docstring); ``scale_days`` multiplies
    every threshold. ``stage`` is a String column holding one of `STAGES`.
    """
    rules = config.rules if isinstance(config, JourneyConfig) else config
    missing = [c for c in ("buyer_id", *_RULE_COLUMNS) if c not in features.columns]
    if missing:
        raise ValueError(
            f"assign_stages: features lack column(s) {missing}; build them with "
            "recsys.features.buyer.buyer_features"
        )
    if not scale_days > 0:
        raise ValueError(f"assign_stages: scale_days must be positive, got {scale_days}")
    s = float(scale_days)
    idle = pl.col("days_since_last_event")
    since_purchase = pl.col("days_since_last_purchase")
    orders = pl.col("orders_total")
    bought = orders >= 1
    since_cart = pl.min_horizontal("days_since_last_cart_add", "days_since_last_abandoned_checkout")
    cart_open = (since_purchase.is_null() | (since_cart < since_purchase)) & (
        since_cart <= rules.cart_window * s
    )
    stage = (
        pl.when(~bought & (idle > rules.churn_after * s))
        .then(pl.lit("churned"))
        .when(bought & (idle > rules.churn_after_buyer * s))
        .then(pl.lit("churned"))
        .when(bought & (since_purchase > rules.lapse_after * s))
        .then(pl.lit("lapsing"))
        .when(
            (orders >= rules.loyal_min_orders)
            & (pl.col("mean_inter_order_gap_days") <= rules.loyal_max_gap * s)
            & (since_purchase <= rules.loyal_recent * s)
        )
        .then(pl.lit("loyal"))
        .when(bought)
        .then(pl.lit("repeat"))
        .when(cart_open.fill_null(False))
        .then(pl.lit("cart_abandoner"))
        .when(pl.col("tenure_days") < rules.new_within * s)
        .then(pl.lit("new"))
        .otherwise(pl.lit("browsing"))
    )
    return features.select("buyer_id", stage.alias("stage"))


def stages_at(
    events: pl.DataFrame | pl.LazyFrame,
    as_of: datetime,
    config: JourneyConfig,
    scale_days: float,
    buyers: pl.DataFrame | None = None,
    items: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """``buyer_id``, ``stage`` for every buyer with an event before ``as_of``."""
    return assign_stages(buyer_features(events, as_of, buyers, items), config, scale_days)


def resolve_time_scale(
    events: pl.DataFrame | pl.LazyFrame, as_of: datetime, config: JourneyConfig
) -> float:
    """`JourneyConfig.time_scale_days` when set, else measured on events before ``as_of``."""
    if config.time_scale_days is not None:
        return float(config.time_scale_days)
    return time_scale_days(events, as_of)


def transition_matrix(
    events: pl.DataFrame | pl.LazyFrame,
    times: list[datetime],
    config: JourneyConfig | None = None,
    *,
    buyers: pl.DataFrame | None = None,
    items: pl.DataFrame | None = None,
    scale_days: float | None = None,
) -> pl.DataFrame:
    """Stage-to-stage moves between consecutive moments, pooled over all pairs.

    For each ``(times[i], times[i+1])`` every buyer with a stage at both moments (an event
    before ``times[i]``) counts one move ``from_stage -> to_stage``. The answer has one row
    per observed ``from_stage`` and every ``to_stage`` of `STAGES` (zero counts included):
    ``from_stage``, ``to_stage``, ``count``, ``probability`` (count / row total, so each
    ``from_stage``'s probabilities sum to 1). The time scale is ``scale_days``, else the
    config's, else measured on events before the last moment, and is the same for all
    moments.
    """
    config = config or JourneyConfig()
    moments = [as_utc(t) for t in times]
    if len(moments) < 2 or any(b <= a for a, b in itertools.pairwise(moments)):
        raise ValueError(
            "transition_matrix: times must hold at least two strictly increasing moments, "
            f"got {times!r}"
        )
    scale = (
        scale_days if scale_days is not None else resolve_time_scale(events, moments[-1], config)
    )
    stages = [stages_at(events, t, config, scale, buyers, items) for t in moments]
    moves = pl.concat(
        [
            before.join(after, on="buyer_id", how="inner", suffix="_to").select(
                pl.col("stage").alias("from_stage"), pl.col("stage_to").alias("to_stage")
            )
            for before, after in itertools.pairwise(stages)
        ]
    )
    counts = moves.group_by("from_stage", "to_stage").agg(pl.len().cast(pl.Int64).alias("count"))
    rank = {stage: i for i, stage in enumerate(STAGES)}
    observed = sorted(set(moves["from_stage"].to_list()), key=rank.__getitem__)
    grid = pl.DataFrame(
        {
            "from_stage": [f for f in observed for _ in STAGES],
            "to_stage": [t for _ in observed for t in STAGES],
        },
        schema={"from_stage": pl.String, "to_stage": pl.String},
    )
    return (
        grid.join(counts, on=["from_stage", "to_stage"], how="left", maintain_order="left")
        .with_columns(pl.col("count").fill_null(0))
        .with_columns(
            (pl.col("count") / pl.col("count").sum().over("from_stage")).alias("probability")
        )
    )


@dataclass(frozen=True)
class ProbabilityMetrics:
    """Quality of predicted probabilities against 0/1 outcomes (lower Brier/log loss is better)."""

    brier: float
    log_loss: float
    roc_auc: float
    """NaN when the outcomes hold a single class."""

    @classmethod
    def compute(cls, y: np.ndarray, p: np.ndarray) -> ProbabilityMetrics:
        """Brier score, log loss (probabilities clipped to [1e-6, 1 - 1e-6]) and ROC AUC."""
        p = np.asarray(p, dtype=np.float64)
        clipped = np.clip(p, _LOG_LOSS_EPS, 1 - _LOG_LOSS_EPS)
        auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
        return cls(
            brier=float(brier_score_loss(y, p)),
            log_loss=float(log_loss(y, clipped, labels=[0, 1])),
            roc_auc=auc,
        )


@dataclass(frozen=True)
class HoldoutReport:
    """Calibration and ranking quality of the purchase model on a later time window."""

    as_of: datetime
    """Features as of this moment; outcomes are purchases in the horizon after it."""
    horizon_days: float
    n_buyers: int
    positive_rate: float
    model: ProbabilityMetrics
    stage_baseline: ProbabilityMetrics
    """Each buyer gets the training purchase rate of their stage."""
    base_rate: ProbabilityMetrics
    """Everyone gets the training purchase rate."""
    reliability: pl.DataFrame = field(repr=False)
    """Up to 10 bins of equal size by predicted p: n, mean_predicted, observed_rate."""

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers (for logs and experiment tracking)."""
        out: dict[str, Any] = {
            "as_of": self.as_of.isoformat(),
            "horizon_days": self.horizon_days,
            "n_buyers": self.n_buyers,
            "positive_rate": self.positive_rate,
        }
        for name in ("model", "stage_baseline", "base_rate"):
            metrics: ProbabilityMetrics = getattr(self, name)
            for key in ("brier", "log_loss", "roc_auc"):
                out[f"{name}_{key}"] = getattr(metrics, key)
        return out

    def format(self) -> str:
        """A small text table for people."""
        lines = [
            f"purchase within {self.horizon_days:g} days after {self.as_of:%Y-%m-%d %H:%M}: "
            f"{self.n_buyers} buyers, {self.positive_rate:.1%} bought",
            f"  {'':<15}{'brier':>9}{'log loss':>10}{'roc auc':>9}",
        ]
        for name in ("model", "stage_baseline", "base_rate"):
            m: ProbabilityMetrics = getattr(self, name)
            lines.append(f"  {name:<15}{m.brier:>9.4f}{m.log_loss:>10.4f}{m.roc_auc:>9.3f}")
        return "\n".join(lines)


class JourneyModel(Estimator[JourneyConfig]):
    """Journey stages plus a calibrated probability of purchase within a horizon.

    Fitted state: ``time_scale_days_`` (the scale used for stages at fit and predict
    time), ``feature_names_`` (model inputs, in order; features without a single value in
    training are left out), ``extra_feature_names_`` (columns taken from
    ``extra_features``), ``classifier_`` (the calibrated sklearn model),
    ``stage_rates_`` (training purchase rate per stage), ``base_rate_``, ``n_train_``,
    ``skipped_`` (why the purchase model could not be fitted on this data, else None: the
    stages are still assigned by the rules, and P(purchase) falls back to the training
    purchase rate of the buyer's stage, else of all buyers, else is unknown, null, when
    there was nothing to count) and ``notes_`` (features left out for want of values or
    variance).

    Examples
    --------
    >>> model = JourneyModel(JourneyConfig(horizon_days=7))
    >>> model.is_fitted
    False
    """

    config_class = JourneyConfig

    time_scale_days_: float
    feature_names_: list[str]
    extra_feature_names_: list[str]
    classifier_: CalibratedClassifierCV | None
    stage_rates_: dict[str, float]
    base_rate_: float
    n_train_: int
    skipped_: str | None
    notes_: list[str]

    def fit(
        self,
        events: pl.DataFrame | pl.LazyFrame,
        as_of: datetime,
        buyers: pl.DataFrame | None = None,
        items: pl.DataFrame | None = None,
        extra_features: pl.DataFrame | None = None,
    ) -> Self:
        """Learn P(purchase within the horizon) from events before ``as_of``.

        ``extra_features`` (``buyer_id`` + numeric columns, e.g. matrix-factorization
        embeddings) are joined to every snapshot as they are: pass values computed before
        the training window to avoid leaking its purchases. Buyers missing from it get NaN.

        When the data cannot support the purchase model, it is skipped (`skipped_` says
        why) and the stages are still assigned; it never raises for the data's shape.
        Cost: `training_snapshots` (default 4) passes of `buyer_features` over the E events
        before ``as_of``; the training rows are snapshots x buyers with an event.
        """
        return super().fit(events, as_of, buyers, items, extra_features)

    def _fit(
        self,
        events: pl.DataFrame | pl.LazyFrame,
        as_of: datetime,
        buyers: pl.DataFrame | None,
        items: pl.DataFrame | None,
        extra_features: pl.DataFrame | None,
    ) -> None:
        as_of = as_utc(as_of)
        events = events.lazy()
        horizon = self.config.horizon
        # The scale is measured on what the latest training features could see, so no
        # label-window purchase influences anything the model learns from.
        self.time_scale_days_ = resolve_time_scale(events, as_of - horizon, self.config)
        self.extra_feature_names_ = _extra_columns(extra_features)
        self.feature_names_ = [*BUYER_FEATURES, _STAGE_FEATURE, *self.extra_feature_names_]
        self.classifier_ = None
        self.skipped_ = None
        self.notes_ = []
        self.stage_rates_ = {}
        self.base_rate_ = float("nan")
        self.n_train_ = 0
        try:
            self._fit_classifier(events, as_of, buyers, items, extra_features)
        except CannotFitError as exc:
            # Stages come from rules and need no fit; only P(purchase) is unknown.
            self.skipped_ = str(exc)
            log.info("journey model: purchase model skipped: %s", exc)

    def _fit_classifier(
        self,
        events: pl.LazyFrame,
        as_of: datetime,
        buyers: pl.DataFrame | None,
        items: pl.DataFrame | None,
        extra_features: pl.DataFrame | None,
    ) -> None:
        """Fit the calibrated purchase model; `CannotFitError` says why the data cannot."""
        horizon = self.config.horizon
        frames = []
        for k in range(self.config.training_snapshots):
            start = as_of - horizon * (k + 1)
            frame = self._design(events, start, buyers, items, extra_features)
            if frame.height:
                labels = _purchasers(events, start, horizon)
                frames.append(frame.join(labels, on="buyer_id", how="left", maintain_order="left"))
        if not frames:
            raise CannotFitError(
                f"no buyer has an event before {as_of - horizon:%Y-%m-%d %H:%M} (as_of "
                f"{as_of:%Y-%m-%d %H:%M} minus the {self.config.horizon_days:g}-day horizon), "
                "so no purchase can be learned from a past; give more history or a shorter "
                "model.journey.horizon_days"
            )
        train = pl.concat(frames).with_columns(pl.col("label").fill_null(0))
        y = train["label"].to_numpy().astype(np.int64)
        self.base_rate_ = float(y.mean())
        self.n_train_ = len(y)
        rates = dict(train.group_by("stage").agg(pl.col("label").mean()).iter_rows())
        self.stage_rates_ = {stage: float(rates[stage]) for stage in STAGES if stage in rates}
        self._check_labels(y, as_of)
        # A column without values (no items table: no categories; no checkouts), with too
        # few for every fold to see one, or with one value says nothing, and the booster
        # cannot bin a column without values: leave them out, and say so.
        check = usable_columns(train, self.feature_names_)
        self.notes_ = check.notes("journey model")
        if check.dropped:
            log.info("journey model: %s", "; ".join(self.notes_))
        self.feature_names_ = check.kept
        if not self.feature_names_:
            raise CannotFitError(
                "no feature has values that vary between buyers "
                f"({', '.join(sorted(check.dropped))} all left out)"
            )
        X = self._matrix(train)
        settings = self.config.model
        booster = HistGradientBoostingClassifier(
            max_iter=settings.max_iter,
            learning_rate=settings.learning_rate,
            max_leaf_nodes=settings.max_leaf_nodes,
            min_samples_leaf=settings.min_samples_leaf,
            l2_regularization=settings.l2_regularization,
            categorical_features=(
                [self.feature_names_.index(_STAGE_FEATURE)]
                if _STAGE_FEATURE in self.feature_names_
                else None
            ),
            random_state=settings.random_state,
        )
        classifier = CalibratedClassifierCV(
            booster, method=settings.calibration, cv=settings.calibration_folds
        )
        try:
            with limit_threads(settings.num_threads, "openmp"):
                classifier.fit(X, y)
        except ValueError as exc:  # e.g. a fold the booster cannot bin
            raise CannotFitError(f"the calibrated classifier could not be fitted ({exc})") from None
        self.classifier_ = classifier
        log.info(
            "journey model: %d training rows from %d snapshots, base rate %.3f, scale %.1f days",
            self.n_train_,
            len(frames),
            self.base_rate_,
            self.time_scale_days_,
        )

    def _check_labels(self, y: np.ndarray, as_of: datetime) -> None:
        positives = int(y.sum())
        minority = min(positives, len(y) - positives)
        folds = self.config.model.calibration_folds
        if minority < folds:
            raise CannotFitError(
                f"the training windows before {as_of:%Y-%m-%d %H:%M} have {positives} "
                f"buyers who purchased and {len(y) - positives} who did not; calibration "
                f"needs at least {folds} of each. Use more history (training_snapshots), "
                "a longer horizon_days, or fewer calibration_folds."
            )

    def _design(
        self,
        events: pl.LazyFrame,
        as_of: datetime,
        buyers: pl.DataFrame | None,
        items: pl.DataFrame | None,
        extra_features: pl.DataFrame | None,
    ) -> pl.DataFrame:
        """buyer_id, stage and the model inputs as of ``as_of``."""
        return self._design_from(buyer_features(events, as_of, buyers, items), extra_features)

    def _design_from(
        self, features: pl.DataFrame, extra_features: pl.DataFrame | None
    ) -> pl.DataFrame:
        """`_design` from `buyer_features` output computed already."""
        stages = assign_stages(features, self.config, self.time_scale_days_)
        frame = features.with_columns(
            stages["stage"],
            stages["stage"]
            .replace_strict(list(STAGES), list(range(len(STAGES))), return_dtype=pl.Float64)
            .alias(_STAGE_FEATURE),
        )
        if self.extra_feature_names_:
            if extra_features is None:
                raise ValueError(
                    "JourneyModel: fitted with extra_features columns "
                    f"{self.extra_feature_names_}; pass extra_features with them"
                )
            wanted = ["buyer_id", *self.extra_feature_names_]
            absent = [c for c in wanted if c not in extra_features.columns]
            if absent:
                raise ValueError(
                    f"JourneyModel: extra_features lack column(s) {absent} the model was "
                    "fitted with"
                )
            _check_one_row_per_buyer(extra_features)
            extra = extra_features.select(
                pl.col("buyer_id").cast(pl.String),
                *[pl.col(c).cast(pl.Float64) for c in self.extra_feature_names_],
            )
            frame = frame.join(extra, on="buyer_id", how="left", maintain_order="left")
        return frame

    def _matrix(self, frame: pl.DataFrame) -> np.ndarray:
        return frame.select(
            [pl.col(c).cast(pl.Float64).fill_null(np.nan) for c in self.feature_names_]
        ).to_numpy()

    def _score(self, frame: pl.DataFrame) -> np.ndarray:
        if frame.height == 0:
            return np.zeros(0, dtype=np.float64)
        if self.classifier_ is None:  # skipped: the stage's rate, else the overall rate
            return (
                frame["stage"]
                .replace_strict(self.stage_rates_, default=self.base_rate_, return_dtype=pl.Float64)
                .to_numpy()
            )
        with limit_threads(self.config.model.num_threads, "openmp"):
            proba = self.classifier_.predict_proba(self._matrix(frame))
        return np.asarray(proba[:, 1], dtype=np.float64)

    def predict(
        self,
        events: pl.DataFrame | pl.LazyFrame,
        as_of: datetime,
        buyers: pl.DataFrame | None = None,
        items: pl.DataFrame | None = None,
        extra_features: pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        """``buyer_id``, ``stage``, ``p_purchase`` (within the horizon after ``as_of``).

        One row per buyer with an event before ``as_of``, sorted by ``buyer_id``.
        """
        self.check_is_fitted("predict")
        features = buyer_features(events.lazy(), as_utc(as_of), buyers, items)
        return self.predict_features(features, extra_features)

    def predict_features(
        self, features: pl.DataFrame, extra_features: pl.DataFrame | None = None
    ) -> pl.DataFrame:
        """`predict` from ``buyer_features(events, as_of, buyers, items)`` computed by the
        caller: the same answer, for a caller that needs those features too (they are the
        costly part, so computing them once halves the work).
        """
        self.check_is_fitted("predict_features")
        frame = self._design_from(features, extra_features)
        return frame.select("buyer_id", "stage").with_columns(
            pl.Series("p_purchase", self._score(frame), dtype=pl.Float64).fill_nan(None)
        )

    def stage_of(
        self,
        events: pl.DataFrame | pl.LazyFrame,
        as_of: datetime,
        buyers: pl.DataFrame | None = None,
        items: pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        """``buyer_id``, ``stage`` as of ``as_of``, with the fitted time scale."""
        self.check_is_fitted("stage_of")
        return stages_at(events, as_of, self.config, self.time_scale_days_, buyers, items)

    def evaluate_holdout(
        self,
        events: pl.DataFrame | pl.LazyFrame,
        as_of: datetime,
        buyers: pl.DataFrame | None = None,
        items: pl.DataFrame | None = None,
        extra_features: pl.DataFrame | None = None,
    ) -> HoldoutReport:
        """Fit a copy of this model (same config) as of ``as_of - h`` and judge it on the
        purchases in ``[as_of - h, as_of)`` (h = horizon); this model is left unchanged.

        The copy trains on features as of ``as_of - 2h`` (and earlier snapshots), so the
        evaluation window is never seen in training.
        """
        as_of = as_utc(as_of)
        events = events.lazy()
        horizon = self.config.horizon
        start = as_of - horizon
        model = type(self).from_config(self.get_config())
        model.fit(events, start, buyers, items, extra_features)
        if model.skipped_ is not None:
            raise ValueError(
                f"JourneyModel.evaluate_holdout: the purchase model cannot be fitted as of "
                f"{start:%Y-%m-%d %H:%M}: {model.skipped_}"
            )
        frame = model._design(events, start, buyers, items, extra_features)
        labels = _purchasers(events, start, horizon)
        frame = frame.join(labels, on="buyer_id", how="left", maintain_order="left")
        y = frame["label"].fill_null(0).to_numpy().astype(np.int64)
        p = model._score(frame)
        by_stage = frame["stage"].replace_strict(
            model.stage_rates_, default=model.base_rate_, return_dtype=pl.Float64
        )
        return HoldoutReport(
            as_of=start,
            horizon_days=self.config.horizon_days,
            n_buyers=len(y),
            positive_rate=float(y.mean()) if len(y) else float("nan"),
            model=ProbabilityMetrics.compute(y, p),
            stage_baseline=ProbabilityMetrics.compute(y, by_stage.to_numpy()),
            base_rate=ProbabilityMetrics.compute(y, np.full(len(y), model.base_rate_)),
            reliability=_reliability(y, p),
        )

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to directory ``path`` (created); returns the path.

        Files: ``model.json`` (format, config, fitted numbers) and ``classifier.joblib``
        (the sklearn model; load it only from a trusted source, as any pickle).
        """
        self.check_is_fitted("save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "sklearn_version": sklearn.__version__,
            "config": self.config.to_dict(),
            "time_scale_days": self.time_scale_days_,
            "feature_names": self.feature_names_,
            "extra_feature_names": self.extra_feature_names_,
            "stage_rates": self.stage_rates_,
            "base_rate": self.base_rate_,
            "n_train": self.n_train_,
            "skipped": self.skipped_,
            "notes": self.notes_,
        }
        if self.classifier_ is not None:
            joblib.dump(self.classifier_, path / "classifier.joblib")
        else:
            (path / "classifier.joblib").unlink(missing_ok=True)
        (path / "model.json").write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> JourneyModel:
        """Read a model written by `save`; it predicts exactly like the saved one."""
        path = Path(path)
        meta_file = path / "model.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{meta_file} does not exist: not a saved JourneyModel")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != _FORMAT or meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{meta_file}: format {meta.get('format')!r} version "
                f"{meta.get('format_version')!r} is not a {_FORMAT} v{_FORMAT_VERSION} model"
            )
        if meta.get("sklearn_version") != sklearn.__version__:
            log.warning(
                "%s was saved with scikit-learn %s, loading with %s",
                path,
                meta.get("sklearn_version"),
                sklearn.__version__,
            )
        model = cls.from_config(meta["config"])
        model.time_scale_days_ = float(meta["time_scale_days"])
        model.feature_names_ = list(meta["feature_names"])
        model.extra_feature_names_ = list(meta["extra_feature_names"])
        model.stage_rates_ = {str(k): float(v) for k, v in meta["stage_rates"].items()}
        model.base_rate_ = float(meta["base_rate"])
        model.n_train_ = int(meta["n_train"])
        model.skipped_ = meta.get("skipped")
        model.notes_ = list(meta.get("notes", []))
        model.classifier_ = None if model.skipped_ else joblib.load(path / "classifier.joblib")
        model._fitted = True
        return model


def _extra_columns(extra_features: pl.DataFrame | None) -> list[str]:
    """Numeric columns of ``extra_features`` other than ``buyer_id`` (validated)."""
    if extra_features is None:
        return []
    if "buyer_id" not in extra_features.columns:
        raise ValueError("extra_features must have a buyer_id column to join on")
    _check_one_row_per_buyer(extra_features)
    names = [c for c in extra_features.columns if c != "buyer_id"]
    bad = [
        c
        for c in names
        if not (extra_features.schema[c].is_numeric() or extra_features.schema[c] == pl.Boolean)
    ]
    if bad:
        raise ValueError(
            f"extra_features column(s) {bad} are not numeric; encode them as numbers first"
        )
    clash = [c for c in names if c in BUYER_FEATURES or c in ("stage", _STAGE_FEATURE, "label")]
    if clash:
        raise ValueError(f"extra_features column(s) {clash} clash with built-in feature names")
    return names


def _check_one_row_per_buyer(extra_features: pl.DataFrame) -> None:
    duplicated = extra_features["buyer_id"].is_duplicated()
    if duplicated.any():
        examples = extra_features["buyer_id"].filter(duplicated).unique().sort().head(3).to_list()
        raise ValueError(
            f"extra_features has {int(duplicated.sum())} rows with a repeated buyer_id "
            f"(e.g. {examples}); give one row per buyer"
        )


def _purchasers(events: pl.LazyFrame, start: datetime, horizon: timedelta) -> pl.DataFrame:
    """``buyer_id``, ``label`` = 1 for buyers with a purchase in ``[start, start + horizon)``."""
    return (
        events.filter(
            (pl.col("event_type") == "purchase")
            & (pl.col("ts") >= start)
            & (pl.col("ts") < start + horizon)
        )
        .select(pl.col("buyer_id").cast(pl.String))
        .unique()
        .with_columns(pl.lit(1, dtype=pl.Int64).alias("label"))
        .collect()
    )


def _reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pl.DataFrame:
    """Observed purchase rate against mean prediction in equal-size bins of prediction."""
    frame = pl.DataFrame({"p": p, "y": y.astype(np.float64)}).sort("p", "y")
    n = frame.height
    return (
        frame.with_columns((pl.int_range(n) * bins // max(n, 1)).alias("bin"))
        .group_by("bin")
        .agg(
            pl.len().alias("n"),
            pl.col("p").mean().alias("mean_predicted"),
            pl.col("y").mean().alias("observed_rate"),
        )
        .sort("bin")
    )
