"""State a served model prepares once, so a request is a few lookups and array operations.

- :class:`OfferCatalog`: the model's offers indexed once, sorted by id (an offer's index
  is its id's order, the policy's tie-break): seller and tool codes, validity bounds in
  microseconds, and the offers valid at a time as an index array.
- :class:`Options`: candidate rows as arrays (an offer index and one float matrix),
  valued by :func:`recsys.policy.arrays.value_options` when scored: what an option is
  worth depends on the model and the policy config only, never on the request.
- :class:`OptionStore`: each buyer's options for the offers valid now, kept in one LRU
  (`cachetools`, sized in rows) keyed by buyer and set of valid offers; misses of a
  batch are scored by one vectorized `PromoRanker.candidates` call; `warm` fills it for
  known buyers at model load. A new champion gets a new service, hence a new store.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
from cachetools import LRUCache
from numpy.typing import NDArray

from recsys.policy.arrays import NO_TIME_END, NO_TIME_START
from recsys.policy.config import PolicyConfig
from recsys.policy.value import float_column, value_of

# Columns of `Options.num`.
P_REDEEM, UPLIFT, P_PURCHASE, MIN_SPEND, SCORE, VALUE_SE = range(6)
EXPECTED_VALUE, SPEND, REDEMPTION_COST, INCREMENTAL_P, CASE = range(6, 11)
N_COLUMNS = 11

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(ts: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (the catalog's time unit)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class OfferCatalog:
    """The served model's offers, indexed once (see the module doc).

    `offers` has ``offer_id``, ``seller_id`` (null = platform-wide), ``tool``,
    ``start_ts`` and ``end_ts`` (null = open).
    """

    def __init__(self, offers: pl.DataFrame) -> None:
        offers = offers.unique("offer_id", keep="first").sort("offer_id")
        self.ids: list[str] = offers["offer_id"].to_list()
        self.index: dict[str, int] = {o: i for i, o in enumerate(self.ids)}
        self.sellers: list[str | None] = offers["seller_id"].to_list()
        self.seller_codes: dict[str, int] = {
            s: i for i, s in enumerate(sorted({s for s in self.sellers if s is not None}))
        }
        self.seller_code = np.array(
            [self.seller_codes[s] if s is not None else -1 for s in self.sellers], dtype=np.int64
        )
        self.tools: list[str] = offers["tool"].to_list()
        self.tool_names: list[str] = sorted(set(self.tools))
        tool_index = {t: i for i, t in enumerate(self.tool_names)}
        self.tool_code = np.array([tool_index[t] for t in self.tools], dtype=np.int64)
        self.starts: list[datetime | None] = offers["start_ts"].to_list()
        self.ends: list[datetime | None] = offers["end_ts"].to_list()
        self.start_us = np.array(
            [micros(t) if t is not None else NO_TIME_START for t in self.starts], dtype=np.int64
        )
        self.end_us = np.array(
            [micros(t) if t is not None else NO_TIME_END for t in self.ends], dtype=np.int64
        )
        bounds = np.unique(np.concatenate([self.start_us, self.end_us]))
        self._bounds = bounds[(bounds != NO_TIME_START) & (bounds != NO_TIME_END)]
        self._valid_span: tuple[int, int, NDArray[np.int64], bytes] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def valid(self, now_us: int) -> NDArray[np.int64]:
        """Indices of the offers valid at `now_us` (start <= now < end). Cost: O(offers),
        or a comparison while no offer has started or ended since the last call."""
        return self.valid_set(now_us)[0]

    def valid_set(self, now_us: int) -> tuple[NDArray[np.int64], bytes]:
        """The valid offers' indices and their bytes (a key of the set). The set changes
        only at a validity bound, so it is kept for the span between two bounds."""
        kept = self._valid_span
        if kept is not None and kept[0] <= now_us < kept[1]:
            return kept[2], kept[3]
        valid = np.flatnonzero((self.start_us <= now_us) & (now_us < self.end_us))
        at = int(np.searchsorted(self._bounds, now_us, side="right"))
        low = int(self._bounds[at - 1]) if at > 0 else NO_TIME_START
        high = int(self._bounds[at]) if at < len(self._bounds) else NO_TIME_END
        self._valid_span = (low, high, valid, valid.tobytes())
        return valid, self._valid_span[3]

    def scope_code(self, seller: str | None) -> int:
        """The code of a request's seller scope: -1 = none, -2 = a seller without offers."""
        if seller is None:
            return -1
        return self.seller_codes.get(seller, -2)

    def tool_of(self) -> dict[str, str]:
        """Offer id -> tool."""
        return dict(zip(self.ids, self.tools, strict=True))


@dataclass(frozen=True)
class Options:
    """Candidate rows as arrays: ``offer`` (catalog index) and ``num`` (n x N_COLUMNS)."""

    offer: NDArray[np.int64]
    num: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.offer)

    def take(self, rows: NDArray[np.int64] | NDArray[np.bool_]) -> Options:
        """The options at `rows` (indices or a mask)."""
        return Options(self.offer[rows], self.num[rows])

    @staticmethod
    def concat(parts: Sequence[Options]) -> Options:
        """All of `parts`' rows, in order."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return NO_OPTIONS
        return Options(
            np.concatenate([p.offer for p in parts]), np.concatenate([p.num for p in parts])
        )


NO_OPTIONS = Options(np.empty(0, dtype=np.int64), np.empty((0, N_COLUMNS)))


def options_of(
    candidates: pl.DataFrame, catalog: OfferCatalog, config: PolicyConfig
) -> tuple[list[str], Options]:
    """The buyer of each candidate row and the rows as valued options (one pass).

    Rows of offers the catalog does not know are dropped (the scorer never makes them).
    Cost: O(rows) array work plus one polars lookup of the offer ids.
    """
    offer = (
        candidates["offer_id"]
        .replace_strict(catalog.ids, range(len(catalog)), default=-1, return_dtype=pl.Int64)
        .to_numpy()
    )
    known = offer >= 0
    if not known.all():
        candidates, offer = candidates.filter(pl.Series(known)), offer[known]
    valued = value_of(candidates, config)
    num = np.empty((candidates.height, N_COLUMNS))
    num[:, P_REDEEM] = float_column(candidates, "p_redeem")
    num[:, UPLIFT] = float_column(candidates, "uplift")
    num[:, P_PURCHASE] = float_column(candidates, "p_purchase")
    num[:, MIN_SPEND] = float_column(candidates, "min_spend")
    num[:, SCORE] = valued.score
    num[:, VALUE_SE] = float_column(candidates, "value_se")
    num[:, EXPECTED_VALUE] = valued.expected_value
    num[:, SPEND] = valued.spend
    num[:, REDEMPTION_COST] = valued.redemption_cost
    num[:, INCREMENTAL_P] = valued.incremental_p
    num[:, CASE] = valued.case
    return candidates["buyer_id"].to_list(), Options(offer.astype(np.int64), num)


def split_by_buyer(buyers: list[str], options: Options) -> dict[str, Options]:
    """Each buyer's rows (copies, in offer order). Cost: O(n log n)."""
    if not buyers:
        return {}
    names, code = np.unique(np.asarray(buyers, dtype=object), return_inverse=True)
    order = np.lexsort((options.offer, code))
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(code[order])) + 1, [len(order)]])
    return {
        str(names[code[order[a]]]): options.take(order[a:b].copy())
        for a, b in itertools.pairwise(bounds)
    }


Key = tuple[str, bytes]
"""(buyer, the valid offers' index bytes): an offer starting or ending makes a new key."""


class OptionStore:
    """Each buyer's valued options for the offers valid now (see the module doc).

    Parameters
    ----------
    score
        The model: candidate rows for a (buyer_id, offer_id) frame.
    catalog, config
        The offers and the policy that values them.
    max_rows
        Rows kept across all buyers (0: every call scores).
    """

    def __init__(
        self,
        score: Callable[[pl.DataFrame], pl.DataFrame],
        catalog: OfferCatalog,
        config: PolicyConfig,
        max_rows: int,
    ) -> None:
        if max_rows < 0:
            raise ValueError(f"max_rows must be >= 0 (got {max_rows})")
        self._score = score
        self.catalog = catalog
        self.config = config
        self.max_rows = max_rows
        self._kept: LRUCache[Key, Options] = LRUCache(maxsize=max(max_rows, 1), getsizeof=len)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def rows(self) -> int:
        """Rows currently kept."""
        with self._lock:
            return int(self._kept.currsize)

    def score_pairs(self, buyers: Sequence[str], offers: Sequence[str]) -> dict[str, Options]:
        """Score (buyer, offer) pairs (one model call) and value them, per buyer."""
        pairs = pl.DataFrame(
            {"buyer_id": list(buyers), "offer_id": list(offers)},
            schema={"buyer_id": pl.String, "offer_id": pl.String},
        ).unique(maintain_order=True)
        if pairs.height == 0:
            return {}
        who, options = options_of(self._score(pairs), self.catalog, self.config)
        return split_by_buyer(who, options)

    def for_buyers(
        self, buyers: Sequence[str], valid: NDArray[np.int64], tag: bytes | None = None
    ) -> dict[str, Options]:
        """Each buyer's options for the `valid` offers (catalog indices; `tag`: their
        bytes, when known), misses scored together in one model call. Cost: a lookup per
        kept buyer."""
        tag = valid.tobytes() if tag is None else tag
        wanted = list(dict.fromkeys(buyers))
        found: dict[str, Options] = {}
        with self._lock:
            for buyer in wanted:
                kept = self._kept.get((buyer, tag))
                if kept is not None:
                    found[buyer] = kept
            self.hits += len(found)
            self.misses += len(wanted) - len(found)
        missing = [b for b in wanted if b not in found]
        if missing:
            found.update(self._fill(missing, valid, tag))
        return found

    def warm(
        self, buyers: Sequence[str], valid: NDArray[np.int64], chunk_rows: int = 200_000
    ) -> int:
        """Score `buyers` against the `valid` offers ahead of requests, in chunks, until the
        store is full; how many buyers were scored."""
        if len(valid) == 0 or self.max_rows == 0:
            return 0
        room = max(self.max_rows - self.rows, 0) // len(valid)
        todo = list(buyers)[:room]
        step = max(chunk_rows // len(valid), 1)
        tag = valid.tobytes()
        for at in range(0, len(todo), step):
            self._fill(todo[at : at + step], valid, tag)
        return len(todo)

    def _fill(self, buyers: list[str], valid: NDArray[np.int64], tag: bytes) -> dict[str, Options]:
        ids = [self.catalog.ids[i] for i in valid]
        scored = self.score_pairs([b for b in buyers for _ in ids], ids * len(buyers))
        out = {b: scored.get(b, NO_OPTIONS) for b in buyers}
        if self.max_rows:
            with self._lock:
                for buyer, options in out.items():
                    if len(options) <= self.max_rows:
                        self._kept[buyer, tag] = options
        return out
