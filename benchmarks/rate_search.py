"""The highest request rate an app sustains with p99 latency within a limit.

The offered rate doubles from `start` until a step misses the limit, then `refine`
bisection steps between the last rate that met it and the first that missed; when the
start itself misses, the rate halves first (down to a quarter of the start, then the
answer is 0). The last doubling is clamped to `max_rate`; an app that meets the limit
there is `capped` (its answer is a lower bound, not its ceiling). Until 2026-12-05 a
doubling past the cap simply ended the search, so a no-op app that met 2,560 req/s was
reported at 2,560 although it met 5,000. A step that misses is run once more and judged
by the second run: a shared machine has hiccups, and one would otherwise end the search
early.

`RateSearch` is the search as a state machine (`next_rate`, then `record` the window run
at it), so that several apps' searches can be stepped in turn, each step of one app
next to the same step of the others.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.loadgen import P99_TARGET_MS, Load

MAX_RATE = 20_000.0
"""Above what one load-generator process can offer on a small machine (it falls behind
its schedule from about 6,000 req/s on 2 cores), so a search ends on a miss, not here."""


class RateSearch:
    """One app's search (module docstring); `best` once `next_rate()` is None."""

    def __init__(
        self,
        start: float,
        refine: int = 3,
        p99_ms: float = P99_TARGET_MS,
        max_rate: float = MAX_RATE,
    ) -> None:
        if not 0 < start <= max_rate:
            raise ValueError(f"the start rate must be in (0, {max_rate:g}] (got {start})")
        self.start, self.refine, self.p99_ms, self.max_rate = start, refine, p99_ms, max_rate
        self.steps: list[Load] = []
        self.best = 0.0
        self._rate: float | None = start
        self._bad = 0.0
        self._phase = "down"
        self._refined = 0
        self._retried = False

    @property
    def capped(self) -> bool:
        """Whether the limit was met at `max_rate`: `best` is then only a lower bound."""
        return self.best >= self.max_rate

    def next_rate(self) -> float | None:
        """The rate to run next; None when the search is over."""
        return self._rate

    def record(self, load: Load) -> None:
        """The window just run at `next_rate()`."""
        rate = self._rate
        if rate is None:
            raise RuntimeError("the search is over: nothing to record")
        self.steps.append(load)
        ok = load.meets(self.p99_ms)
        if not ok and not self._retried:
            self._retried = True  # run the same rate once more
            return
        self._retried = False
        if ok:
            self.best = rate
        else:
            self._bad = rate
        if self._phase == "down":
            if ok:
                self._phase = "up"
                self._rate = self._bisect() if self._bad else self._double(rate)
            else:
                self._rate = rate / 2 if rate / 2 >= self.start / 4 else None
        elif self._phase == "up":
            self._rate = self._double(rate) if ok else self._bisect()
        else:
            self._refined += 1
            self._rate = self._bisect() if self._refined < self.refine else None

    def _double(self, rate: float) -> float | None:
        return min(2 * rate, self.max_rate) if rate < self.max_rate else None

    def _bisect(self) -> float | None:
        """The midpoint of the last rate that met and the first that missed (or done)."""
        self._phase = "refine"
        if self._refined >= self.refine:
            return None
        mid = round((self.best + self._bad) / 2, 1)
        return mid if self.best < mid < self._bad else None


def search_rate(
    run: Callable[[float], Load],
    start: float,
    refine: int = 3,
    p99_ms: float = P99_TARGET_MS,
    max_rate: float = MAX_RATE,
) -> RateSearch:
    """One app's search, run to the end (`best`, `steps`, `capped`)."""
    search = RateSearch(start, refine, p99_ms, max_rate)
    while (rate := search.next_rate()) is not None:
        search.record(run(rate))
    return search
