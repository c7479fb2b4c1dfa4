"""What the service has offered each buyer lately, so frequency caps hold across requests.

The policy caps offers per buyer (and per tool) within a window, given past exposures.
A batch job passes them in; the API learns them from its own decisions: every offer it
gives is remembered here, and the next request of that buyer is decided with them. A
replica seeds its history from the decision log at start, so a restart does not reset
the caps.

Kept per buyer: the latest `per_buyer` offers no older than `keep`, for at most
`max_buyers` buyers (least recently offered forgotten first). Replicas do not share
memory: with several, a buyer's caps hold per replica until the log is read again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from datetime import datetime, timedelta

import polars as pl

from recsys.policy.eligibility import as_utc

Offered = tuple[datetime, str, str | None]
"""(time, offer_id, tool) of one offer given to a buyer."""


class ExposureHistory:
    """Recent offers per buyer, thread-safe (see the module doc)."""

    def __init__(
        self,
        keep: timedelta = timedelta(days=30),
        per_buyer: int = 64,
        max_buyers: int = 1_000_000,
    ) -> None:
        if keep <= timedelta(0) or per_buyer < 1 or max_buyers < 1:
            raise ValueError(
                f"ExposureHistory needs keep > 0, per_buyer >= 1 and max_buyers >= 1 "
                f"(got {keep}, {per_buyer}, {max_buyers})"
            )
        self.keep = keep
        self.per_buyer = per_buyer
        self.max_buyers = max_buyers
        self._by_buyer: OrderedDict[str, deque[Offered]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Buyers with something remembered."""
        with self._lock:
            return len(self._by_buyer)

    def add(self, offers: Iterable[tuple[str, str, str | None, datetime]]) -> None:
        """Remember (buyer_id, offer_id, tool, ts) offers."""
        with self._lock:
            for buyer, offer, tool, ts in offers:
                kept = self._by_buyer.get(buyer)
                if kept is None:
                    kept = self._by_buyer[buyer] = deque(maxlen=self.per_buyer)
                else:
                    self._by_buyer.move_to_end(buyer)
                kept.append((as_utc(ts), offer, tool))
            while len(self._by_buyer) > self.max_buyers:
                self._by_buyer.popitem(last=False)

    def seed(self, exposures: pl.DataFrame, tools: dict[str, str], now: datetime) -> int:
        """Remember the offers of a decision log's `exposures` newer than `keep`; how many.

        `tools` maps offer ids to tools (offers the model does not know keep a null tool).
        """
        start = as_utc(now) - self.keep
        recent = exposures.filter(
            pl.col("offer_id").is_not_null() & (pl.col("ts") >= pl.lit(start))
        ).sort("ts")
        self.add(
            (buyer, offer, tools.get(offer), ts)
            for buyer, offer, ts in recent.select("buyer_id", "offer_id", "ts").iter_rows()
        )
        return recent.height

    def recent(self, buyer: str, since: datetime, until: datetime) -> list[tuple[str, str | None]]:
        """(offer_id, tool) of the offers given to `buyer` in ``[since, until)``, oldest
        first; offers older than `keep` before `until` are forgotten on the way."""
        start = as_utc(until) - self.keep
        with self._lock:
            kept = self._by_buyer.get(buyer)
            if not kept:
                return []
            while kept and kept[0][0] < start:
                kept.popleft()
            return [(offer, tool) for ts, offer, tool in kept if since <= ts < until]
