"""Buyer x item confidence matrix built from the contract's `events` table.

Matrix factorization for implicit feedback (Hu, Koren and Volinsky, "Collaborative
Filtering for Implicit Feedback Datasets", 2008) needs one number per buyer-item pair:
how *confident* we are that the buyer likes the item. We derive it in three steps:

1. every event gets a weight by its type (`EventWeights`): a purchase says more than a
   view; a search carries no item. Purchase weights can be multiplied by the quantity.
2. optionally, each weight decays with the event's age before `as_of`
   (``weight * 0.5 ** (age_days / half_life_days)``), so recent behaviour counts more.
3. weights are summed per (buyer, item) pair into ``w`` and turned into a confidence:
   ``c = 1 + alpha * log1p(w / epsilon)`` (``scaling="log"``, the default: the paper's
   log form, robust to a few buyers with thousands of views) or ``c = 1 + alpha * w``
   (``scaling="linear"``, the paper's first form). Pairs whose summed weight is not
   positive (only searches, or removals outweighing everything else) are dropped: they
   are not evidence of preference.

The matrix holds ``c`` itself (>= 1), which is what `implicit`'s ALS solvers read as the
confidence of a positive (unobserved cells count as confidence 1, preference 0); so the
model must be given ``alpha=1`` and the scaling happens here, in one place.

Rows are buyers and columns items: `implicit` 0.7 expects a user x item CSR matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recsys.config import StrictConfig
from recsys.data.schema import EVENT_TYPES

log = logging.getLogger(__name__)

IdsLike = pl.Series | np.ndarray | Sequence[str | None]
"""Anything that holds a sequence of string ids: a polars Series, a numpy array, a list."""

_MICROSECONDS_PER_DAY = 86_400 * 1_000_000


class IdIndex:
    """A fixed, bijective mapping between string ids and dense codes ``0 .. n-1``.

    Used for buyers, items and offers alike. Mapping is vectorized (a hash join in
    polars), so it handles tens of millions of ids; unknown and null ids map to ``-1``.

    Examples
    --------
    >>> index = IdIndex(["b", "a"])
    >>> index.codes(["a", "zz", None, "b"]).tolist()
    [1, -1, -1, 0]
    >>> index.lookup([0, 1]).tolist()
    ['b', 'a']
    """

    __slots__ = ("_frame", "_ids")

    def __init__(self, ids: IdsLike) -> None:
        series = _to_series(ids).alias("id")
        if series.null_count():
            raise ValueError("IdIndex: ids must not be null")
        if series.n_unique() != len(series):
            dupes = series.filter(series.is_duplicated()).unique().head(5).to_list()
            raise ValueError(f"IdIndex: ids must be unique; duplicated ids include {dupes}")
        self._ids = series
        self._frame: pl.DataFrame | None = None

    @classmethod
    def from_values(cls, values: IdsLike) -> IdIndex:
        """Index of the distinct non-null values, sorted (deterministic whatever the row order)."""
        series = _to_series(values)
        return cls(series.drop_nulls().unique().sort())

    @property
    def ids(self) -> pl.Series:
        """The ids in code order (code ``k`` is ``ids[k]``)."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"IdIndex(n={len(self)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdIndex) and self._ids.equals(other._ids)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value object: not hashable

    def codes(self, values: IdsLike) -> np.ndarray:
        """Codes (int64) of `values`, in order; ``-1`` for ids not in the index and nulls."""
        series = _to_series(values).alias("id")
        if len(series) == 0:
            return np.empty(0, dtype=np.int64)
        if self._frame is None:
            self._frame = pl.DataFrame(
                {"id": self._ids, "code": np.arange(len(self._ids), dtype=np.int64)}
            )
        joined = series.to_frame().join(self._frame, on="id", how="left", maintain_order="left")
        return joined["code"].fill_null(-1).to_numpy().astype(np.int64, copy=False)

    def lookup(self, codes: np.ndarray | Sequence[int]) -> np.ndarray:
        """Ids (numpy object array of str) of `codes`; every code must be in ``0 .. n-1``."""
        arr = np.asarray(codes, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= len(self)):
            raise IndexError(f"IdIndex.lookup: codes must lie in [0, {len(self)}), got {arr}")
        return self._ids.gather(arr.ravel()).to_numpy().reshape(arr.shape)

    def extend(self, values: IdsLike) -> IdIndex:
        """A new index with the ids of `values` not yet indexed appended (existing codes kept)."""
        series = _to_series(values).drop_nulls().unique(maintain_order=True)
        new = series.filter(self.codes(series) < 0)
        return IdIndex(pl.concat([self._ids, new.alias(self._ids.name)]))


class EventWeights(StrictConfig):
    """How much each event type says about a buyer's liking of an item, and how to scale it.

    Defaults follow the purchase funnel: a view is weak evidence, putting an item in the
    cart three times stronger, a purchase the strongest. `search` has no item, so its
    weight only matters for sources that attach one. `remove_from_cart` defaults to 0; a
    negative weight is allowed and subtracts from the pair's sum, which is clamped at 0
    (pairs with a non-positive sum are dropped).
    """

    view: float = Field(default=1.0, allow_inf_nan=False)
    search: float = Field(default=0.0, allow_inf_nan=False)
    add_to_cart: float = Field(default=3.0, allow_inf_nan=False)
    remove_from_cart: float = Field(default=0.0, allow_inf_nan=False)
    checkout: float = Field(default=4.0, allow_inf_nan=False)
    purchase: float = Field(default=8.0, allow_inf_nan=False)
    purchase_by_quantity: bool = True
    """Multiply a purchase row's weight by its `quantity` (null quantity counts as 1)."""
    half_life_days: float | None = Field(default=None, gt=0)
    """Weight halves every this many days before `as_of`; None: no time decay."""
    scaling: Literal["log", "linear"] = "log"
    """`log`: c = 1 + alpha * log1p(w / epsilon); `linear`: c = 1 + alpha * w."""
    epsilon: float = Field(default=1.0, gt=0)
    """Scale of the summed weight inside the log (the paper's epsilon)."""

    def weight_map(self) -> dict[str, float]:
        """Weight of every contract event type."""
        return {name: float(getattr(self, name)) for name in EVENT_TYPES}

    def confidence(self, weighted: np.ndarray, alpha: float) -> np.ndarray:
        """Confidence (float32, >= 1) of summed weights ``w >= 0`` under this scaling."""
        w = np.asarray(weighted, dtype=np.float64)
        if self.scaling == "log":
            conf = 1.0 + alpha * np.log1p(w / self.epsilon)
        else:
            conf = 1.0 + alpha * w
        return conf.astype(np.float32)


@dataclass(frozen=True)
class InteractionStats:
    """What went into the matrix and what was skipped, and why (reported, never silent)."""

    n_events: int
    n_used: int
    """Events that contributed a weight to a kept pair's sum."""
    n_null_item: int
    """Events without an item (searches, store visits)."""
    n_unknown_item: int
    """Events whose item is not in the item index."""
    n_unknown_buyer: int
    """Events whose buyer is null or not in a fixed buyer index."""
    n_after_as_of: int
    """Events later than `as_of` (excluded: the matrix describes the state at `as_of`)."""
    n_zero_weight: int
    """Events whose type has weight 0."""
    n_pairs: int
    """Non-zero cells in the matrix."""
    n_dropped_pairs: int
    """(buyer, item) pairs whose summed weight was <= 0."""

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Interactions:
    """A buyer x item confidence matrix with the id indexes of its rows and columns."""

    matrix: sp.csr_matrix
    """CSR float32, shape (len(buyer_index), len(item_index)), values >= 1."""
    buyer_index: IdIndex
    item_index: IdIndex
    stats: InteractionStats
    as_of: datetime | None
    """The reference time of the time decay and the cut-off of events (None: no events)."""


def build_interactions(
    events: pl.DataFrame | pl.LazyFrame,
    weights: EventWeights | None = None,
    *,
    alpha: float = 1.0,
    item_index: IdIndex | None = None,
    buyer_index: IdIndex | None = None,
    as_of: datetime | None = None,
) -> Interactions:
    """Build the buyer x item confidence matrix from a contract `events` frame.

    Parameters
    ----------
    events
        Contract `events` table (`buyer_id`, `item_id`, `event_type`, `ts`, optional
        `quantity`). Extra columns are ignored. A LazyFrame (e.g. the events of a large
        dataset filtered by time) is read without materializing it: only the columns
        above are scanned.
    weights
        Event weights, decay and scaling; defaults to `EventWeights()`.
    alpha
        Confidence scale in ``c = 1 + alpha * f(w)``.
    item_index
        Fixed item columns (e.g. from the items table, so items without events still have a
        column). None: the distinct items of `events`, sorted.
    buyer_index
        Fixed buyer rows (e.g. to build a test matrix in a model's index); events of other
        buyers are skipped and counted. None: buyers with at least one kept pair, sorted.
    as_of
        Reference time for the decay; later events are skipped. None: the latest event.
        A naive datetime is read as UTC.

    Raises
    ------
    ValueError
        A required column is missing or an event type is not in the contract.

    Notes
    -----
    Cost: one lazy scan of the E events (five columns), summed per (buyer, item) before
    any id lookup: the rows materialized are the distinct (buyer, item) pairs.
    """
    weights = weights or EventWeights()
    lazy = events.lazy()
    schema = lazy.collect_schema()
    names = schema.names()
    _check_columns(names)
    wmap = weights.weight_map()

    ts = pl.col("ts")
    ts_type = schema["ts"]
    if isinstance(ts_type, pl.Datetime) and ts_type.time_zone is None:
        ts = ts.dt.replace_time_zone("UTC")
    # One scan of two columns: the row count, types outside the contract, the last event.
    types = pl.col("event_type").cast(pl.String)
    n_events, n_bad, max_ts = (
        lazy.select(pl.len(), (~types.is_in(list(wmap)) | types.is_null()).sum(), ts.max())
        .collect()
        .row(0)
    )
    if n_bad:
        _raise_bad_event_types(lazy, types, int(n_bad), wmap)
    item_col = pl.col("item_id") if "item_id" in names else pl.lit(None, pl.String)

    frame = lazy.select(
        pl.col("buyer_id").cast(pl.String),
        item_col.cast(pl.String).alias("item_id"),
        types,
        ts.cast(pl.Datetime("us", "UTC")).alias("ts"),
        *(
            [pl.col("quantity").cast(pl.Float64).fill_null(1.0)]
            if "quantity" in names
            else [pl.lit(1.0).alias("quantity")]
        ),
    )
    if as_of is None:
        as_of = max_ts if isinstance(max_ts, datetime) else None
    else:
        as_of = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)

    # One weight per event, then decay.
    weight = pl.col("event_type").replace_strict(wmap, return_dtype=pl.Float64)
    if weights.purchase_by_quantity:
        is_purchase = pl.col("event_type") == "purchase"
        weight = pl.when(is_purchase).then(weight * pl.col("quantity")).otherwise(weight)
    if weights.half_life_days is not None and as_of is not None:
        age_days = (pl.lit(as_of) - pl.col("ts")).dt.total_microseconds() / _MICROSECONDS_PER_DAY
        weight = weight * (0.5 ** (age_days.clip(lower_bound=0.0) / weights.half_life_days))
    frame = frame.with_columns(weight.alias("w"))

    # Counts of what is skipped, in one pass.
    late = pl.col("ts") > pl.lit(as_of) if as_of is not None else pl.lit(False)
    has_item = pl.col("item_id").is_not_null()
    has_buyer = pl.col("buyer_id").is_not_null()
    counts_plan = frame.select(
        n_after_as_of=late.sum(),
        n_null_item=(~late & ~has_item).sum(),
        n_null_buyer=(~late & has_item & ~has_buyer).sum(),
        n_zero_weight=(~late & has_item & has_buyer & (pl.col("w") == 0)).sum(),
    )
    # Sum weights per (buyer, item) on the strings first: this shrinks the frame before the
    # id lookups, which are the expensive part on tens of millions of rows.
    pairs_plan = (
        frame.filter(~late & has_item & has_buyer & (pl.col("w") != 0))
        .group_by("buyer_id", "item_id")
        .agg(pl.col("w").sum(), pl.len().alias("n"))
    )
    # One evaluation of the shared scan and weights for both answers.
    counts, pairs = pl.collect_all([counts_plan, pairs_plan])
    if item_index is None:
        item_index = IdIndex.from_values(pairs["item_id"])
    item_codes = item_index.codes(pairs["item_id"])
    unknown_item = item_codes < 0
    n_unknown_item = int(pairs["n"].to_numpy()[unknown_item].sum())

    if buyer_index is not None:
        buyer_codes = buyer_index.codes(pairs["buyer_id"])
        unknown_buyer = (buyer_codes < 0) & ~unknown_item
    else:
        buyer_codes = np.zeros(pairs.height, dtype=np.int64)
        unknown_buyer = np.zeros(pairs.height, dtype=bool)
    n_unknown_buyer = int(pairs["n"].to_numpy()[unknown_buyer].sum())

    w = pairs["w"].to_numpy()
    valid = ~unknown_item & ~unknown_buyer
    positive = valid & (w > 0)
    n_dropped = int((valid & ~positive).sum())
    n_used = int(pairs["n"].to_numpy()[positive].sum())

    if buyer_index is None:
        buyer_index = IdIndex.from_values(pairs["buyer_id"].filter(pl.Series(positive)))
        buyer_codes = buyer_index.codes(pairs["buyer_id"].filter(pl.Series(positive)))
    else:
        buyer_codes = buyer_codes[positive]
    item_codes = item_codes[positive]
    conf = weights.confidence(w[positive], alpha)

    matrix = sp.csr_matrix(
        (conf, (buyer_codes, item_codes)),
        shape=(len(buyer_index), len(item_index)),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    matrix.sort_indices()

    stats = InteractionStats(
        n_events=n_events,
        n_used=n_used,
        n_null_item=int(counts["n_null_item"].item()),
        n_unknown_item=n_unknown_item,
        n_unknown_buyer=n_unknown_buyer + int(counts["n_null_buyer"].item()),
        n_after_as_of=int(counts["n_after_as_of"].item()),
        n_zero_weight=int(counts["n_zero_weight"].item()),
        n_pairs=int(matrix.nnz),
        n_dropped_pairs=n_dropped,
    )
    skipped = stats.n_events - stats.n_used
    if skipped:
        log.info("interactions: %d of %d events not used: %s", skipped, n_events, stats)
    return Interactions(matrix, buyer_index, item_index, stats, as_of)


def _to_series(values: IdsLike) -> pl.Series:
    if isinstance(values, pl.Series):
        return values if values.dtype == pl.String else values.cast(pl.String)
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return pl.Series(values.astype(str), dtype=pl.String)
    if isinstance(values, np.ndarray):
        return pl.Series(values, dtype=pl.String)
    return pl.Series(list(values), dtype=pl.String)


def _check_columns(names: Sequence[str]) -> None:
    missing = [c for c in ("buyer_id", "event_type", "ts") if c not in names]
    if missing:
        raise ValueError(
            f"events: missing required column(s) {missing}; present: {list(names)}. "
            "Load the table through recsys.data so it follows the data contract."
        )


def _raise_bad_event_types(
    events: pl.LazyFrame, types: pl.Expr, n_bad: int, wmap: dict[str, Any]
) -> None:
    values = (
        events.select(types.alias("event_type"))
        .filter(~pl.col("event_type").is_in(list(wmap)) | pl.col("event_type").is_null())
        .unique(maintain_order=True)
        .head(5)
        .collect()["event_type"]
        .to_list()
    )
    raise ValueError(
        f"events.event_type: {n_bad} row(s) have a type outside the contract "
        f"{sorted(wmap)}, e.g. {values}"
    )


OfferScope = Literal["items", "store", "platform", "none"]


@dataclass(frozen=True)
class OfferItems:
    """The items each offer applies to: a CSR scope x item membership matrix.

    An offer listed in `offer_items` applies to those items (scope ``items``). An offer
    without rows there applies to its whole store (``store``: every item of its seller) or,
    with a null seller, to the whole platform (``platform``: every indexed item) -- as the
    data contract says. When the items/offers tables are not given, such an offer has no
    items (``none``) and models report it as not scorable.

    The matrix has one row per distinct scope, not per offer: each item-scoped offer's
    own row, one row per seller shared by all its store-wide offers, one for the platform.
    A thousand store-wide coupons of a 92,000-item grocer are one row, not 92 million
    cells. `rows` maps each offer to its row (`row_of`).
    """

    matrix: sp.csr_matrix
    """float32 0/1, shape (number of scopes, len(item_index))."""
    rows: np.ndarray
    """int64, per offer of `offer_index`: its row of `matrix`."""
    offer_index: IdIndex
    item_index: IdIndex
    scope: np.ndarray
    """One of ``items``, ``store``, ``platform``, ``none`` per offer (object array)."""
    n_unknown_items: int
    """`offer_items` rows whose item is not in `item_index` (dropped)."""
    n_unknown_offers: int
    """`offer_items` rows whose offer is not in the `offers` table (dropped)."""

    def row_of(self, offer_codes: np.ndarray) -> np.ndarray:
        """The matrix row of each offer code; -1 for -1 (an unknown offer)."""
        codes = np.asarray(offer_codes, dtype=np.int64)
        return np.where(codes >= 0, self.rows[np.maximum(codes, 0)], -1)

    def offer_matrix(self) -> sp.csr_matrix:
        """The offer x item membership (one row per offer): for small catalogs and tests."""
        return self.matrix[self.rows]


def build_offer_items(
    offer_items: pl.DataFrame | None,
    item_index: IdIndex,
    *,
    offers: pl.DataFrame | None = None,
    items: pl.DataFrame | None = None,
) -> OfferItems:
    """Build the scope x item membership matrix, expanding store- and platform-wide offers.

    Parameters
    ----------
    offer_items
        Contract `offer_items` (`offer_id`, `item_id`); None when the table is missing.
    item_index
        The item columns (normally a fitted model's `item_index_`).
    offers
        Contract `offers` (`offer_id`, optional `seller_id`): fixes the offer rows and, with
        `items`, lets offers without listed items be expanded. None: the offers of
        `offer_items`, sorted.
    items
        Contract `items` (`item_id`, `seller_id`) for the store-wide expansion.

    Cost: the matrix holds the `offer_items` rows plus each seller's items once (for the
    sellers with a store-wide offer) plus every item once (with a platform-wide offer):
    at most OI + 2 I cells, however many store- or platform-wide offers there are.
    """
    if offer_items is None:
        offer_items = pl.DataFrame(schema={"offer_id": pl.String, "item_id": pl.String})
    if offers is not None:
        offer_index = IdIndex(offers["offer_id"])
    else:
        offer_index = IdIndex.from_values(offer_items["offer_id"])
    n_offers, n_items = len(offer_index), len(item_index)

    rows = offer_index.codes(offer_items["offer_id"])
    cols = item_index.codes(offer_items["item_id"])
    n_unknown_items = int((cols < 0).sum())
    n_unknown_offers = int((rows < 0).sum())
    if n_unknown_items or n_unknown_offers:
        log.info(
            "offer_items: dropped %d row(s) with an unknown item, %d with an unknown offer",
            n_unknown_items,
            n_unknown_offers,
        )
    ok = (rows >= 0) & (cols >= 0)
    scope = np.full(n_offers, "none", dtype=object)
    listed = np.zeros(n_offers, dtype=bool)
    listed[rows[rows >= 0]] = True
    scope[listed] = "items"
    # Each listed offer its own row, in offer order.
    offer_row = np.full(n_offers, -1, dtype=np.int64)
    offer_row[listed] = np.arange(int(listed.sum()))
    n_rows = int(listed.sum())
    rows_parts, cols_parts = [offer_row[rows[ok]]], [cols[ok]]

    if offers is not None and items is not None:
        sellers = (
            offers["seller_id"].cast(pl.String)
            if "seller_id" in offers.columns
            else pl.Series([None] * n_offers, dtype=pl.String)
        )
        unlisted = ~listed
        platform = unlisted & sellers.is_null().to_numpy()
        store = unlisted & ~platform
        # Store-wide: one row per seller, every indexed item of that seller.
        store_sellers = sellers.filter(pl.Series(store)).unique().sort()
        seller_rows = pl.DataFrame(
            {
                "seller_id": store_sellers,
                "row": np.arange(n_rows, n_rows + len(store_sellers), dtype=np.int64),
            }
        )
        n_rows += len(store_sellers)
        offer_row[store] = (
            pl.DataFrame({"seller_id": sellers.filter(pl.Series(store))})
            .join(seller_rows, on="seller_id", how="left", maintain_order="left")["row"]
            .to_numpy()
        )
        catalog = items.select(
            pl.col("seller_id").cast(pl.String), pl.col("item_id").cast(pl.String)
        ).with_columns(pl.Series("col", item_index.codes(items["item_id"])))
        expanded = seller_rows.join(catalog.filter(pl.col("col") >= 0), on="seller_id")
        rows_parts.append(expanded["row"].to_numpy().astype(np.int64))
        cols_parts.append(expanded["col"].to_numpy().astype(np.int64))
        # Platform-wide: one row of every indexed item.
        if platform.any():
            offer_row[platform] = n_rows
            rows_parts.append(np.full(n_items, n_rows, dtype=np.int64))
            cols_parts.append(np.arange(n_items, dtype=np.int64))
            n_rows += 1
        scope[store] = "store"
        scope[platform] = "platform"
    if (offer_row < 0).any():  # offers with no items at all share an empty row
        offer_row[offer_row < 0] = n_rows
        n_rows += 1

    all_rows = np.concatenate(rows_parts)
    matrix = sp.csr_matrix(
        (np.ones(len(all_rows), dtype=np.float32), (all_rows, np.concatenate(cols_parts))),
        shape=(n_rows, n_items),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # membership, even if an offer_items row was repeated
    matrix.sort_indices()
    return OfferItems(
        matrix, offer_row, offer_index, item_index, scope, n_unknown_items, n_unknown_offers
    )
