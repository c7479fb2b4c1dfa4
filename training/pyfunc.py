"""The ranker as an MLflow pyfunc model: a pairs DataFrame in, the scores table out.

`mlflow.pyfunc.load_model("models:/promo-ranker@champion").predict(pairs)` answers the
data contract's target list (buyer_id, offer_id) with p_redeem, uplift, expected_value,
score and cold_start, one row per pair in input order. The saved ranker directory travels
as the model's `ranker` artifact, so the registry holds everything scoring needs.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import polars as pl
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema

from recsys.data.loader import conform_table
from recsys.data.schema import PAIRS, SCORES_SCHEMA
from recsys.locations import RANKER_ARTIFACT
from recsys.models.ranker import PromoRanker

_MLFLOW_TYPES = {pl.String: "string", pl.Float64: "double", pl.Boolean: "boolean"}


class RankerModel(PythonModel):
    """Scores pairs with the `PromoRanker` saved in the model's artifacts."""

    def load_context(self, context: Any) -> None:
        self.ranker = PromoRanker.load(context.artifacts[RANKER_ARTIFACT])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        pairs = conform_table(pl.from_pandas(model_input), PAIRS, "model input")
        return self.ranker.score(pairs).to_pandas()


def signature() -> ModelSignature:
    """Pairs in, the contract's scores table out."""
    inputs = Schema([ColSpec("string", name) for name in ("buyer_id", "offer_id")])
    outputs = Schema(
        [ColSpec(_MLFLOW_TYPES[dtype], name) for name, dtype in SCORES_SCHEMA.items()]  # type: ignore[index]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)
