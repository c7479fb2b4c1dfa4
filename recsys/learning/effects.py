"""Effect models: how much an offer of each kind changes a buyer's purchase, with its doubt.

The models are fitted on doubly robust pseudo-outcomes (`recsys.learning.scores`),

    Z_i(k) = (Gamma_i(k) - Gamma_i(nothing)) / (1 - p0_i),

one per decision i and offer kind k it could have taken, whose conditional mean is the
offer's *conversion rate of buyers who would not have bought*: an offer can only add a
purchase where there would have been none, so the change in purchase probability is
``(1 - p0) * e`` (p0: P(purchase | nothing)). Modelling e rather than the difference
itself keeps buyers who buy anyway (p0 near 1) from looking like responders.

Three models, from the least to the most flexible, each with its uncertainty as draws
from (an approximation of) its posterior, so that the standard error of any value or
contrast between two offers of one buyer is the spread of its draws:

- `KindEffects` -- one effect per kind, each shrunk towards the kinds' mean by empirical
  Bayes (a kind whose estimate is no further from the others than its noise is pulled
  to them);
- `SegmentEffects` -- kind effects plus a segment table (journey stage, a buyer
  attribute, recency or frequency bands: the variables that help on held-out buyers),
  each (level, kind) cell shrunk towards its kind by empirical Bayes with the
  DerSimonian-Laird estimate of how much cells really differ: a 5-row cell cannot
  outrank a 5,000-row cell on noise;
- `ForestEffects` -- a DR-learner (Kennedy 2020): gradient boosting on the
  pseudo-outcomes with every feature, draws from fits on random halves of the buyers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import polars as pl
from sklearn.ensemble import HistGradientBoostingRegressor

from recsys.learning.matrix import FeatureSpec
from recsys.models.threads import limit_threads

DRAWS = 32
"""Posterior draws of the linear models (the forest's come from half-sample fits)."""


@dataclass(frozen=True)
class EffectPrediction:
    """Per row: the posterior mean effect and `draws` (B x n) for its uncertainty."""

    mean: np.ndarray
    draws: np.ndarray


class EffectModel(ABC):
    """An effect model: fit on rows (a `kind` column and features) and pseudo-outcomes."""

    name: ClassVar[str]
    complexity: ClassVar[int]
    """Rank in the one-standard-error rule: simpler models ship when they are as good."""

    @abstractmethod
    def fit(self, rows: pl.DataFrame, z: np.ndarray) -> Self: ...

    @abstractmethod
    def predict(self, rows: pl.DataFrame) -> EffectPrediction: ...

    def describe(self) -> list[str]:
        """Sentences for the run report."""
        return []


# --------------------------------------------------------------------------- none


@dataclass
class NoEffects(EffectModel):
    """The hypothesis that no offer changes anything: every effect 0, no doubt. Valued by
    the policy's formula, an offer then only costs (its redemptions, its sending), so the
    policy it gives is "nothing" -- the simplest candidate, judged like the others."""

    name: ClassVar[str] = "no_effects"
    complexity: ClassVar[int] = 1

    def fit(self, rows: pl.DataFrame, z: np.ndarray) -> Self:
        return self

    def predict(self, rows: pl.DataFrame) -> EffectPrediction:
        return EffectPrediction(mean=np.zeros(rows.height), draws=np.zeros((1, rows.height)))

    def describe(self) -> list[str]:
        return ["no offer is assumed to change any purchase: the policy sends nothing"]


# --------------------------------------------------------------------------- kinds


@dataclass
class KindEffects(EffectModel):
    """One effect per offer kind, shrunk towards their mean (empirical Bayes)."""

    seed: int = 0
    name: ClassVar[str] = "kind_effects"
    complexity: ClassVar[int] = 2
    kinds_: tuple[str, ...] = ()
    raw_: np.ndarray = field(default_factory=lambda: np.empty(0))
    mean_: np.ndarray = field(default_factory=lambda: np.empty(0))
    cov_: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    prior_mean_: float = 0.0
    prior_var_: float = 0.0
    rows_: np.ndarray = field(default_factory=lambda: np.empty(0))

    def fit(self, rows: pl.DataFrame, z: np.ndarray) -> Self:
        frame = rows.select("exposure_id", "kind").with_columns(pl.Series("z", z))
        # One pseudo-outcome per decision and kind (a wave may offer two of one kind).
        # Sorted before any sum: float sums in another order differ in the last bits, and
        # a retrain on the same data must give the same model to the bit.
        per = (
            frame.sort("exposure_id", "kind")
            .group_by("exposure_id", "kind", maintain_order=True)
            .agg(pl.col("z").mean())
        )
        wide = per.pivot(on="kind", index="exposure_id", values="z").sort("exposure_id")
        kinds = tuple(sorted(c for c in wide.columns if c != "exposure_id"))
        values = wide.select(kinds).to_numpy().astype(np.float64)
        present = np.isfinite(values)
        n = present.sum(axis=0).astype(np.float64)
        raw = np.where(n > 0, np.nansum(values, axis=0) / np.maximum(n, 1), 0.0)
        centred = np.where(present, values - raw, 0.0)
        both = present.T.astype(np.float64) @ present.astype(np.float64)
        cov = (centred.T @ centred) / np.maximum(both, 1.0) * both / np.maximum(np.outer(n, n), 1)
        var = np.diag(cov).copy()
        var[n < 2] = np.inf
        prior_mean, prior_var = _empirical_bayes(raw, var)
        shrink = _shrinkage(prior_var, var)
        self.kinds_ = kinds
        self.rows_ = n
        self.raw_ = raw
        self.prior_mean_, self.prior_var_ = prior_mean, prior_var
        self.mean_ = prior_mean + shrink * (raw - prior_mean)
        # Posterior covariance: each kind's posterior variance (shrink * var), with the
        # correlation the shared control rows give the raw estimates.
        post_sd = np.sqrt(np.where(np.isfinite(var), shrink * var, _finite(prior_var)))
        sd = np.sqrt(np.where(np.isfinite(var) & (var > 0), var, 1.0))
        corr = np.where(np.isfinite(cov), cov / np.outer(sd, sd), 0.0)
        np.fill_diagonal(corr, 1.0)
        self.cov_ = corr * np.outer(post_sd, post_sd)
        return self

    def _draws(self) -> np.ndarray:
        """(B, kinds) posterior draws, fixed by the seed."""
        rng = np.random.default_rng(self.seed)
        if not self.kinds_:
            return np.zeros((DRAWS, 0))
        return rng.multivariate_normal(self.mean_, self.cov_, size=DRAWS, method="eigh")

    def kind_index(self, rows: pl.DataFrame) -> np.ndarray:
        """Each row's kind as an index into `kinds_`; -1 for a kind never seen."""
        return (
            rows["kind"]
            .replace_strict(list(self.kinds_), list(range(len(self.kinds_))), default=-1)
            .cast(pl.Int64)
            .to_numpy()
        )

    def predict(self, rows: pl.DataFrame) -> EffectPrediction:
        index = self.kind_index(rows)
        known = index >= 0
        draws = self._draws()
        mean = np.where(known, self.mean_[np.maximum(index, 0)] if self.kinds_ else 0.0, 0.0)
        out = np.zeros((DRAWS, rows.height))
        if self.kinds_:
            out[:, known] = draws[:, index[known]]
        # A kind never seen in the experiments: the prior (mean of kinds, their spread).
        unseen_sd = np.sqrt(_finite(self.prior_var_))
        noise = np.random.default_rng(self.seed + 1).standard_normal(DRAWS)[:, None]
        mean = np.where(known, mean, self.prior_mean_)
        out[:, ~known] = self.prior_mean_ + unseen_sd * noise
        return EffectPrediction(mean=mean, draws=out)

    def describe(self) -> list[str]:
        out = []
        for k, raw, mean, n, var in zip(
            self.kinds_, self.raw_, self.mean_, self.rows_, np.diag(self.cov_), strict=True
        ):
            out.append(
                f"effect of {k}: {mean:+.4f} (raw {raw:+.4f}, +- {np.sqrt(var):.4f}, "
                f"{n:,.0f} decisions)"
            )
        return out


def _shrinkage(prior_var: float, var: np.ndarray) -> np.ndarray:
    """Weight of each estimate's own value against the prior's: prior_var / (prior_var +
    var); 1 without a prior (infinite prior variance), 0 for an estimate without data."""
    usable = np.isfinite(var)
    if not np.isfinite(prior_var):
        return usable.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = prior_var / (prior_var + var)
    return np.where(usable & np.isfinite(weight), weight, 0.0)


def _held_constant(x: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """`x` with `columns` (a boolean mask; empty: none) set to 0 everywhere."""
    if not columns.any():
        return x
    out = x.copy()
    out[:, columns] = 0.0
    return out


def _finite(x: float) -> float:
    return x if np.isfinite(x) else 1.0


def _empirical_bayes(
    estimates: np.ndarray, variances: np.ndarray, min_count: int = 3
) -> tuple[float, float]:
    """Prior mean and variance of the true effects behind noisy estimates: the
    DerSimonian-Laird random-effects estimate (the spread of the estimates beyond their
    own noise, each weighted by its precision, so one noisy outlier does not make the
    spread look real). With fewer than `min_count` usable estimates there is nothing to
    pool over: the prior variance is infinite (no shrinkage)."""
    ok = np.isfinite(variances)
    if ok.sum() < min_count:
        return (float(estimates[ok].mean()) if ok.any() else 0.0), float("inf")
    est, var = estimates[ok], np.maximum(variances[ok], 1e-12)
    w = 1.0 / var
    fixed_mean = float(np.sum(w * est) / np.sum(w))
    q = float(np.sum(w * (est - fixed_mean) ** 2))
    scale = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    prior_var = max(0.0, (q - (len(est) - 1)) / scale) if scale > 0 else 0.0
    w_star = 1.0 / (var + prior_var)
    prior_mean = float(np.sum(w_star * est) / np.sum(w_star))
    return prior_mean, prior_var


# --------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class Segmentation:
    """Categorical segments of a buyer: columns as they are, numeric ones in bands."""

    categorical: tuple[str, ...]
    bands: tuple[tuple[str, tuple[float, ...]], ...]
    """(numeric column, band edges): quartiles fitted on the training rows."""

    @classmethod
    def fit(
        cls, rows: pl.DataFrame, categorical: tuple[str, ...], numeric: tuple[str, ...]
    ) -> Segmentation:
        cats = tuple(c for c in categorical if c in rows.columns)
        bands = []
        for name in numeric:
            if name not in rows.columns:
                continue
            values = rows[name].cast(pl.Float64).drop_nulls().drop_nans()
            if values.len() == 0:
                continue
            edges = np.unique(np.quantile(values.to_numpy(), [0.25, 0.5, 0.75]))
            if len(edges):
                bands.append((name, tuple(float(e) for e in edges)))
        return cls(cats, tuple(bands))

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.categorical, *(name for name, _ in self.bands))

    def labels(self, rows: pl.DataFrame) -> pl.DataFrame:
        """One string column per segment variable: its level for each row."""
        exprs = [
            (pl.col(c).cast(pl.String) if c in rows.columns else pl.lit(None, pl.String))
            .fill_null("(none)")
            .alias(c)
            for c in self.categorical
        ]
        for name, edges in self.bands:
            value = pl.col(name).cast(pl.Float64) if name in rows.columns else pl.lit(None)
            band = pl.lit(0, pl.Int32)
            for edge in edges:
                band = band + (value > edge).cast(pl.Int32)
            exprs.append(
                pl.when(value.is_null() | value.is_nan())
                .then(pl.lit("(none)"))
                .otherwise(pl.lit("band") + band.cast(pl.String))
                .alias(name)
            )
        return rows.select(exprs) if exprs else pl.DataFrame(schema={})


@dataclass
class SegmentEffects(EffectModel):
    """Kind effects (`KindEffects`) plus a segment table: for the segment variables that
    help on held-out buyers, one effect per (level, kind), each shrunk towards its kind's
    effect by empirical Bayes.

    Variables are added greedily, at most `max_variables`: at each step the variable
    whose table, fitted on the other folds of buyers, best predicts the pseudo-outcomes of
    each fold -- kept only if it beats the model without it by more than one standard
    error of the paired difference. A table with a level per (variable, level, kind) on
    every variable would spend its data on noise; most variables do not matter.
    """

    segmentation: Segmentation = field(default_factory=lambda: Segmentation((), ()))
    max_variables: int = 2
    seed: int = 0
    name: ClassVar[str] = "segment_effects"
    complexity: ClassVar[int] = 3
    kinds_model_: KindEffects = field(default_factory=KindEffects)
    variables_: list[str] = field(default_factory=list)
    tables_: list[pl.DataFrame] = field(default_factory=list)
    """Per chosen variable: level, kind, effect, var (posterior variance), rows."""
    gains_: dict[str, float] = field(default_factory=dict)
    """Held-out improvement of mean squared error of each variable added (report)."""

    def fit(self, rows: pl.DataFrame, z: np.ndarray) -> Self:
        self.kinds_model_ = KindEffects(seed=self.seed).fit(rows, z)
        resid = z - self.kinds_model_.predict(rows).mean
        labels = self.segmentation.labels(rows)
        kinds = rows["kind"].cast(pl.String)
        folds = rows["fold"].to_numpy() if "fold" in rows.columns else np.zeros(rows.height)
        self.variables_, self.tables_, self.gains_ = [], [], {}
        if labels.width == 0 or np.unique(folds).size < 2:
            return self
        current = np.zeros(rows.height)  # held-out predictions of the chosen tables
        fitted = np.zeros(rows.height)  # in-sample predictions (what later tables fit on)
        for _ in range(self.max_variables):
            base_error = (resid - current) ** 2
            best: tuple[float, str, np.ndarray] | None = None
            for var in labels.columns:
                if var in self.variables_:
                    continue
                target = resid - fitted
                held = np.zeros(rows.height)
                for fold in np.unique(folds):
                    train, test = folds != fold, folds == fold
                    table = _cell_effects(
                        labels[var].filter(train), kinds.filter(train), target[train]
                    )
                    held[test] = _lookup(table, labels[var].filter(test), kinds.filter(test))[0]
                gain = base_error - (resid - current - held) ** 2
                se = gain.std(ddof=1) / np.sqrt(len(gain))
                if gain.mean() > se and (best is None or gain.mean() > best[0]):
                    best = (float(gain.mean()), var, held)
            if best is None:
                break
            gain, var, held = best
            table = _cell_effects(labels[var], kinds, resid - fitted)
            self.variables_.append(var)
            self.tables_.append(table)
            self.gains_[var] = gain
            current = current + held
            fitted = fitted + _lookup(table, labels[var], kinds)[0]
        return self

    def predict(self, rows: pl.DataFrame) -> EffectPrediction:
        base = self.kinds_model_.predict(rows)
        if not self.variables_:
            return base
        labels = self.segmentation.labels(rows)
        kinds = rows["kind"].cast(pl.String)
        mean, draws = base.mean.copy(), base.draws.copy()
        for i, (var, table) in enumerate(zip(self.variables_, self.tables_, strict=True)):
            effect, variance, cell = _lookup(table, labels[var], kinds)
            noise = np.random.default_rng([self.seed, 5, i]).standard_normal(
                (DRAWS, table.height + 1)
            )
            mean += effect
            draws += effect + np.sqrt(variance) * noise[:, cell]
        return EffectPrediction(mean=mean, draws=draws)

    def describe(self) -> list[str]:
        out = self.kinds_model_.describe()
        if not self.variables_:
            out.append(
                f"segments: none beat the kind effects on held-out buyers (tried "
                f"{', '.join(self.segmentation.names) or 'none'})"
            )
        for var, table in zip(self.variables_, self.tables_, strict=True):
            out.append(
                f"segment table by {var} (held-out squared error down {self.gains_[var]:.2e}):"
            )
            top = table.sort(pl.col("effect").abs(), descending=True).head(12)
            for level, kind, effect, var_, n in top.select(
                "level", "kind", "effect", "var", "rows"
            ).iter_rows():
                out.append(f"  {kind} x {level}: {effect:+.4f} +- {np.sqrt(var_):.4f} ({n:,} rows)")
        return out


def _cell_effects(levels: pl.Series, kinds: pl.Series, resid: np.ndarray) -> pl.DataFrame:
    """Per (level, kind): the mean residual, shrunk to 0 (the kind's effect) by empirical
    Bayes over the kind's levels; with its posterior variance and row count."""
    frame = pl.DataFrame({"level": levels, "kind": kinds, "r": resid})
    pooled = frame.group_by("kind", maintain_order=True).agg(pl.col("r").var().alias("_s2"))
    cells = (
        frame.group_by("level", "kind", maintain_order=True)
        .agg(pl.col("r").mean().alias("raw"), pl.len().alias("rows"))
        .join(pooled, on="kind", how="left")
        .with_columns((pl.col("_s2").fill_null(1.0) / pl.col("rows")).alias("_v"))
        .sort("kind", "level")
    )
    parts = []
    for (_,), group in cells.group_by("kind", maintain_order=True):
        raw, var = group["raw"].to_numpy(), group["_v"].to_numpy()
        _, prior_var = _empirical_bayes(raw, var, min_count=2)
        if not np.isfinite(prior_var):  # a single level: nothing to learn beside the kind
            prior_var = 0.0
        weight = _shrinkage(prior_var, var)
        parts.append(
            group.with_columns(pl.Series("effect", weight * raw), pl.Series("var", weight * var))
        )
    return pl.concat(parts).select("level", "kind", "effect", "var", "rows")


def _lookup(
    table: pl.DataFrame, levels: pl.Series, kinds: pl.Series
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's cell effect, posterior variance and cell index (0 and the last index,
    no variance, for a cell the table does not have)."""
    indexed = table.with_row_index("_cell")
    found = pl.DataFrame({"level": levels, "kind": kinds}).join(
        indexed, on=["level", "kind"], how="left", maintain_order="left"
    )
    effect = found["effect"].fill_null(0.0).to_numpy()
    variance = found["var"].fill_null(0.0).to_numpy()
    cell = found["_cell"].fill_null(table.height).cast(pl.Int64).to_numpy()
    return effect, variance, cell


# --------------------------------------------------------------------------- forest


@dataclass
class ForestEffects(EffectModel):
    """A DR-learner (Kennedy 2020) whose predictions are calibrated on held-out buyers.

    Gradient boosting regresses the pseudo-outcomes on every feature, in two halves of
    the buyers: each half's model ranks the other half's rows, so every row gets an
    out-of-sample predicted effect. Rows are then put in `bins` bands of that prediction
    per kind, and each band's effect is the mean pseudo-outcome of its rows, shrunk
    towards the kind's effect like a segment (`SegmentEffects` with the bands as its one
    segment). The boosting only proposes who may respond alike; what a band's effect is,
    and how sure it is, comes from plain means of held-out rows -- a forest's own spread
    over refits understates its doubt.
    """

    spec: FeatureSpec = field(default_factory=lambda: FeatureSpec(()))
    bins: int = 5
    min_leaf_share: float = 0.02
    max_rows: int = 60_000
    """Rows each boosting fit learns from at most (whole buyers, a fixed hash)."""
    num_threads: int = 1
    seed: int = 0
    name: ClassVar[str] = "forest_effects"
    complexity: ClassVar[int] = 4
    models_: list[HistGradientBoostingRegressor] = field(default_factory=list)
    edges_: dict[str, tuple[float, ...]] = field(default_factory=dict)
    bands_: SegmentEffects = field(default_factory=SegmentEffects)
    blank_: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    """Feature columns held constant: without values in one half's training rows."""

    def _regressor(self, n: int) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            learning_rate=0.1,
            max_iter=60,
            max_leaf_nodes=8,
            min_samples_leaf=max(50, int(self.min_leaf_share * n)),
            l2_regularization=10.0,
            categorical_features=self.spec.categorical_mask or None,
            early_stopping=n >= 1000,
            validation_fraction=0.2,
            n_iter_no_change=10,
            random_state=self.seed,
        )

    def fit(self, rows: pl.DataFrame, z: np.ndarray) -> Self:
        half = ((rows["buyer_id"].hash(self.seed + 3) % 2) == 1).to_numpy()
        trains = []
        for side in (False, True):
            train = np.flatnonzero(half == side)
            if len(train) > self.max_rows:
                train = train[:: len(train) // self.max_rows + 1]
            trains.append((side, train))
        x = self.spec.matrix(rows)
        # A column with values overall may have none in one half's rows (a few buyers),
        # and the booster cannot bin a column without values: such columns are left out
        # (held constant) for both halves and at prediction.
        self.blank_ = np.zeros(x.shape[1], dtype=np.bool_)
        for _, train in trains:
            if len(train):
                self.blank_ |= np.isnan(x[train]).all(axis=0)
        x = _held_constant(x, self.blank_)
        predicted = np.zeros(rows.height)
        self.models_ = []
        with limit_threads(self.num_threads, "openmp"):
            for side, train in trains:
                if len(train) == 0:  # a few buyers may all hash to one side
                    continue
                model = self._regressor(len(train)).fit(x[train], z[train])
                self.models_.append(model)
                other = half != side
                if other.any():
                    predicted[other] = model.predict(x[other])
        frame = rows.select("kind").with_columns(pl.Series("_tau", predicted))
        self.edges_ = {}
        for (kind,), group in frame.group_by("kind"):
            qs = np.quantile(group["_tau"].to_numpy(), np.linspace(0, 1, self.bins + 1)[1:-1])
            self.edges_[str(kind)] = tuple(float(q) for q in np.unique(qs))
        banded = rows.with_columns(self._bands(rows["kind"], predicted))
        self.bands_ = SegmentEffects(segmentation=Segmentation(("_band",), ()), seed=self.seed).fit(
            banded, z
        )
        return self

    def _bands(self, kinds: pl.Series, tau: np.ndarray) -> pl.Series:
        band = np.zeros(len(tau), dtype=np.int64)
        kind_values = kinds.to_numpy()
        for kind, edges in self.edges_.items():
            rows = kind_values == kind
            band[rows] = np.searchsorted(np.asarray(edges), tau[rows], side="right")
        return pl.Series("_band", [f"band{b}" for b in band], pl.String)

    def predict(self, rows: pl.DataFrame) -> EffectPrediction:
        # A model pickled before `blank_` existed holds no column constant.
        blank = getattr(self, "blank_", np.zeros(0, dtype=np.bool_))
        x = _held_constant(self.spec.matrix(rows), blank)
        with limit_threads(self.num_threads, "openmp"):
            tau = (
                np.mean([m.predict(x) for m in self.models_], axis=0)
                if self.models_ and rows.height
                else np.zeros(rows.height)
            )
        return self.bands_.predict(rows.with_columns(self._bands(rows["kind"], tau)))

    def describe(self) -> list[str]:
        trees = [m.n_iter_ for m in self.models_]
        return [
            f"DR-learner: boosting ({trees} trees) on {len(self.spec.columns)} features ranks "
            f"buyers into {self.bins} bands per kind; each band's effect is its held-out mean",
            *self.bands_.describe(),
        ]
