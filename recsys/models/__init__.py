"""Models: a shared `Estimator` flow; matrix factorization of buyer x item interactions."""

from recsys.models.base import Estimator, NotFittedError
from recsys.models.mf import (
    FoldedBuyers,
    MatrixFactorization,
    MFConfig,
    OfferScores,
    PairScores,
    Recommendations,
)

__all__ = [
    "Estimator",
    "FoldedBuyers",
    "MFConfig",
    "MatrixFactorization",
    "NotFittedError",
    "OfferScores",
    "PairScores",
    "Recommendations",
]
