"""Response and uplift: how likely a buyer redeems an offer, and what the offer changes.

Three gradient-boosted classifiers over the pair features of `recsys.features.pairs`:

- **response** P(redeem | issued), on every issued exposure;
- **treated outcome** mu1(x, offer) = P(buy from the offer's seller in the window | issued),
  on exposures from policies that logged propensities, weighted by 1 / propensity so
  the sample is as if offers had been assigned at random (the logging policy may have
  targeted on things the features do not see);
- **control outcome** mu0(x, seller) = P(buy from the seller | nothing), on the control
  group: each control row is spread over the buyer's sellers (random assignment makes
  each seller's purchases a valid no-offer outcome), weighted by the buyer's attention
  share and 1 / propensity.

Uplift = mu1 - mu0 (a two-model "T-learner" with inverse-propensity weights). When the
data has no control group, or no propensities at all, uplift cannot be identified: the
model says so in `support_` and predicts uplift as null; ranking then falls back to
response.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field
from sklearn.ensemble import HistGradientBoostingClassifier

from recsys.config import StrictConfig
from recsys.data.dataset import Dataset
from recsys.features.pairs import (
    HISTORY_FEATURES,
    OFFER_FEATURES,
    SCOPE_FEATURES,
    SELLER_FEATURES,
    FeatureStore,
    control_outcomes,
    exposure_outcomes,
    purchase_lines,
    seller_affinity,
)
from recsys.models.base import Estimator
from recsys.models.threads import limit_threads

BuyerTable = Callable[[datetime, pl.Series], pl.DataFrame]
"""Per-buyer features (buyer_id + numeric columns, optional `journey_stage`) as of a time,
for (at least) the given buyer ids: ``buyer_table(as_of, buyer_ids)``."""

CONTROL_FEATURES: tuple[str, ...] = SELLER_FEATURES + HISTORY_FEATURES[:3]
MF_FEATURES: tuple[str, ...] = ("mf_affinity_mean", "mf_affinity_max")
TREATED_FEATURES: tuple[str, ...] = (
    OFFER_FEATURES + SELLER_FEATURES + SCOPE_FEATURES + HISTORY_FEATURES + MF_FEATURES
)
OFFER_SPECIFIC: tuple[str, ...] = (
    *OFFER_FEATURES,
    *MF_FEATURES,
    *SCOPE_FEATURES,
    "past_tool_offers",
    "past_tool_redemptions",
)
"""Columns control rows do not have: they describe an offer, and control had none."""
CONTROL_ARM = "__control__"
"""The arm of control rows in the S-learner's tool feature."""
_ROW_COLUMNS = (
    "exposure_id",
    "seller_key",
    "tool",
    "journey_stage",
    "redeemed",
    "purchased",
    "propensity",
    "seller_weight",
)
"""Columns of training rows besides the features: keys, categories, targets, weights."""
PairExtra = Callable[[pl.DataFrame], pl.DataFrame]
"""Adds pair-level columns (e.g. MF affinity) to a frame of (buyer_id, offer_id, ...)."""


class ResponseConfig(StrictConfig):
    """Settings of the response and uplift models."""

    horizon_days: float = Field(7.0, gt=0, description="outcome window after an exposure")
    max_snapshots: int = Field(8, ge=1, description="feature snapshots for training rows")
    min_control_rows: int = Field(30, ge=1, description="control rows needed for uplift")
    min_response_rows: int = Field(50, ge=1)
    max_weight: float = Field(50.0, gt=1, description="clip of inverse-propensity weights")
    learning_rate: float = Field(0.1, gt=0, le=1)
    max_iter: int = Field(100, ge=10, description="upper bound; early stopping picks fewer")
    validation_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="held out to stop adding trees when they stop helping"
    )
    max_leaf_nodes: int = Field(6, ge=2)
    min_samples_leaf: int | None = Field(
        None,
        ge=1,
        description="default: 2 % of the training rows (at least 40); outcomes are rare and "
        "effects small, so leaves must be large for differences to be signal, not noise",
    )
    l2_regularization: float = Field(1.0, ge=0)
    random_state: int = 0
    uplift_learner: Literal["s", "t"] = Field(
        "s",
        description="s: one outcome model with the arm as a feature (biases cancel in the "
        "difference); t: separate treated and control models",
    )
    num_threads: int = Field(
        1, ge=1, description="OpenMP threads of the boosters; oversubscribed cores are 10x slower"
    )


@dataclass
class Support:
    """What the data allowed the model to learn, and why not the rest."""

    response: bool = False
    uplift: bool = False
    notes: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Categories:
    """Integer codes of categorical columns, fixed at fit time (unknown -> missing)."""

    tools: tuple[str, ...]
    stages: tuple[str, ...]

    def encode(self, frame: pl.DataFrame) -> pl.DataFrame:
        cols = []
        if "tool" in frame.columns:
            cols.append(_code(pl.col("tool"), self.tools).alias("tool_code"))
        stage = pl.col("journey_stage") if "journey_stage" in frame.columns else pl.lit(None)
        cols.append(_code(stage, self.stages).alias("stage_code"))
        return frame.with_columns(cols)


def _code(expr: pl.Expr, vocab: tuple[str, ...]) -> pl.Expr:
    return expr.cast(pl.String).replace_strict(
        list(vocab), [float(i) for i in range(len(vocab))], default=None, return_dtype=pl.Float64
    )


class ResponseUpliftModel(Estimator[ResponseConfig]):
    """P(redeem), mu0, mu1 and uplift for (buyer, offer) pairs; see the module docstring."""

    config_class = ResponseConfig

    def fit(
        self,
        dataset: Dataset,
        buyer_table: BuyerTable | None = None,
        pair_extra: PairExtra | None = None,
        as_of: datetime | None = None,
    ) -> ResponseUpliftModel:
        """Learn from `dataset`'s exposures.

        `buyer_table(as_of, buyer_ids)` adds per-buyer features (the ids are the buyers of
        the exposures featured as of `as_of`); `pair_extra(rows)` adds pair-level ones to
        issued rows (it must only use information from before each row's time). With
        `as_of`, purchases from then on are no outcomes (the events may go on: they are
        cut where read, never copied); exposures and redemptions are used as given.
        """
        return super().fit(dataset, buyer_table, pair_extra, as_of)

    def _fit(
        self,
        dataset: Dataset,
        buyer_table: BuyerTable | None,
        pair_extra: PairExtra | None,
        as_of: datetime | None,
    ) -> None:
        with limit_threads(self.config.num_threads, "openmp"):
            self._fit_pinned(dataset, buyer_table, pair_extra, as_of)

    def _fit_pinned(
        self,
        dataset: Dataset,
        buyer_table: BuyerTable | None,
        pair_extra: PairExtra | None,
        as_of: datetime | None,
    ) -> None:
        cfg = self.config
        support = Support()
        treated, control = self._training_rows(dataset, buyer_table, as_of)
        if pair_extra is not None:
            treated = pair_extra(treated)
        # Joins do not promise row order; the boosters' validation split depends on it.
        treated = treated.sort("exposure_id")
        if control.height:
            control = control.sort("exposure_id", "seller_key")
        self.categories_ = _Categories(
            tools=(CONTROL_ARM, *sorted(treated["tool"].drop_nulls().unique().to_list())),
            stages=tuple(
                sorted(treated["journey_stage"].drop_nulls().unique().to_list())
                if "journey_stage" in treated.columns
                else ()
            ),
        )
        self.buyer_columns_ = _buyer_numeric_columns(treated)
        # Only what the models read: the rows are copied (filtered, stacked) below, and at
        # a million buyers every unused column costs hundreds of megabytes per copy.
        treated, control = self._narrow(treated), self._narrow(control)
        self.columns_: dict[str, list[str]] = {}
        support.rows = {"issued": treated.height, "control_expanded": control.height}
        self.response_model_: HistGradientBoostingClassifier | None = None
        self.treated_model_: HistGradientBoostingClassifier | None = None
        self.control_model_: HistGradientBoostingClassifier | None = None
        if treated.height >= cfg.min_response_rows and treated["redeemed"].n_unique() == 2:
            self.response_model_ = self._fit_classifier(
                "response", treated, TREATED_FEATURES, True, "redeemed"
            )
            support.response = True
        else:
            support.notes.append(
                f"response not learned: {treated.height} issued exposures with "
                f"{int(treated['redeemed'].sum()) if treated.height else 0} redemptions "
                f"(need {cfg.min_response_rows} rows with both outcomes)"
            )
        logged = treated.filter(pl.col("propensity").is_not_null())
        if self.estimated_propensities_:
            support.notes.append(
                f"{self.estimated_propensities_} exposures had no logged propensity but came "
                "with a control group: their propensities were estimated as each arm's share "
                "of its snapshot (this assumes offers were assigned at random there)"
            )
        if control.height < cfg.min_control_rows:
            support.notes.append(
                f"uplift not learned: {control.height} control rows (offer_id null) with "
                f"known sellers; need {cfg.min_control_rows}. Keep a random control group "
                "and log propensities to learn uplift; ranking falls back to response."
            )
        elif logged.height < cfg.min_response_rows or logged["purchased"].n_unique() < 2:
            support.notes.append(
                f"uplift not learned: {logged.height} issued exposures with a logged "
                "propensity; log the logging policy's propensities to learn uplift."
            )
        else:
            unlogged = treated.height - logged.height
            if cfg.uplift_learner == "s":
                both = pl.concat(
                    [
                        logged.with_columns(pl.lit(1.0).alias("_w")),
                        control.with_columns(
                            pl.lit(CONTROL_ARM).alias("tool"), pl.col("seller_weight").alias("_w")
                        ),
                    ],
                    how="diagonal_relaxed",
                )
                del treated, logged, control  # the stacked rows are all the model needs
                weight = self._ipw(both) * both["_w"].to_numpy()
                self.treated_model_ = self._fit_classifier(
                    "treated", both, TREATED_FEATURES, True, "purchased", weight
                )
                self.control_model_ = self.treated_model_
            else:
                self.treated_model_ = self._fit_classifier(
                    "treated", logged, TREATED_FEATURES, True, "purchased", self._ipw(logged)
                )
                self.control_model_ = self._fit_classifier(
                    "control",
                    control,
                    CONTROL_FEATURES,
                    False,
                    "purchased",
                    self._ipw(control) * control["seller_weight"].to_numpy(),
                )
            support.uplift = True
            if unlogged:
                support.notes.append(
                    f"{unlogged} issued exposures without propensity (e.g. campaigns sent by "
                    "hand) were used for response only, not for uplift"
                )
        self.support_ = support

    # ------------------------------------------------------------------ training rows

    def _training_rows(
        self, dataset: Dataset, buyer_table: BuyerTable | None, end: datetime | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Treated and control rows with features as of their snapshot (no leakage)."""
        # Purchase lines once: every snapshot's store and both outcome tables read them.
        lines = purchase_lines(dataset, before=end)
        outcomes = exposure_outcomes(dataset, self.config.horizon_days, lines)
        outcomes = outcomes.with_columns(_snapshot_expr(outcomes, self.config.max_snapshots))
        outcomes, self.estimated_propensities_ = estimate_missing_propensities(outcomes)
        treated_parts, control_parts = [], []
        for (snap,), rows in outcomes.group_by("snapshot", maintain_order=True):
            as_of = snap if isinstance(snap, datetime) else datetime.fromisoformat(str(snap))
            # Buyer features only for this snapshot's buyers: the rows are the same as in
            # the whole table, at a fraction of the cost (journey scoring above all).
            buyers = rows["buyer_id"].unique()
            store = FeatureStore.build(
                dataset,
                as_of,
                buyer_table(as_of, buyers) if buyer_table is not None else None,
                lines=lines.filter(pl.col("ts") < as_of),
                buyer_ids=buyers,
            )
            issued = rows.filter(pl.col("offer_id").is_not_null())
            if issued.height:
                treated_parts.append(store.pair_features(issued.drop("seller_key", "tool")))
            ctrl = rows.filter(pl.col("offer_id").is_null() & pl.col("propensity").is_not_null())
            if ctrl.height:
                affinity = seller_affinity(store.buyer_seller)
                expanded = control_outcomes(
                    dataset, ctrl, affinity, self.config.horizon_days, lines
                )
                control_parts.append(store.seller_rows(expanded))
        treated = pl.concat(treated_parts, how="diagonal_relaxed") if treated_parts else None
        control = pl.concat(control_parts, how="diagonal_relaxed") if control_parts else None
        if treated is None:
            raise ValueError(
                "no issued exposures (exposures with an offer_id) in the dataset: the "
                "response model has nothing to learn from"
            )
        if control is None:
            control = pl.DataFrame(
                schema={
                    "purchased": pl.Float64,
                    "seller_weight": pl.Float64,
                    "propensity": pl.Float64,
                }
            )
        return treated, control

    # ------------------------------------------------------------------ matrices

    def _fit_classifier(
        self,
        name: str,
        frame: pl.DataFrame,
        base: tuple[str, ...],
        with_tool: bool,
        target: str,
        weight: np.ndarray | None = None,
    ) -> HistGradientBoostingClassifier:
        """Fit one classifier on the columns that have values in `frame`.

        Columns entirely missing in training (a source without `min_spend`, say) carry
        no information and are left out; the kept list is stored for prediction.
        """
        cfg = self.config
        encoded = self.categories_.encode(frame)
        present = [c for c in self._columns(base, with_tool) if c in encoded.columns]
        values = [pl.col(c).cast(pl.Float64) for c in present]
        has = (
            encoded.select((v.is_not_null() & v.is_not_nan()).any() for v in values).row(0)
            if values
            else ()
        )
        keep = [c for c, has_value in zip(present, has, strict=True) if has_value]
        x = self._matrix(frame, keep)  # built once: it is the largest thing a fit holds
        self.columns_[name] = keep
        categorical = [i for i, c in enumerate(keep) if c in ("stage_code", "tool_code")]
        model = HistGradientBoostingClassifier(
            learning_rate=cfg.learning_rate,
            max_iter=cfg.max_iter,
            max_leaf_nodes=cfg.max_leaf_nodes,
            min_samples_leaf=cfg.min_samples_leaf or max(40, int(0.02 * frame.height)),
            l2_regularization=cfg.l2_regularization,
            categorical_features=categorical or None,
            random_state=cfg.random_state,
            early_stopping=True,
            validation_fraction=cfg.validation_fraction,
            n_iter_no_change=15,
        )
        return model.fit(x, frame[target].to_numpy(), sample_weight=weight)

    def _narrow(self, rows: pl.DataFrame) -> pl.DataFrame:
        """`rows` with only the columns fitting reads (features, targets, weights, keys)."""
        wanted = {*_ROW_COLUMNS, *TREATED_FEATURES, *CONTROL_FEATURES, *self.buyer_columns_}
        return rows.select(c for c in rows.columns if c in wanted)

    def _ipw(self, rows: pl.DataFrame) -> np.ndarray:
        p = rows["propensity"].fill_null(1.0).to_numpy()
        return np.minimum(1.0 / np.clip(p, 1e-6, 1.0), self.config.max_weight)

    def _columns(self, base: tuple[str, ...], with_tool: bool) -> list[str]:
        columns = [*base, *self.buyer_columns_, "stage_code"]
        return [*columns, "tool_code"] if with_tool else columns

    def _matrix(self, frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
        """Feature matrix in the given column order; absent columns are missing (NaN)."""
        frame = self.categories_.encode(frame)
        exprs = [
            pl.col(c).cast(pl.Float64) if c in frame.columns else pl.lit(None, pl.Float64).alias(c)
            for c in columns
        ]
        return frame.select(exprs).to_numpy().astype(np.float64, copy=False)

    def _predict(
        self, name: str, model: HistGradientBoostingClassifier, features: pl.DataFrame
    ) -> np.ndarray:
        x = self._matrix(features, self.columns_[name])
        with limit_threads(self.threads_, "openmp"):
            return np.asarray(model.predict_proba(x)[:, 1])

    # ------------------------------------------------------------------ predict

    threads_: int = 1

    def predict(self, features: pl.DataFrame, threads: int | None = None) -> pl.DataFrame:
        """p_redeem, p_purchase (mu0), p_purchase_treated (mu1) and uplift per feature row.

        `features` is `FeatureStore.pair_features(...)` output (with `seller_key`); rows keep their
        order. Columns a model could not learn are null. `threads` (default: the
        config's `num_threads`) sets the OpenMP threads of the boosters.
        """
        self.check_is_fitted("predict")
        self.threads_ = threads or self.config.num_threads
        n = features.height
        nulls = np.full(n, np.nan)
        p_redeem = nulls
        if self.response_model_ is not None and n:
            p_redeem = self._predict("response", self.response_model_, features)
        mu0 = mu1 = nulls
        if self.treated_model_ is not None and self.control_model_ is not None and n:
            mu1 = self._predict("treated", self.treated_model_, features)
            mu0 = self._predict_control(features)
        return pl.DataFrame(
            {
                "p_redeem": p_redeem,
                "p_purchase": mu0,
                "p_purchase_treated": mu1,
                "uplift": mu1 - mu0,
            }
        ).with_columns(pl.all().fill_nan(None))

    def _predict_control(self, features: pl.DataFrame) -> np.ndarray:
        """P(purchase from the seller | no offer): once per (buyer, seller), then spread.

        Control rows were trained without offer-specific columns, so those are dropped;
        what is left depends on the buyer and seller only (six offers of one seller
        share one prediction).
        """
        assert self.control_model_ is not None
        base = features.drop([c for c in OFFER_SPECIFIC if c in features.columns])
        keys = [c for c in ("buyer_id", "seller_key") if c in base.columns]
        unique = base.unique(subset=keys, keep="first", maintain_order=True)
        if self.config.uplift_learner == "s":
            unique = unique.with_columns(pl.lit(CONTROL_ARM).alias("tool"))
            p = self._predict("treated", self.control_model_, unique)
        else:
            p = self._predict("control", self.control_model_, unique)
        spread = base.select(keys).join(
            unique.select(keys).with_columns(pl.Series("_p", p)),
            on=keys,
            how="left",
            nulls_equal=True,
            maintain_order="left",
        )
        return spread["_p"].to_numpy()

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write config, support notes and the fitted classifiers to directory `path`."""
        self.check_is_fitted("save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.config.to_dict()))
        (path / "support.json").write_text(json.dumps(asdict(self.support_)))
        state = {
            "categories": self.categories_,
            "buyer_columns": self.buyer_columns_,
            "columns": self.columns_,
            "models": (self.response_model_, self.treated_model_, self.control_model_),
        }
        with (path / "models.pkl").open("wb") as fh:
            pickle.dump(state, fh)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ResponseUpliftModel:
        """Read a model written by `save` (trusted files only: it unpickles)."""
        path = Path(path)
        model = cls.from_config(json.loads((path / "config.json").read_text()))
        model.support_ = Support(**json.loads((path / "support.json").read_text()))
        with (path / "models.pkl").open("rb") as fh:
            state = pickle.load(fh)
        model.categories_ = state["categories"]
        model.buyer_columns_ = state["buyer_columns"]
        model.columns_ = state["columns"]
        model.response_model_, model.treated_model_, model.control_model_ = state["models"]
        model._fitted = True
        return model


def estimate_missing_propensities(outcomes: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Fill null propensities in snapshots that kept a control group.

    A source may keep a random control group without logging propensities. Within such a
    snapshot the best estimate of an arm's propensity is its share of the snapshot's
    unlogged rows (the arm: the offer, or control). Snapshots without any control row are
    left alone: a campaign sent by hand to a chosen list is not random, and estimating a
    propensity for it would fake an experiment. Returns the frame and the rows filled.
    """
    unlogged = pl.col("propensity").is_null()
    arm = pl.col("offer_id").fill_null("__control__")
    has_control = (unlogged & pl.col("offer_id").is_null()).any().over("snapshot")
    share = pl.len().over("snapshot", arm) / pl.len().over("snapshot")
    fill = unlogged & has_control
    n_filled = outcomes.select(fill.sum()).item() if outcomes.height else 0
    if not n_filled:
        return outcomes, 0
    unlogged_rows = outcomes.filter(unlogged).with_columns(
        share.alias("_share"), has_control.alias("_has_control")
    )
    filled = outcomes.join(
        unlogged_rows.select("exposure_id", "_share", "_has_control"),
        on="exposure_id",
        how="left",
    ).with_columns(
        pl.when(pl.col("_has_control").fill_null(False))
        .then(pl.col("_share"))
        .otherwise(pl.col("propensity"))
        .alias("propensity")
    )
    return filled.drop("_share", "_has_control"), int(n_filled)


def _snapshot_expr(outcomes: pl.DataFrame, max_snapshots: int) -> pl.Expr:
    """Feature snapshot of each exposure: the start of its day, or of its week when
    exposures fall on more than `max_snapshots` days (bounding the feature passes).

    A snapshot is never after its exposures, so features never see the outcome.
    """
    days = outcomes["ts"].dt.truncate("1d").n_unique()
    unit = "1d" if days <= max_snapshots else "1w"
    return pl.col("ts").dt.truncate(unit).alias("snapshot")


def _buyer_numeric_columns(frame: pl.DataFrame) -> tuple[str, ...]:
    """Numeric per-buyer columns that came from the buyer table (not pair features)."""
    known = set(TREATED_FEATURES) | {
        "propensity",
        "redeemed",
        "purchased",
        "seller_weight",
        "past_tool_offers",
        "past_tool_redemptions",
    }
    return tuple(
        c
        for c, dtype in frame.schema.items()
        if dtype.is_numeric() and c not in known and not c.startswith("_")
    )
