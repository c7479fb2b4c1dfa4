"""Item-ranking metrics for top-k recommendations, with repeat purchases allowed.

In grocery-like data buyers re-buy the same items, so a buyer's *relevant* set is every
item they interact with in the test window, including items bought before; nothing here
removes already-bought items from either side (a popularity or personal-frequency
baseline that recommends them again is credited for it).

Inputs, for every function:

- ``recommendations``: a 2-D integer array ``(n_users, width)`` of item indices in rank
  order, ``-1`` marking an empty slot (anywhere in a row); or one sequence of item
  indices per user, of any lengths.
- ``relevance``: a scipy sparse matrix or array ``(n_users, n_items)`` whose entries
  ``> 0`` mark relevant items (explicit zeros and negatives are not relevant); or one
  collection of relevant item indices per user.

Rules shared by all metrics:

- Only the first ``k`` slots count (``k=None``: all of them). A list shorter than ``k``
  or holding ``-1`` slots is treated as filled with irrelevant items, so precision and
  NDCG penalise it; a model cannot score higher by recommending less.
- An item recommended twice in one list is a hit once, at its first position.
- Users with no relevant items are excluded from the mean (no recall or NDCG is defined
  for them, and counting them as 0 would mix test-set coverage into model quality).
  When no user has a relevant item the result is NaN.

Everything is vectorized: one sort of the relevant (user, item) keys and one binary
search of the recommended keys, so millions of users are fine.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Literal, TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

Recommendations: TypeAlias = NDArray[np.integer] | Sequence[Sequence[int]]
"""Item indices in rank order per user: a padded 2-D array or per-user sequences."""

Relevance: TypeAlias = sp.sparray | sp.spmatrix | Sequence[Collection[int]]
"""Relevant items per user: a sparse ``(n_users, n_items)`` matrix or per-user collections."""


def _pad_lists(lists: Sequence[Iterable[int]]) -> NDArray[np.int64]:
    """Per-user item lists as a ``(n_users, max_len)`` array padded with -1."""
    rows = [np.asarray(list(items), dtype=np.int64).reshape(-1) for items in lists]
    lengths = np.array([r.shape[0] for r in rows], dtype=np.int64)
    width = int(lengths.max()) if lengths.size else 0
    out = np.full((len(rows), width), -1, dtype=np.int64)
    if width:
        out[np.arange(width) < lengths[:, None]] = np.concatenate(rows)
    return out


def _recommendation_array(recommendations: Recommendations) -> NDArray[np.int64]:
    if isinstance(recommendations, np.ndarray):
        if recommendations.ndim != 2:
            raise ValueError(
                "recommendations must be 2-D (n_users, k), got an array of shape "
                f"{recommendations.shape}; use -1 to pad short lists"
            )
        if not np.issubdtype(recommendations.dtype, np.integer):
            raise ValueError(
                f"recommendations must hold integer item indices, got dtype "
                f"{recommendations.dtype}; map item ids to indices first"
            )
        return recommendations.astype(np.int64, copy=False)
    return _pad_lists(recommendations)


def _relevant_keys(
    relevance: Relevance, n_users: int, n_items_hint: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Sorted ``user * n_items + item`` keys of relevant pairs, counts per user, n_items."""
    if sp.issparse(relevance):
        rel = sp.csr_array(relevance)
        if not rel.has_canonical_format:
            rel = rel.copy()
            rel.sum_duplicates()
        if rel.shape[0] != n_users:
            raise ValueError(
                f"relevance has {rel.shape[0]} rows but recommendations has {n_users}; "
                "both need one row per user, in the same order"
            )
        n_items = int(rel.shape[1])
        users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(rel.indptr))
        items = rel.indices.astype(np.int64)
        keep = rel.data > 0
        users, items = users[keep], items[keep]
    elif isinstance(relevance, np.ndarray):
        raise TypeError(
            "relevance as a numpy array is ambiguous (a dense 0/1 matrix or item indices per "
            "user?); pass scipy.sparse.csr_array(matrix) for a matrix, or a list of per-user "
            "item collections"
        )
    else:
        lists = [np.fromiter(items, dtype=np.int64) for items in relevance]
        if len(lists) != n_users:
            raise ValueError(
                f"relevance has {len(lists)} users but recommendations has {n_users}; "
                "both need one entry per user, in the same order"
            )
        counts = np.array([a.shape[0] for a in lists], dtype=np.int64)
        users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
        items = np.concatenate(lists) if lists else np.empty(0, dtype=np.int64)
        if items.size and items.min() < 0:
            bad = int(np.count_nonzero(items < 0))
            raise ValueError(f"relevance holds {bad} negative item indices")
        n_items = max(n_items_hint, int(items.max()) + 1 if items.size else 0)
        keys = np.unique(users * max(n_items, 1) + items)
        users = keys // max(n_items, 1)
        items = keys % max(n_items, 1)
    n_relevant = np.bincount(users, minlength=n_users).astype(np.int64)
    keys = users * n_items + items  # sorted: CSR order, or np.unique order
    return keys, n_relevant, n_items


def _hits(
    recommendations: Recommendations, relevance: Relevance, k: int | None
) -> tuple[NDArray[np.bool_], NDArray[np.int64], int]:
    """Hit matrix ``(n_users, k)``, relevant-set sizes per user, and the cutoff ``k``."""
    recs = _recommendation_array(recommendations)
    n_users, width = recs.shape
    if k is None:
        k = width
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer (or None for every column), got {k!r}")
    k = int(k)
    recs = recs[:, :k]
    bad = int(np.count_nonzero(recs < -1))
    if bad:
        raise ValueError(f"recommendations hold {bad} indices below -1; -1 is the only padding")
    hint = int(recs.max()) + 1 if recs.size else 0
    keys, n_relevant, n_items = _relevant_keys(relevance, n_users, hint)
    bad = int(np.count_nonzero(recs >= n_items))
    if bad:
        raise ValueError(
            f"recommendations hold {bad} item indices >= n_items ({n_items}) of relevance"
        )
    # Repeated items in one row count once: mark every occurrence after the first.
    order = np.argsort(recs, axis=1, kind="stable")
    ranked = np.take_along_axis(recs, order, axis=1)
    repeat_sorted = np.zeros(recs.shape, dtype=bool)
    repeat_sorted[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)

    if keys.size:
        query = np.arange(n_users, dtype=np.int64)[:, None] * n_items + recs
        pos = np.minimum(np.searchsorted(keys, query), keys.shape[0] - 1)
        hits = (keys[pos] == query) & (recs >= 0) & ~repeat
    else:
        hits = np.zeros(recs.shape, dtype=bool)
    if width < k:
        hits = np.pad(hits, ((0, 0), (0, k - width)))
    return hits, n_relevant, k


def _mean_over_evaluable(per_user: ArrayLike, n_relevant: NDArray[np.int64]) -> float:
    """Mean over users with at least one relevant item; NaN when there are none."""
    mask = n_relevant > 0
    if not mask.any():
        return float("nan")
    return float(np.asarray(per_user, dtype=np.float64)[mask].mean())


def precision_at_k(
    recommendations: Recommendations, relevance: Relevance, k: int | None = None
) -> float:
    """Mean share of the top ``k`` slots that hold a relevant item.

    The denominator is always ``k`` (see the module docstring for padding and the users
    excluded).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> rel = sp.csr_array([[1, 0, 1, 0], [0, 1, 0, 0]])
    >>> precision_at_k(np.array([[0, 1], [1, -1]]), rel)
    0.5
    """
    hits, n_relevant, k = _hits(recommendations, relevance, k)
    return _mean_over_evaluable(hits.sum(axis=1) / k, n_relevant)


def recall_at_k(
    recommendations: Recommendations,
    relevance: Relevance,
    k: int | None = None,
    denominator: Literal["n_relevant", "min_k"] = "n_relevant",
) -> float:
    """Mean share of each user's relevant items found in the top ``k``.

    Parameters
    ----------
    denominator
        ``"n_relevant"`` (default): plain recall, hits / number of relevant items.
        ``"min_k"``: hits / ``min(k, number of relevant items)``, so a buyer with more
        relevant items than slots can still reach 1 (the "truncated" recall of
        Liang et al. 2018); use it to compare cutoffs on heavy re-buyers.

    Examples
    --------
    >>> recall_at_k([[0, 1]], [{0, 2, 3}])
    0.3333333333333333
    >>> recall_at_k([[0, 1]], [{0, 2, 3}], denominator="min_k")
    0.5
    """
    hits, n_relevant, k = _hits(recommendations, relevance, k)
    if denominator == "n_relevant":
        den = n_relevant
    elif denominator == "min_k":
        den = np.minimum(n_relevant, k)
    else:
        raise ValueError(f"denominator must be 'n_relevant' or 'min_k', got {denominator!r}")
    per_user = hits.sum(axis=1) / np.maximum(den, 1)
    return _mean_over_evaluable(per_user, n_relevant)


def ndcg_at_k(
    recommendations: Recommendations, relevance: Relevance, k: int | None = None
) -> float:
    """Mean normalized discounted cumulative gain with binary gains.

    ``DCG = sum over hit positions i (0-based) of 1 / log2(i + 2)``, divided by the DCG
    of an ideal list with ``min(k, number of relevant items)`` hits at the top, so a
    perfect ranking scores 1.

    Examples
    --------
    >>> ndcg_at_k([[0, 1]], [{0, 1}])
    1.0
    >>> ndcg_at_k([[5, 0]], [{0}])
    0.6309297535714575
    """
    hits, n_relevant, k = _hits(recommendations, relevance, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = hits.astype(np.float64) @ discounts
    ideal = np.concatenate(([0.0], np.cumsum(discounts)))[np.minimum(n_relevant, k)]
    per_user = dcg / np.where(ideal > 0, ideal, 1.0)
    return _mean_over_evaluable(per_user, n_relevant)


def hit_rate_at_k(
    recommendations: Recommendations, relevance: Relevance, k: int | None = None
) -> float:
    """Share of users with at least one relevant item in their top ``k``.

    Examples
    --------
    >>> hit_rate_at_k([[0, 1], [2, 3]], [{1}, {0}])
    0.5
    """
    hits, n_relevant, _ = _hits(recommendations, relevance, k)
    return _mean_over_evaluable(hits.any(axis=1).astype(np.float64), n_relevant)
