"""Cross-fitted outcome models and doubly robust scores of every action of a decision.

For decision i with logged action A_i (taken with probability p_i), outcome Y_i and any
action a it could have taken, the doubly robust score is

    Gamma_i(a) = q(x_i, a) + 1[A_i = a] / p_i * (Y_i - q(x_i, a)),

with q an outcome model fitted on *other buyers* (folds by buyer: the model scoring a
decision never saw its buyer). Its mean over decisions is an unbiased estimate of the
mean outcome had every decision taken a -- whatever q is, since p_i is the logged
probability; a good q only lowers the variance. Scores are kept for two outcomes: the
realized profit (the reward every policy is valued by) and the purchase at the seller
(0/1, far less noisy: what effects on purchases are learned from).

Cost: `folds` fits of two gradient-boosted models on the logged rows (one per decision),
predictions on every option row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import polars as pl
from pydantic import Field
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from recsys.config import StrictConfig
from recsys.learning.matrix import FeatureSpec
from recsys.models.threads import limit_threads


class OutcomeConfig(StrictConfig):
    """Settings of the outcome models behind the doubly robust scores."""

    folds: int = Field(3, ge=2, description="folds by buyer for cross-fitting")
    max_iter: int = Field(40, ge=10)
    learning_rate: float = Field(0.2, gt=0, le=1)
    max_leaf_nodes: int = Field(8, ge=2)
    min_samples_leaf: int | None = Field(
        None, ge=1, description="default: 1 % of the training rows, at least 20"
    )
    l2_regularization: float = Field(1.0, ge=0)
    num_threads: int = Field(1, ge=1, description="OpenMP threads of the boosters")
    random_state: int = 0


class ConstantModel:
    """Predicts one number: the fallback when an outcome has a single value in training
    (no purchase at all, say), where a classifier cannot be fitted."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.value)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.full(len(x), self.value)
        return np.column_stack([1 - p, p])


OutcomeModel: TypeAlias = (
    HistGradientBoostingClassifier | HistGradientBoostingRegressor | ConstantModel
)


def fit_outcome(
    task: Literal["classify", "regress"],
    x: np.ndarray,
    y: np.ndarray,
    spec: FeatureSpec,
    config: OutcomeConfig,
) -> OutcomeModel:
    """A gradient-boosted model of y on x, or a constant when it cannot learn.

    Unweighted: the action taken is a feature, and the logging policy's inputs (journey
    stage, history) are among the others, so conditioning on them is what removes its
    targeting; the doubly robust scores stay unbiased whatever this model is (the
    logged propensities correct it). (Weighted fits would also cost scikit-learn a
    weighted percentile per feature and bin: most of a fit's time.)
    """
    if len(y) == 0:
        return ConstantModel(0.0)
    mean = float(np.mean(y))
    if np.unique(y).size < 2 or x.shape[1] == 0 or len(y) < 40:
        return ConstantModel(mean)
    params: dict[str, Any] = {
        "learning_rate": config.learning_rate,
        "max_iter": config.max_iter,
        "max_leaf_nodes": config.max_leaf_nodes,
        "min_samples_leaf": config.min_samples_leaf or max(20, len(y) // 100),
        "l2_regularization": config.l2_regularization,
        "categorical_features": spec.categorical_mask or None,
        "random_state": config.random_state,
        "early_stopping": len(y) >= 2000,
        "n_iter_no_change": 5,
    }
    booster: HistGradientBoostingClassifier | HistGradientBoostingRegressor = (
        HistGradientBoostingClassifier(**params)
        if task == "classify"
        else HistGradientBoostingRegressor(**params)
    )
    with limit_threads(config.num_threads, "openmp"):
        return booster.fit(x, y)


def predict_outcome(model: OutcomeModel, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """P(y = 1) of a classifier, the prediction of a regressor."""
    if len(x) == 0:
        return np.empty(0)
    with limit_threads(threads, "openmp"):
        if isinstance(model, HistGradientBoostingClassifier):
            return np.asarray(model.predict_proba(x)[:, 1])
        return np.asarray(model.predict(x))


@dataclass(frozen=True)
class DRScores:
    """Per option row (aligned with the options frame): cross-fitted outcome predictions
    and doubly robust scores, for the purchase (0/1) and the realized profit."""

    q_purchase: np.ndarray
    q_reward: np.ndarray
    dr_purchase: np.ndarray
    dr_reward: np.ndarray
    dr_value: np.ndarray | None = None
    """Doubly robust score of the *valued purchase* (`recsys.learning.values.
    valued_purchase_scores`): what candidates are compared by when selection uses it."""


def cross_fit_scores(options: pl.DataFrame, spec: FeatureSpec, config: OutcomeConfig) -> DRScores:
    """Doubly robust scores of every option row.

    `options` has one row per (decision, action) with the decision's `fold`,
    `is_logged` (this row is the action taken), `propensity`, `purchased` and `reward`,
    and the feature columns of `spec` (the action's kind among them).
    """
    x = spec.matrix(options)
    folds = options["fold"].to_numpy()
    logged = options["is_logged"].to_numpy()
    y = options["purchased"].to_numpy().astype(np.float64)
    r = options["reward"].to_numpy().astype(np.float64)
    p = options["propensity"].to_numpy().astype(np.float64)
    q_y = np.zeros(options.height)
    q_r = np.zeros(options.height)
    for fold in np.unique(folds):
        train = logged & (folds != fold)
        test = folds == fold
        if not train.any():  # one fold only: nothing to learn from but itself
            train = logged
        for target, task, out in ((y, "classify", q_y), (r, "regress", q_r)):
            model = fit_outcome(task, x[train], target[train], spec, config)  # type: ignore[arg-type]
            out[test] = predict_outcome(model, x[test], config.num_threads)
    taken = logged / np.clip(p, 1e-6, 1.0)
    return DRScores(
        q_purchase=q_y,
        q_reward=q_r,
        dr_purchase=q_y + taken * (y - q_y),
        dr_reward=q_r + taken * (r - q_r),
    )
