"""Model outputs per buyer, computed once and reused by later requests.

What `PromoRanker.candidates` returns for a (buyer, offer) pair depends on the fitted
models and feature store only, never on the request or the clock, so a served model can
keep it. Scoring is most of what one request costs (feature joins and three boosted-tree
predictions, ~40 ms for one buyer), while reusing a kept answer costs a dictionary lookup.

Entries are keyed by (buyer, seller scope, offers valid now): each holds the buyer's rows
for every offer of that scope valid at the time, so a request's default offer list is
one entry. A seller-scoped entry is cut from the buyer's all-sellers entry when that is
kept; `warm` fills all-sellers entries for known buyers before traffic arrives. An
offer starting or ending makes a new key (old ones age out). Least recently used
entries go first once `max_rows` rows are kept. A cache belongs to one model version: a
new champion gets a new service, hence a new cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import polars as pl

Scope = str | None
"""A seller id, or None for every seller's offers (an admin request without seller_id)."""


class ScoreCache:
    """LRU of per-buyer candidate frames, filled by one vectorized call per batch of misses.

    Parameters
    ----------
    score
        The model: candidate rows for a (buyer_id, offer_id) frame, in any order.
    max_rows
        Rows kept across all entries (0 disables the cache: every call scores).
    """

    def __init__(self, score: Callable[[pl.DataFrame], pl.DataFrame], max_rows: int) -> None:
        if max_rows < 0:
            raise ValueError(f"max_rows must be >= 0 (got {max_rows})")
        self._score = score
        self.max_rows = max_rows
        self._entries: OrderedDict[tuple[str, Scope, tuple[str, ...]], pl.DataFrame] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def rows(self) -> int:
        """Rows currently kept."""
        with self._lock:
            return self._rows

    def candidates(
        self, buyers: Sequence[tuple[str, Scope]], offers_of: dict[Scope, tuple[str, ...]]
    ) -> pl.DataFrame:
        """Candidate rows of every (buyer, scope) asked for, against `offers_of[scope]`.

        Missing entries are scored together in one call. Duplicated (buyer, scope) pairs
        are answered once; the same buyer under two scopes can repeat a (buyer, offer)
        row, which callers join on, so that is harmless.
        """
        wanted = list(dict.fromkeys((b, s, offers_of[s]) for b, s in buyers))
        found: dict[tuple[str, Scope, tuple[str, ...]], pl.DataFrame] = {}
        with self._lock:
            for key in wanted:
                frame = self._entries.get(key)
                if frame is not None:
                    self._entries.move_to_end(key)
                    found[key] = frame
            self.hits += len(found)
            self.misses += len(wanted) - len(found)
        missing = [key for key in wanted if key not in found]
        if missing and None in offers_of:
            derived = self._derive(missing, offers_of[None])
            found.update(derived)
            missing = [key for key in missing if key not in derived]
        if missing:
            found.update(self._fill(missing))
        frames = [found[key] for key in wanted if found[key].height]
        return pl.concat(frames, how="vertical") if frames else self._score(_no_pairs())

    def warm(
        self, buyers: Sequence[str], offers: tuple[str, ...], chunk_rows: int = 200_000
    ) -> int:
        """Score `buyers` against every offer in `offers` (the all-sellers scope) ahead of
        requests, in chunks, until the cache is full; how many buyers were scored.

        A seller-scoped request of a warmed buyer is then answered from the warm entry.
        """
        if not offers or self.max_rows == 0:
            return 0
        room = max(self.max_rows - self.rows, 0) // len(offers)
        todo = list(buyers)[:room]
        step = max(chunk_rows // len(offers), 1)
        for at in range(0, len(todo), step):
            self._fill([(b, None, offers) for b in todo[at : at + step]])
        return len(todo)

    def _derive(
        self, keys: list[tuple[str, Scope, tuple[str, ...]]], everything: tuple[str, ...]
    ) -> dict[tuple[str, Scope, tuple[str, ...]], pl.DataFrame]:
        """Scoped entries cut from the buyer's all-sellers entry, where it is kept."""
        with self._lock:
            wholes = {
                key: self._entries.get((key[0], None, everything))
                for key in keys
                if key[1] is not None
            }
        out = {
            key: whole.filter(pl.col("offer_id").is_in(key[2]))
            for key, whole in wholes.items()
            if whole is not None
        }
        self._keep(out)
        return out

    def _fill(
        self, keys: list[tuple[str, Scope, tuple[str, ...]]]
    ) -> dict[tuple[str, Scope, tuple[str, ...]], pl.DataFrame]:
        pairs = pl.DataFrame(
            {
                "buyer_id": [b for b, _, offers in keys for _ in offers],
                "offer_id": [o for _, _, offers in keys for o in offers],
            },
            schema={"buyer_id": pl.String, "offer_id": pl.String},
        ).unique(maintain_order=True)
        scored = self._score(pairs)
        by_buyer = {
            str(buyer): frame
            for (buyer,), frame in scored.partition_by("buyer_id", as_dict=True).items()
        }
        empty = scored.clear()
        out: dict[tuple[str, Scope, tuple[str, ...]], pl.DataFrame] = {}
        for key in keys:
            buyer, _, offers = key
            rows = by_buyer.get(buyer, empty)
            if rows.height != len(offers):  # the buyer is also asked under another scope
                rows = rows.filter(pl.col("offer_id").is_in(offers))
            out[key] = rows
        self._keep(out)
        return out

    def _keep(self, entries: dict[tuple[str, Scope, tuple[str, ...]], pl.DataFrame]) -> None:
        if self.max_rows == 0:
            return
        with self._lock:
            for key, frame in entries.items():
                old = self._entries.pop(key, None)
                if old is not None:
                    self._rows -= old.height
                self._entries[key] = frame
                self._rows += frame.height
            while self._rows > self.max_rows and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._rows -= dropped.height


def _no_pairs() -> pl.DataFrame:
    return pl.DataFrame(schema={"buyer_id": pl.String, "offer_id": pl.String})
