"""Many callers' `/v1/rank` requests ranked in one `RankingService` call.

A call to `RankingService.rank` has a fixed cost that does not grow with its requests:
a worker-thread hop, the decision log's one append (a polars frame, an Arrow record, a
write-ahead fsync), the caps' bookkeeping. Ranked one at a time, concurrent requests pay
it each; ranked together, once. Two places batch:

- the Ray Serve replica, with `@serve.batch` (`serving.deployment`; its wait and size are
  the deployment's `user_config`);
- every other process that serves `serving.app.create_api` (bare uvicorn, tests), with
  `NaturalBatcher` below: no Ray, and no waiting.

Both rank a batch with `rank_batch`, so a bad request gets its own error and never fails
the others batched with it.

Pure Python and asyncio: no Ray, no web framework.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from serving.auth import Principal
from serving.metrics import Metrics
from serving.schemas import RankRequest, RankResponse

if TYPE_CHECKING:  # the service loads polars and the model: only where it runs
    from serving.service import RankingService

__all__ = ["NaturalBatcher", "rank_batch"]


def rank_batch(
    service: RankingService,
    requests: Sequence[RankRequest],
    principals: Sequence[Principal],
    metrics: Metrics | None = None,
) -> list[RankResponse | Exception]:
    """Each request's answer or its own error, in order, from one pass where possible.

    `RankingService.rank_each` answers the good requests together and gives the refused
    ones (another seller's offers, unknown offer ids) their errors. Should the pass fail
    as a whole (an unexpected error), every request is ranked alone, so only the one that
    causes it fails (counted as `rank_batch_fallbacks_total` in `metrics`). Costs one
    `rank_each` over the batch (its n requests), n `rank` calls when that fails.
    """
    try:
        return list(service.rank_each(requests, principals))
    except Exception:
        if metrics is not None:
            metrics.inc("rank_batch_fallbacks_total")
    answers: list[RankResponse | Exception] = []
    for request, principal in zip(requests, principals, strict=True):
        try:
            answers.append(service.rank([request], [principal])[0])
        except Exception as exc:
            answers.append(exc)
    return answers


_Item = tuple[RankRequest, Principal, "asyncio.Future[RankResponse]"]


class NaturalBatcher:
    """Rank concurrent requests together, without waiting for a batch to fill.

    A request that arrives while no batch is being ranked starts one at once, alone; the
    requests that arrive meanwhile wait and form the next batch (up to `max_batch_size`).
    An idle server answers as fast as ranking one request; a busy one pays a call's fixed
    cost once per batch, and the batch grows with the load (group commit, for ranking).

    Parameters
    ----------
    service
        The service to rank with, read when a batch starts (so a model swap takes effect
        at the next batch); it may raise (e.g. not loaded yet): every request of that
        batch gets the error.
    max_batch_size
        The most requests ranked in one call.
    metrics
        Where each batch is counted (`Metrics.count_batch`), read when a batch starts.

    One per event loop: the state is the loop's (asyncio, one thread); a batcher called
    from another loop (a test client's new one) starts afresh.
    """

    def __init__(
        self,
        service: Callable[[], RankingService],
        max_batch_size: int = 32,
        metrics: Callable[[], Metrics] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1 (got {max_batch_size})")
        self._service = service
        self.max_batch_size = max_batch_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[_Item] = []
        self._draining = False
        self._task: asyncio.Task[None] | None = None
        self._metrics = metrics

    async def rank(
        self, requests: list[RankRequest], principals: list[Principal]
    ) -> list[RankResponse]:
        """The answers of `requests` (each joins the batches as one request); the first
        error among them is raised, as the app's direct path does (`serving.app.Ranker`)."""
        return list(
            await asyncio.gather(
                *(self.submit(r, p) for r, p in zip(requests, principals, strict=True))
            )
        )

    async def submit(self, request: RankRequest, principal: Principal) -> RankResponse:
        """The answer to one request, ranked with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop: nothing of the old one can run here
            self._loop, self._waiting, self._draining, self._task = loop, [], False, None
        future: asyncio.Future[RankResponse] = loop.create_future()
        self._waiting.append((request, principal, future))
        if not self._draining:
            self._draining = True
            self._task = loop.create_task(self._drain())  # referenced: not collected early
        return await future

    async def _drain(self) -> None:
        """Rank batches until nothing waits (the one task doing so on this loop)."""
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch_size]
                del self._waiting[: self.max_batch_size]
                await self._rank(batch)
        finally:
            self._draining = False

    async def _rank(self, batch: list[_Item]) -> None:
        try:
            metrics = None if self._metrics is None else self._metrics()
            if metrics is not None:
                metrics.count_batch(len(batch))
            service = self._service()
            answers = await asyncio.to_thread(
                rank_batch, service, [r for r, _, _ in batch], [p for _, p, _ in batch], metrics
            )
        except Exception as exc:  # no service (still loading): each request gets why
            answers = [exc] * len(batch)
        for (_, _, future), answer in zip(batch, answers, strict=True):
            if future.done():  # its caller went away (client disconnected)
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
