"""Matrix factorization of buyer x item confidence (implicit ALS or BPR, CPU).

What the rest of the engine uses it for:

* `recommend` -- top-k items per buyer. Repeat purchases dominate grocery-like data, so
  items a buyer already bought are *not* filtered unless asked. Buyers never seen in
  training get the popularity ranking (confidence mass per item), flagged ``known=False``.
* `score_pairs` -- buyer . item affinity for given pairs; NaN and ``known=False`` where the
  buyer or the item is unknown (never an exception).
* `score_offer` -- relevance of an offer to a buyer: the mean (and max) affinity over the
  offer's items (`recsys.features.OfferItems`, which expands store-wide offers to their
  seller's items).
* `fold_in` + `with_buyers` -- factors for buyers seen after training, from their events,
  with the item factors fixed.
* `save` / `load` -- numpy ``.npz`` + JSON + parquet id lists; no pickle.

Fitting, top-k and fold-in run with BLAS limited to one thread (threadpoolctl; implicit's
own threads do the work, and a multi-threaded BLAS underneath them makes it several times
slower) and an explicit `num_threads`. ALS is deterministic for a given `random_state`
whatever the thread count; BPR's parallel SGD is only reproducible with ``num_threads=1``.
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field
from scipy.optimize import minimize
from scipy.special import expit

from recsys.config import StrictConfig
from recsys.features.interactions import (
    EventWeights,
    IdIndex,
    IdsLike,
    Interactions,
    InteractionStats,
    OfferItems,
    build_interactions,
)
from recsys.models.base import Estimator
from recsys.models.threads import limit_threads

log = logging.getLogger(__name__)

_FORMAT = "recsys.models.mf"
_FORMAT_VERSION = 1
_ROWS_PER_CHUNK = 1 << 16
"""Pairs scored per chunk (bounds memory of the gathered factor rows)."""
_BLOCK_CELLS = 1 << 22
"""Buyer x item cells per dense block when taking the max over an offer's items."""
_BPR_TRIPLES_PER_BATCH = 1 << 18


class MFConfig(StrictConfig):
    """Configuration of `MatrixFactorization`."""

    algorithm: Literal["als", "bpr"] = "als"
    factors: int = Field(default=64, ge=1)
    """Latent dimensions (BPR adds one more column for the item bias)."""
    regularization: float = Field(default=0.1, ge=0)
    """L2 penalty on factors (implicit 0.7 does not scale it by the number of interactions)."""
    iterations: int | None = Field(default=None, ge=1)
    """ALS sweeps or BPR epochs; None: 15 for ALS, 100 for BPR (implicit's defaults)."""
    alpha: float = Field(default=5.0, gt=0)
    """Confidence scale: c = 1 + alpha * f(weighted count), see `EventWeights.scaling`."""
    learning_rate: float = Field(default=0.01, gt=0)
    """BPR only: SGD step size."""
    use_cg: bool = True
    """ALS only: conjugate-gradient solver (faster) instead of Cholesky."""
    verify_negative_samples: bool = True
    """BPR only: resample a negative that the buyer in fact interacted with."""
    random_state: int = 42
    num_threads: int = Field(default=1, ge=1)
    """Threads of implicit's fit, top-k and fold-in (BLAS itself is pinned to 1)."""
    event_weights: EventWeights = Field(default_factory=EventWeights)

    @property
    def resolved_iterations(self) -> int:
        if self.iterations is not None:
            return self.iterations
        return 15 if self.algorithm == "als" else 100


@dataclass(frozen=True)
class Recommendations:
    """Top-k items per buyer: row ``r`` answers ``buyer_ids[r]``.

    ``known[r]`` is False for a buyer absent from the model: that row is the popularity
    ranking and its scores are item confidence mass, not dot products. A slot with no item
    (fewer eligible items than k) holds ``None`` with score NaN.
    """

    buyer_ids: np.ndarray
    item_ids: np.ndarray
    scores: np.ndarray
    known: np.ndarray

    def to_frame(self) -> pl.DataFrame:
        """Long form: buyer_id, rank (1-based), item_id, score, known."""
        n, k = self.item_ids.shape
        frame = pl.DataFrame(
            {
                "buyer_id": pl.Series(np.repeat(self.buyer_ids, k), dtype=pl.String),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
                "item_id": pl.Series(self.item_ids.ravel(), dtype=pl.String),
                "score": self.scores.ravel().astype(np.float64),
                "known": np.repeat(self.known, k),
            }
        )
        return frame.filter(pl.col("item_id").is_not_null())


@dataclass(frozen=True)
class PairScores:
    """Affinity per pair; ``score`` is NaN where ``known`` is False."""

    score: np.ndarray
    known: np.ndarray


@dataclass(frozen=True)
class OfferScores:
    """Relevance of an offer to a buyer, per pair; NaN where ``known`` is False.

    ``known`` requires a known buyer, a known offer and at least one indexed item in it.
    """

    mean: np.ndarray
    """Mean buyer . item affinity over the offer's items."""
    max: np.ndarray
    """Best single item of the offer for the buyer (NaN when not requested)."""
    known: np.ndarray
    n_items: np.ndarray
    """Items the offer covers (after expanding store/platform scope); 0 for unknown offers."""


@dataclass(frozen=True)
class FoldedBuyers:
    """Factors computed for buyers from their events with the item factors held fixed."""

    buyer_index: IdIndex
    factors: np.ndarray
    """float32, one row per buyer of `buyer_index`, same width as the model's buyer factors."""
    interactions: Interactions
    """The confidence rows the factors were solved from (in the model's item index)."""


class MatrixFactorization(Estimator[MFConfig]):
    """Buyer and item factors from implicit feedback, with offer relevance and fold-in.

    Examples
    --------
    >>> model = MatrixFactorization(MFConfig(factors=16))  # doctest: +SKIP
    >>> model.fit(events, items=items).recommend(["b1"], k=5).to_frame()  # doctest: +SKIP
    """

    config_class = MFConfig

    buyer_factors_: np.ndarray
    item_factors_: np.ndarray
    buyer_index_: IdIndex
    item_index_: IdIndex
    train_matrix_: sp.csr_matrix
    item_popularity_: np.ndarray
    interaction_stats_: InteractionStats | None
    as_of_: datetime | None
    skipped_: str | None = None
    """Why nothing could be factorized (every buyer is then cold), else None."""

    def fit(
        self,
        events: pl.DataFrame | pl.LazyFrame,
        items: pl.DataFrame | None = None,
        as_of: datetime | None = None,
    ) -> Self:
        """Fit on contract `events`.

        Parameters
        ----------
        events
            Contract `events` table; a LazyFrame (say, a time cut of a large table) is
            scanned for the columns the matrix needs, never copied whole.
        items
            Contract `items` table: fixes the item index, so items without events get a
            column too (zero factors under ALS). None: the items seen in `events`.
        as_of
            Reference time of the time decay; later events are ignored. None: latest event.

        With no usable interaction (no event names a known item), nothing is factorized:
        the model knows no buyer and `skipped_` says why. Cost: `build_interactions` (one
        scan of the events, one row per (buyer, item) pair), then the factors: (buyers +
        items) x factors.
        """
        return super().fit(events, items=items, as_of=as_of)

    def _fit(
        self,
        events: pl.DataFrame | pl.LazyFrame,
        items: pl.DataFrame | None = None,
        as_of: datetime | None = None,
    ) -> None:
        cfg = self.config
        item_index = IdIndex(items["item_id"]) if items is not None else None
        inter = build_interactions(
            events, cfg.event_weights, alpha=cfg.alpha, item_index=item_index, as_of=as_of
        )
        if inter.matrix.nnz == 0:
            self._fit_nothing(inter)
            return
        self.fit_matrix(inter)

    def _fit_nothing(self, interactions: Interactions) -> None:
        """No event names a known item with a positive weight: there is nothing to factorize.

        The model is still fitted, knowing no buyer: every buyer is cold (affinity unknown,
        recommendations by popularity, all zero), and `skipped_` says why.
        """
        stats = interactions.stats
        self.skipped_ = (
            f"no usable buyer-item interactions ({stats.n_events} events: "
            f"{stats.n_null_item} without an item, {stats.n_unknown_item} of unknown items, "
            f"{stats.n_zero_weight} of zero-weight types); give events item_id values of the "
            "items table"
        )
        log.info("matrix factorization skipped: %s", self.skipped_)
        width = self.config.factors + (1 if self.config.algorithm == "bpr" else 0)
        n_items = len(interactions.item_index)
        self.buyer_factors_ = np.zeros((0, width), dtype=np.float32)
        self.item_factors_ = np.zeros((n_items, width), dtype=np.float32)
        if self.config.algorithm == "bpr":
            self.item_factors_[:, -1] = 0.0  # no bias either
        self.buyer_index_ = IdIndex(pl.Series([], dtype=pl.String))
        self.item_index_ = interactions.item_index
        self.train_matrix_ = sp.csr_matrix((0, n_items), dtype=np.float32)
        self.item_popularity_ = np.zeros(n_items, dtype=np.float64)
        self.interaction_stats_ = stats
        self.as_of_ = interactions.as_of
        self._popular_order: np.ndarray | None = None

    def fit_matrix(self, interactions: Interactions) -> Self:
        """Fit on a prepared confidence matrix (`build_interactions` output) and return self.

        Exposed for benchmarks and callers that build their own matrix; `fit` goes through
        here after building the matrix from events.
        """
        cfg = self.config
        matrix = interactions.matrix.astype(np.float32).tocsr()
        expected = (len(interactions.buyer_index), len(interactions.item_index))
        if matrix.shape != expected:
            raise ValueError(f"fit_matrix: matrix shape {matrix.shape} != index sizes {expected}")
        if matrix.nnz == 0:
            raise ValueError(
                f"MatrixFactorization.fit: no usable buyer-item interactions "
                f"({interactions.stats}); check that events have item_id values present in "
                "the items table and event types with a positive weight in event_weights"
            )
        self._fitted = False
        with _single_threaded_blas():
            model = self._make_implicit()
            model.fit(matrix, show_progress=False)
            buyer_factors = _as_float32(model.user_factors)
            item_factors = _as_float32(model.item_factors)
        if cfg.algorithm == "als":
            # The ALS optimum of an item nobody interacted with is exactly 0 (implicit's
            # solvers return it today); guarantee it, so cold items stay neutral (score 0).
            item_factors[np.diff(matrix.tocsc().indptr) == 0] = 0.0
        self.buyer_factors_ = buyer_factors
        self.item_factors_ = item_factors
        self.buyer_index_ = interactions.buyer_index
        self.item_index_ = interactions.item_index
        self.train_matrix_ = matrix
        self.item_popularity_ = np.asarray(matrix.sum(axis=0), dtype=np.float64).ravel()
        self.interaction_stats_ = interactions.stats
        self.as_of_ = interactions.as_of
        self._popular_order = None
        self.skipped_ = None
        self._fitted = True
        return self

    def _make_implicit(self) -> Any:
        cfg = self.config
        if cfg.algorithm == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            return AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=1.0,  # confidence is already scaled in the matrix
                dtype=np.float32,
                use_cg=cfg.use_cg,
                iterations=cfg.resolved_iterations,
                num_threads=cfg.num_threads,
                random_state=cfg.random_state,
            )
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=cfg.factors,
            learning_rate=cfg.learning_rate,
            regularization=cfg.regularization,
            dtype=np.float32,
            iterations=cfg.resolved_iterations,
            verify_negative_samples=cfg.verify_negative_samples,
            num_threads=cfg.num_threads,
            random_state=cfg.random_state,
        )

    # ----------------------------------------------------------------------- scoring

    def buyer_vectors(self, buyer_ids: IdsLike) -> tuple[np.ndarray, np.ndarray]:
        """Buyer factors (zeros for unknown buyers) and the `known` mask: embeddings as features."""
        self.check_is_fitted("buyer_vectors")
        codes = self.buyer_index_.codes(buyer_ids)
        known = codes >= 0
        out = np.zeros((len(codes), self.buyer_factors_.shape[1]), dtype=np.float32)
        out[known] = self.buyer_factors_[codes[known]]
        return out, known

    def recommend(
        self, buyer_ids: IdsLike, k: int = 10, filter_already_bought: bool = False
    ) -> Recommendations:
        """Top-`k` items for each buyer (popularity for unknown buyers, flagged).

        `filter_already_bought` removes every item with a training interaction of the buyer
        (views included); off by default because repeat purchases are the norm.
        """
        self.check_is_fitted("recommend")
        from implicit.cpu.topk import topk

        buyers = np.asarray(_ids_array(buyer_ids), dtype=object)
        codes = self.buyer_index_.codes(buyers)
        known = codes >= 0
        n_items = len(self.item_index_)
        k = max(0, min(int(k), n_items))
        item_codes = np.full((len(codes), k), -1, dtype=np.int64)
        scores = np.full((len(codes), k), np.nan, dtype=np.float32)
        if k and known.any():
            rows = codes[known]
            with _single_threaded_blas():  # implicit's threads call BLAS: 4-6x faster pinned
                ids, top = topk(
                    self.item_factors_,
                    np.ascontiguousarray(self.buyer_factors_[rows]),
                    k,
                    filter_query_items=self.train_matrix_[rows] if filter_already_bought else None,
                    num_threads=self.config.num_threads,
                )
            # implicit pads with filtered items scored -FLT_MAX when fewer than k remain.
            empty = (ids < 0) | (top <= np.finfo(np.float32).min)
            item_codes[known] = np.where(empty, -1, ids)
            scores[known] = np.where(empty, np.nan, top)
        if k and (~known).any():
            order = self._popularity_order()[:k]
            item_codes[~known] = order
            scores[~known] = self.item_popularity_[order].astype(np.float32)
        item_ids = np.full(item_codes.shape, None, dtype=object)
        valid = item_codes >= 0
        item_ids[valid] = self.item_index_.lookup(item_codes[valid])
        return Recommendations(buyers, item_ids, scores, known)

    def score_pairs(self, buyer_ids: IdsLike, item_ids: IdsLike) -> PairScores:
        """Dot product of buyer and item factors for each (buyer, item) pair.

        Unknown buyers or items give NaN and ``known=False``; use `with_buyers` to score
        buyers folded in after training.
        """
        self.check_is_fitted("score_pairs")
        b = self.buyer_index_.codes(buyer_ids)
        i = self.item_index_.codes(item_ids)
        if len(b) != len(i):
            raise ValueError(f"score_pairs: {len(b)} buyer ids but {len(i)} item ids")
        known = (b >= 0) & (i >= 0)
        score = np.full(len(b), np.nan, dtype=np.float64)
        idx = np.flatnonzero(known)
        for start in range(0, len(idx), _ROWS_PER_CHUNK):
            part = idx[start : start + _ROWS_PER_CHUNK]
            score[part] = _rowwise_dot(self.buyer_factors_[b[part]], self.item_factors_[i[part]])
        return PairScores(score, known)

    def score_offer(
        self,
        buyer_ids: IdsLike,
        offer_ids: IdsLike,
        offer_items: OfferItems,
        *,
        with_max: bool = True,
    ) -> OfferScores:
        """Mean (and max) buyer . item affinity over each pair's offer items.

        The mean is one sparse product (offer x item membership times item factors, divided
        by the offer's item count) followed by row-wise dots; the max is one dense block
        product per distinct scope (buyers of its offers x its items), chunked to bound
        memory. Store-wide offers cover their seller's items, platform-wide offers every
        item (see `recsys.features.build_offer_items`); an offer without items is NaN.
        Items without training events (zero factors under ALS) count as affinity 0.
        """
        self.check_is_fitted("score_offer")
        membership = offer_items.matrix
        if membership.shape[1] != len(self.item_index_) or (
            offer_items.item_index is not self.item_index_
            and offer_items.item_index != self.item_index_
        ):
            raise ValueError(
                "score_offer: offer_items was built on a different item index; build it with "
                "build_offer_items(..., item_index=model.item_index_)"
            )
        b = self.buyer_index_.codes(buyer_ids)
        # Each offer's scope row: store-wide offers of one seller share one.
        o = offer_items.row_of(offer_items.offer_index.codes(offer_ids))
        if len(b) != len(o):
            raise ValueError(f"score_offer: {len(b)} buyer ids but {len(o)} offer ids")
        counts = np.diff(membership.indptr)
        n_items = np.where(o >= 0, counts[np.maximum(o, 0)], 0)
        known = (b >= 0) & (n_items > 0)

        mean = np.full(len(b), np.nan, dtype=np.float64)
        offer_means = np.asarray(membership @ self.item_factors_, dtype=np.float32)
        offer_means /= np.maximum(counts, 1)[:, None].astype(np.float32)
        idx = np.flatnonzero(known)
        for start in range(0, len(idx), _ROWS_PER_CHUNK):
            part = idx[start : start + _ROWS_PER_CHUNK]
            mean[part] = _rowwise_dot(self.buyer_factors_[b[part]], offer_means[o[part]])

        best = np.full(len(b), np.nan, dtype=np.float64)
        if with_max and len(idx):
            order = idx[np.argsort(o[idx], kind="stable")]
            offers_sorted = o[order]
            starts = np.flatnonzero(np.r_[True, offers_sorted[1:] != offers_sorted[:-1]])
            ends = np.r_[starts[1:], len(order)]
            for s, e in zip(starts, ends, strict=True):
                row = offers_sorted[s]
                cols = membership.indices[membership.indptr[row] : membership.indptr[row + 1]]
                item_block = self.item_factors_[cols].T
                step = max(1, _BLOCK_CELLS // len(cols))
                for cs in range(s, e, step):
                    part = order[cs : min(cs + step, e)]
                    block = self.buyer_factors_[b[part]] @ item_block
                    best[part] = block.max(axis=1)
        return OfferScores(mean, best, known, n_items)

    # ----------------------------------------------------------------------- fold-in

    def fold_in(
        self, events: pl.DataFrame | pl.LazyFrame, as_of: datetime | None = None
    ) -> FoldedBuyers:
        """Factors for the buyers in `events`, solved with the item factors held fixed.

        ALS: the exact least-squares solution of the ALS objective for each buyer,
        ``x = (Y'Y + Y'(C - I)Y + reg * I)^-1 Y'C p`` (implicit's Cholesky solver,
        `recalculate_user`), i.e. what one more ALS half-sweep would give.
        BPR: the buyer's vector maximising the BPR objective (mean log-sigmoid of positive
        minus sampled-negative scores, minus ``reg / 2 * |x|^2``, with
        ``reg >= 1e-3``) over fixed item factors and biases -- a concave problem, solved with
        L-BFGS; the bias column stays 1 as in training.

        Events use the model's event weights and item index (unknown items are skipped and
        counted in ``interactions.stats``); buyers whose events carry no positive weight on
        a known item get no row. Use `with_buyers` to score the result.
        """
        self.check_is_fitted("fold_in")
        cfg = self.config
        inter = build_interactions(
            events, cfg.event_weights, alpha=cfg.alpha, item_index=self.item_index_, as_of=as_of
        )
        matrix = inter.matrix
        width = self.item_factors_.shape[1]
        if matrix.shape[0] == 0:
            factors = np.zeros((0, width), dtype=np.float32)
        elif cfg.algorithm == "als":
            with _single_threaded_blas():
                from implicit.cpu.als import AlternatingLeastSquares

                solver = AlternatingLeastSquares(
                    factors=width,
                    regularization=cfg.regularization,
                    alpha=1.0,
                    dtype=np.float32,
                    num_threads=cfg.num_threads,
                )
                # implicit's Cython solver needs a writable buffer; factors that came
                # through shared memory (a Ray object store, a memory map) are read-only.
                solver.item_factors = _writable(self.item_factors_)
                factors = _as_float32(solver.recalculate_user(np.arange(matrix.shape[0]), matrix))
        else:
            factors = _bpr_fold_in(
                matrix,
                self.item_factors_,
                max(cfg.regularization, 1e-3),
                np.random.default_rng(cfg.random_state),
            )
        return FoldedBuyers(inter.buyer_index, factors, inter)

    def with_buyers(self, folded: FoldedBuyers) -> MatrixFactorization:
        """A fitted copy of this model that also knows the folded-in buyers.

        Item factors and popularity are shared (not copied). A folded buyer already in the
        model replaces its trained row (factors and interactions).
        """
        self.check_is_fitted("with_buyers")
        if folded.factors.shape[1] != self.buyer_factors_.shape[1]:
            raise ValueError("with_buyers: folded factors come from a model of another width")
        index = self.buyer_index_.extend(folded.buyer_index.ids)
        n_old, n_new = len(self.buyer_index_), len(index)
        target = index.codes(folded.buyer_index.ids)
        factors = np.zeros((n_new, self.buyer_factors_.shape[1]), dtype=np.float32)
        factors[:n_old] = self.buyer_factors_
        factors[target] = folded.factors
        # Row selection over [train rows; folded rows]: each final row taken from one of them.
        stacked = sp.vstack([self.train_matrix_, folded.interactions.matrix], format="csr")
        source = np.arange(n_new, dtype=np.int64)
        source[target] = n_old + np.arange(len(target))
        clone = MatrixFactorization(self.get_config())
        clone.buyer_factors_ = factors
        clone.item_factors_ = self.item_factors_
        clone.buyer_index_ = index
        clone.item_index_ = self.item_index_
        clone.train_matrix_ = stacked[source].astype(np.float32)
        clone.item_popularity_ = self.item_popularity_
        clone.interaction_stats_ = self.interaction_stats_
        clone.as_of_ = self.as_of_
        clone.skipped_ = self.skipped_
        clone._popular_order = self._popular_order
        clone._fitted = True
        return clone

    # ----------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to directory `path` (created); returns the path.

        Files: ``model.json`` (format, config, as_of, stats), ``arrays.npz`` (factors,
        popularity, training matrix), ``buyer_ids.parquet`` and ``item_ids.parquet``.
        """
        self.check_is_fitted("save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "config": self.config.to_dict(),
            "as_of": self.as_of_.isoformat() if self.as_of_ is not None else None,
            "interaction_stats": (
                self.interaction_stats_.as_dict() if self.interaction_stats_ else None
            ),
            "skipped": self.skipped_,
        }
        (path / "model.json").write_text(json.dumps(meta, indent=2))
        m = self.train_matrix_
        np.savez(
            path / "arrays.npz",
            buyer_factors=self.buyer_factors_,
            item_factors=self.item_factors_,
            item_popularity=self.item_popularity_,
            train_data=m.data,
            train_indices=m.indices,
            train_indptr=m.indptr,
            train_shape=np.asarray(m.shape, dtype=np.int64),
        )
        pl.DataFrame({"buyer_id": self.buyer_index_.ids}).write_parquet(path / "buyer_ids.parquet")
        pl.DataFrame({"item_id": self.item_index_.ids}).write_parquet(path / "item_ids.parquet")
        return path

    @classmethod
    def load(cls, path: str | Path) -> MatrixFactorization:
        """Read a model written by `save`; it scores exactly like the saved one."""
        path = Path(path)
        meta_file = path / "model.json"
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"{meta_file} not found: is {path} a saved MatrixFactorization?"
            )
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != _FORMAT or meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{meta_file}: format {meta.get('format')!r} v{meta.get('format_version')} is "
                f"not {_FORMAT!r} v{_FORMAT_VERSION}; re-train or use a matching release"
            )
        model = cls(MFConfig.from_dict(meta["config"], source=str(meta_file)))
        with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
            model.buyer_factors_ = arrays["buyer_factors"]
            model.item_factors_ = arrays["item_factors"]
            model.item_popularity_ = arrays["item_popularity"]
            model.train_matrix_ = sp.csr_matrix(
                (arrays["train_data"], arrays["train_indices"], arrays["train_indptr"]),
                shape=tuple(int(x) for x in arrays["train_shape"]),
            )
        model.buyer_index_ = IdIndex(pl.read_parquet(path / "buyer_ids.parquet")["buyer_id"])
        model.item_index_ = IdIndex(pl.read_parquet(path / "item_ids.parquet")["item_id"])
        model.as_of_ = datetime.fromisoformat(meta["as_of"]) if meta["as_of"] else None
        stats = meta.get("interaction_stats")
        model.interaction_stats_ = InteractionStats(**stats) if stats else None
        model.skipped_ = meta.get("skipped")
        model._popular_order = None
        model._fitted = True
        return model

    # ----------------------------------------------------------------------- helpers

    def _popularity_order(self) -> np.ndarray:
        if getattr(self, "_popular_order", None) is None:
            self._popular_order = np.argsort(-self.item_popularity_, kind="stable")
        assert self._popular_order is not None
        return self._popular_order


def _single_threaded_blas() -> AbstractContextManager[Any]:
    """Context limiting BLAS to one thread (implicit's own threads do the parallel work).

    The controller is created on first use, not at import, and reused: building one scans
    the loaded libraries (milliseconds), which matters for per-request `recommend` calls.
    """
    return limit_threads(1, "blas")


def _as_float32(factors: Any) -> np.ndarray:
    """implicit's factors (numpy, or a GPU matrix with `to_numpy`) as C-contiguous float32."""
    if hasattr(factors, "to_numpy"):
        factors = factors.to_numpy()
    return np.ascontiguousarray(factors, dtype=np.float32)


def _ids_array(values: IdsLike) -> np.ndarray:
    if isinstance(values, pl.Series):
        return values.cast(pl.String).to_numpy()
    return np.asarray(values, dtype=object)


def _rowwise_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _bpr_fold_in(
    matrix: sp.csr_matrix,
    item_factors: np.ndarray,
    regularization: float,
    rng: np.random.Generator,
    n_negatives: int = 10,
    max_iter: int = 200,
) -> np.ndarray:
    """BPR user vectors with fixed items: minimise mean softplus(-(s_ui - s_uj)) + reg/2 |x|^2.

    `item_factors` carries the item bias in its last column (implicit's layout); the
    returned rows end with the constant 1 that multiplies it.
    """
    n_users = matrix.shape[0]
    f = item_factors.shape[1] - 1
    Y = item_factors[:, :f]
    bias = item_factors[:, f].astype(np.float64)
    out = np.zeros((n_users, f + 1), dtype=np.float32)
    out[:, f] = 1.0
    positives = np.diff(matrix.indptr)
    budget = max(1, _BPR_TRIPLES_PER_BATCH // n_negatives)
    start = 0
    while start < n_users:
        stop = start + 1
        total = positives[start]
        while stop < n_users and total + positives[stop] <= budget:
            total += positives[stop]
            stop += 1
        out[start:stop, :f] = _bpr_fold_in_batch(
            matrix[start:stop], Y, bias, regularization, rng, n_negatives, max_iter
        )
        start = stop
    return out


def _bpr_fold_in_batch(
    sub: sp.csr_matrix,
    Y: np.ndarray,
    bias: np.ndarray,
    regularization: float,
    rng: np.random.Generator,
    n_negatives: int,
    max_iter: int,
) -> np.ndarray:
    n_users, n_items = sub.shape
    f = Y.shape[1]
    u = np.repeat(np.repeat(np.arange(n_users), np.diff(sub.indptr)), n_negatives)
    i = np.repeat(sub.indices, n_negatives)
    j = rng.integers(0, n_items, len(u))
    keep = np.asarray(sub[u, j]).ravel() == 0  # a sampled "negative" must not be a positive
    u, i, j = u[keep], i[keep], j[keep]
    if len(u) == 0:
        return np.zeros((n_users, f), dtype=np.float32)
    D = (Y[i] - Y[j]).astype(np.float32)
    db = bias[i] - bias[j]
    per_user = np.bincount(u, minlength=n_users).astype(np.float64)
    weight = 1.0 / per_user[u]
    # Sums over each buyer's triples as a sparse product; `u` is sorted, so the CSR data of
    # this (buyer x triple) matrix is in triple order and can be swapped for the gradients.
    indptr = np.r_[0, np.cumsum(per_user)].astype(np.int64)
    triples = np.arange(len(u), dtype=np.int64)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        X = x.reshape(n_users, f)
        d = np.einsum("tf,tf->t", X[u], D, dtype=np.float64) + db
        loss = float(np.sum(weight * np.logaddexp(0.0, -d)) + 0.5 * regularization * (x @ x))
        g = -weight * expit(-d)
        spread = sp.csr_matrix((g, triples, indptr), shape=(n_users, len(u)))
        grad = np.asarray(spread @ D, dtype=np.float64)
        grad += regularization * X
        return loss, grad.ravel()

    result = minimize(
        objective,
        np.zeros(n_users * f),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter},
    )
    return result.x.reshape(n_users, f).astype(np.float32)


def _writable(array: np.ndarray) -> np.ndarray:
    """`array` itself when writable, else a writable copy."""
    return array if array.flags.writeable else array.copy()
