"""Response: how likely a buyer redeems an offer if it is issued.

A gradient-boosted classifier of P(redeem | issued) over the pair features of
`recsys.features.pairs` (the buyer's history with the offer's seller, items and category,
past offers and redemptions, the offer's terms) plus per-buyer features (journey stage,
RFM, MF affinity), each row's features as of its exposure's snapshot (no leakage). Every
issued exposure teaches it, randomized or sent by hand: whom a campaign went to does not
bias P(redeem | issued) the way it biases an effect.

What an offer *changes* -- the uplift, and so the expected incremental profit -- is
learned from randomized decisions by `recsys.learning`; P(redeem) is the cost side of
that profit (every redemption costs the discount, bought anyway or not).

Cost: one feature pass per snapshot over that snapshot's issued exposures; one fit on
all issued exposures (E rows).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field
from sklearn.ensemble import HistGradientBoostingClassifier

from recsys.config import StrictConfig
from recsys.data.dataset import Dataset
from recsys.features.buyer import ATTRIBUTE_PREFIX
from recsys.features.pairs import (
    HISTORY_FEATURES,
    OFFER_FEATURES,
    SCOPE_FEATURES,
    SELLER_FEATURES,
    FeatureStore,
    exposure_outcomes,
    purchase_lines,
)
from recsys.learning.matrix import FeatureSpec
from recsys.models.base import Estimator
from recsys.models.threads import limit_threads

BuyerTable = Callable[[datetime, pl.Series], pl.DataFrame]
"""Per-buyer features (buyer_id + numeric columns, optional `journey_stage`) as of a time,
for (at least) the given buyer ids: ``buyer_table(as_of, buyer_ids)``."""

MF_FEATURES: tuple[str, ...] = ("mf_affinity_mean", "mf_affinity_max")
PAIR_FEATURES: tuple[str, ...] = (
    OFFER_FEATURES + SELLER_FEATURES + SCOPE_FEATURES + HISTORY_FEATURES + MF_FEATURES
)
_NOT_FEATURES = frozenset({"propensity", "redeemed", "purchased"})
PairExtra = Callable[[pl.DataFrame], pl.DataFrame]
"""Adds pair-level columns (e.g. MF affinity) to a frame of (buyer_id, offer_id, ...)."""


class ResponseConfig(StrictConfig):
    """Settings of the response model."""

    horizon_days: float = Field(7.0, gt=0, description="outcome window after an exposure")
    max_snapshots: int = Field(8, ge=1, description="feature snapshots for training rows")
    min_response_rows: int = Field(50, ge=1)
    learning_rate: float = Field(0.1, gt=0, le=1)
    max_iter: int = Field(100, ge=10, description="upper bound; early stopping picks fewer")
    validation_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="held out to stop adding trees when they stop helping"
    )
    max_leaf_nodes: int = Field(6, ge=2)
    min_samples_leaf: int | None = Field(
        None, ge=1, description="default: 2 % of the training rows (at least 40)"
    )
    l2_regularization: float = Field(1.0, ge=0)
    max_rows: int = Field(
        1_000_000,
        ge=1_000,
        description="issued exposures learned from at most: every redeemed one and a random "
        "share of the others, weighted back by its inverse (memory grows with the rows)",
    )
    random_state: int = 0
    num_threads: int = Field(
        1, ge=1, description="OpenMP threads of the booster; oversubscribed cores are 10x slower"
    )


@dataclass
class Support:
    """What the data allowed the model to learn, and why not."""

    response: bool = False
    notes: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


def sample_issued(outcomes: pl.DataFrame, max_rows: int, seed: int = 0) -> pl.DataFrame:
    """At most about `max_rows` of the issued exposures: all the redeemed ones and a random
    share of the others (a fixed hash of the exposure id), with `_weight` = 1 / that share
    for them (1 for the redeemed), so the weighted rows estimate P(redeem) as all would.

    Redemptions are rare (0.2 % of a grocer's coupons): the sample keeps every positive
    and enough negatives, and the stage's memory and time stop growing with the
    exposures. Unchanged (no `_weight`) when the rows fit. Cost: one pass over them.
    """
    if outcomes.height <= max_rows:
        return outcomes
    redeemed = outcomes["redeemed"] > 0
    positives = int(redeemed.sum())
    share = max(max_rows - positives, 1) / max(outcomes.height - positives, 1)
    draw = pl.col("exposure_id").hash(seed) % 1_000_000 < round(share * 1_000_000)
    return outcomes.filter((pl.col("redeemed") > 0) | draw).with_columns(
        pl.when(pl.col("redeemed") > 0).then(1.0).otherwise(1.0 / share).alias("_weight")
    )


class ResponseModel(Estimator[ResponseConfig]):
    """P(redeem | issued) for (buyer, offer) pairs; see the module docstring."""

    config_class = ResponseConfig

    def fit(
        self,
        dataset: Dataset,
        buyer_table: BuyerTable | None = None,
        pair_extra: PairExtra | None = None,
        as_of: datetime | None = None,
    ) -> ResponseModel:
        """Learn from `dataset`'s issued exposures.

        `buyer_table(as_of, buyer_ids)` adds per-buyer features (the ids are the buyers of
        the exposures featured as of `as_of`); `pair_extra(rows)` adds pair-level ones (it
        must only use information from before each row's time). With `as_of`, purchases
        from then on are not read (the events may go on: they are cut where read).
        """
        return super().fit(dataset, buyer_table, pair_extra, as_of)

    def _fit(
        self,
        dataset: Dataset,
        buyer_table: BuyerTable | None,
        pair_extra: PairExtra | None,
        as_of: datetime | None,
    ) -> None:
        cfg = self.config
        support = Support()
        self.model_: HistGradientBoostingClassifier | None = None
        self.spec_ = FeatureSpec(())
        rows = self._training_rows(dataset, buyer_table, as_of)
        if pair_extra is not None and rows.height:
            rows = pair_extra(rows)
        # Joins do not promise row order; the booster's validation split depends on it.
        rows = rows.sort("exposure_id") if rows.height else rows
        support.rows = {"issued": rows.height}
        if "_weight" in rows.columns:
            support.notes.append(
                f"response learned from {rows.height:,} issued exposures: every redeemed one "
                "and a random share of the others, weighted back (response.max_rows = "
                f"{cfg.max_rows:,})"
            )
        redeemed = int(rows["redeemed"].sum()) if rows.height else 0
        if rows.height < cfg.min_response_rows or redeemed in (0, rows.height):
            support.notes.append(
                f"response not learned: {rows.height} issued exposures with {redeemed} "
                f"redemptions (need {cfg.min_response_rows} rows with both outcomes); offers "
                "are costed as if nobody redeemed them"
            )
        else:
            numeric, categorical = _feature_candidates(rows.schema)
            self.spec_ = FeatureSpec.fit(rows, numeric, categorical)
            support.notes += [f"response: {n}" for n in self.spec_.notes() if "not in" not in n]
            if self.spec_.columns:
                weight = rows["_weight"].to_numpy() if "_weight" in rows.columns else None
                self.model_ = self._classifier(rows.height).fit(
                    self.spec_.matrix(rows), rows["redeemed"].to_numpy(), sample_weight=weight
                )
                support.response = True
            else:
                support.notes.append(
                    "response not learned: no feature has enough distinct values among the "
                    f"{rows.height} issued exposures; offers are costed as if nobody "
                    "redeemed them"
                )
        self.support_ = support

    def _classifier(self, n: int) -> HistGradientBoostingClassifier:
        cfg = self.config
        return HistGradientBoostingClassifier(
            learning_rate=cfg.learning_rate,
            max_iter=cfg.max_iter,
            max_leaf_nodes=cfg.max_leaf_nodes,
            min_samples_leaf=cfg.min_samples_leaf or max(40, int(0.02 * n)),
            l2_regularization=cfg.l2_regularization,
            categorical_features=self.spec_.categorical_mask or None,
            random_state=cfg.random_state,
            early_stopping=n >= 1000,
            validation_fraction=cfg.validation_fraction,
            n_iter_no_change=15,
        )

    # ------------------------------------------------------------------ training rows

    def _training_rows(
        self, dataset: Dataset, buyer_table: BuyerTable | None, end: datetime | None = None
    ) -> pl.DataFrame:
        """Issued exposures with features as of their snapshot (no leakage)."""
        if dataset.exposures is None or dataset.offers is None:
            return pl.DataFrame(schema={"exposure_id": pl.String, "redeemed": pl.Float64})
        lines = purchase_lines(dataset, before=end)
        outcomes = exposure_outcomes(dataset, self.config.horizon_days, lines).filter(
            pl.col("offer_id").is_not_null()
        )
        if outcomes.height == 0:
            return pl.DataFrame(schema={"exposure_id": pl.String, "redeemed": pl.Float64})
        outcomes = sample_issued(outcomes, self.config.max_rows, self.config.random_state)
        outcomes = outcomes.with_columns(_snapshot_expr(outcomes, self.config.max_snapshots))
        parts = []
        for (snap,), rows in outcomes.group_by("snapshot", maintain_order=True):
            as_of = snap if isinstance(snap, datetime) else datetime.fromisoformat(str(snap))
            # Buyer features only for this snapshot's buyers: the rows are the same as in
            # the whole table, at a fraction of the cost (journey scoring above all).
            # The scope table only for the offers issued here (not every offer holding
            # the buyers' items), and only the columns the model or later steps read.
            buyers = rows["buyer_id"].unique()
            store = FeatureStore.build(
                dataset,
                as_of,
                buyer_table(as_of, buyers) if buyer_table is not None else None,
                lines=lines.filter(
                    (pl.col("ts") < as_of) & pl.col("buyer_id").is_in(buyers.implode())
                ),
                buyer_ids=buyers,
                offer_ids=rows["offer_id"].unique(),
            )
            parts.append(_model_columns(store.pair_features(rows.drop("seller_key", "tool"))))
        return pl.concat(parts, how="diagonal_relaxed")

    # ------------------------------------------------------------------ predict

    def predict(self, features: pl.DataFrame, threads: int | None = None) -> np.ndarray:
        """P(redeem | issued) per feature row (`FeatureStore.pair_features` output, with
        any per-buyer and MF columns); NaN where the model could not be learned."""
        self.check_is_fitted("predict")
        if self.model_ is None or features.height == 0:
            return np.full(features.height, np.nan)
        with limit_threads(threads or self.config.num_threads, "openmp"):
            return np.asarray(self.model_.predict_proba(self.spec_.matrix(features))[:, 1])

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write config, support notes and the fitted classifier to directory `path`."""
        self.check_is_fitted("save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.config.to_dict()))
        (path / "support.json").write_text(json.dumps(asdict(self.support_)))
        with (path / "model.pkl").open("wb") as fh:
            pickle.dump({"spec": self.spec_, "model": self.model_}, fh)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ResponseModel:
        """Read a model written by `save` (trusted files only: it unpickles)."""
        path = Path(path)
        model = cls.from_config(json.loads((path / "config.json").read_text()))
        model.support_ = Support(**json.loads((path / "support.json").read_text()))
        with (path / "model.pkl").open("rb") as fh:
            state = pickle.load(fh)
        model.spec_ = state["spec"]
        model.model_ = state["model"]
        model._fitted = True
        return model


_ROW_KEYS = frozenset({"exposure_id", "buyer_id", "offer_id", "seller_key", "ts", "snapshot"})
"""Columns training rows keep besides features: the row's keys and time (its id orders
the booster's split; `pair_extra` folds MF features in per snapshot and buyer)."""


def _feature_candidates(schema: pl.Schema) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns of training rows the model may learn from."""
    numeric = [
        c
        for c, dtype in schema.items()
        if dtype.is_numeric() and c not in _NOT_FEATURES and not c.startswith("_")
    ]
    categorical = [
        c
        for c, dtype in schema.items()
        if dtype == pl.String and (c in ("tool", "journey_stage") or c.startswith(ATTRIBUTE_PREFIX))
    ]
    return numeric, categorical


def _model_columns(rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` without the columns neither the model nor a later step reads (ids, texts,
    times): the snapshots' rows are held together until the fit, so each one is narrowed
    as it is built."""
    numeric, categorical = _feature_candidates(rows.schema)
    keep = {*numeric, *categorical, *_NOT_FEATURES, *_ROW_KEYS}
    return rows.select(c for c in rows.columns if c in keep or c.startswith("_"))


def _snapshot_expr(outcomes: pl.DataFrame, max_snapshots: int) -> pl.Expr:
    """Feature snapshot of each exposure: the start of its day, or of its week when
    exposures fall on more than `max_snapshots` days (bounding the feature passes).

    A snapshot is never after its exposures, so features never see the outcome.
    """
    days = outcomes["ts"].dt.truncate("1d").n_unique()
    unit = "1d" if days <= max_snapshots else "1w"
    return pl.col("ts").dt.truncate(unit).alias("snapshot")
