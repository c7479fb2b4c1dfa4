"""Evaluation metrics: pure functions from numpy arrays to numbers.

- :mod:`~recsys.evaluation.ranking` — top-k item ranking (precision, recall, NDCG, hit rate).
- :mod:`~recsys.evaluation.targeting` — gain@k, ROC AUC, calibration of ``p_redeem``.
- :mod:`~recsys.evaluation.uplift` — Qini, AUUC and uplift@k on randomized or logged data.
- :mod:`~recsys.evaluation.off_policy` — IPS, SNIPS and doubly robust policy values.

No I/O and no infrastructure: every function takes arrays and returns floats or small
typed results, so training, serving and notebooks all judge models the same way.
"""

from recsys.evaluation.off_policy import OPEEstimate, doubly_robust, ips, snips
from recsys.evaluation.ranking import hit_rate_at_k, ndcg_at_k, precision_at_k, recall_at_k
from recsys.evaluation.targeting import (
    DEFAULT_FRACTIONS,
    CalibrationTable,
    brier_score,
    calibration_table,
    expected_calibration_error,
    gain_at_k,
    gain_curve,
    log_loss,
    roc_auc,
)
from recsys.evaluation.uplift import auuc, qini_coefficient, qini_curve, uplift_at_k, uplift_curve

__all__ = [
    "DEFAULT_FRACTIONS",
    "CalibrationTable",
    "OPEEstimate",
    "auuc",
    "brier_score",
    "calibration_table",
    "doubly_robust",
    "expected_calibration_error",
    "gain_at_k",
    "gain_curve",
    "hit_rate_at_k",
    "ips",
    "log_loss",
    "ndcg_at_k",
    "precision_at_k",
    "qini_coefficient",
    "qini_curve",
    "recall_at_k",
    "roc_auc",
    "snips",
    "uplift_at_k",
    "uplift_curve",
]
