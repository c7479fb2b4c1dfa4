"""`serving.batching`: concurrent `/v1/rank` requests ranked together, each answered with
its own answer or its own error.

A stand-in service records the batches it is given; its first batch can be held in its
worker thread, so the requests sent meanwhile are known to be waiting.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from serving.app import NotReadyError
from serving.auth import ForbiddenError, Principal
from serving.batching import NaturalBatcher, rank_batch
from serving.metrics import Metrics
from serving.schemas import RankRequest

ADMIN = Principal(seller_id=None, admin=True)


class RecordingService:
    """Answers "answer for <buyer>"; buyer "bad" is refused, buyer "boom" breaks a batch.

    `hold`: the first batch waits in its thread until it is set.
    """

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.hold = hold

    def rank_each(
        self, requests: Sequence[RankRequest], principals: Sequence[Principal]
    ) -> list[str | Exception]:
        buyers = [r.buyer_id for r in requests]
        self.batches.append(buyers)
        if self.hold is not None and len(self.batches) == 1:
            assert self.hold.wait(5), "the test never released the first batch"
        if "boom" in buyers:
            raise RuntimeError("a bug one request triggers")
        return [ForbiddenError("not yours") if b == "bad" else f"answer for {b}" for b in buyers]

    def rank(self, requests: Sequence[RankRequest], principals: Sequence[Principal]) -> list[str]:
        (answer,) = self.rank_each(requests, principals)
        if isinstance(answer, Exception):
            raise answer
        return [answer]


def request(buyer: str) -> RankRequest:
    return RankRequest(buyer_id=buyer)


async def started(batcher: NaturalBatcher, buyers: Sequence[str]) -> list[asyncio.Task[object]]:
    """Submit each buyer's request as its own task and let them all reach the queue."""
    tasks = [asyncio.create_task(batcher.submit(request(b), ADMIN)) for b in buyers]
    await asyncio.sleep(0)
    return tasks  # type: ignore[return-value]


async def behind_a_held_batch(
    batcher: NaturalBatcher, hold: threading.Event, buyers: Sequence[str]
) -> list[object]:
    """Rank buyer "first" alone and hold it in its thread; meanwhile send `buyers`; then
    release it: the answers to `buyers`."""
    first = await started(batcher, ["first"])
    await asyncio.sleep(0.05)  # "first" is being ranked, alone: nothing waited for it
    tasks = await started(batcher, buyers)
    await asyncio.sleep(0.05)
    hold.set()
    answers = await asyncio.gather(*first, *tasks, return_exceptions=True)
    assert answers[0] == "answer for first"
    return list(answers[1:])


def test_requests_that_arrive_during_a_batch_are_ranked_together_and_answered_in_order() -> None:
    hold = threading.Event()
    service = RecordingService(hold)
    metrics = Metrics()
    batcher = NaturalBatcher(lambda: service, max_batch_size=32, metrics=lambda: metrics)  # type: ignore[arg-type,return-value]

    buyers = [f"b{i}" for i in range(5)]
    answers = asyncio.run(behind_a_held_batch(batcher, hold, buyers))
    assert service.batches == [["first"], buyers]
    assert answers == [f"answer for {b}" for b in buyers]
    text = metrics.render()
    assert "recsys_rank_batches_total 2\n" in text
    assert "recsys_rank_batched_requests_total 6\n" in text


def test_a_batch_holds_at_most_max_batch_size_requests() -> None:
    hold = threading.Event()
    service = RecordingService(hold)
    batcher = NaturalBatcher(lambda: service, max_batch_size=2)  # type: ignore[arg-type,return-value]

    answers = asyncio.run(behind_a_held_batch(batcher, hold, ["a", "b", "c", "d", "e"]))
    assert service.batches == [["first"], ["a", "b"], ["c", "d"], ["e"]]
    assert answers == [f"answer for {b}" for b in "abcde"]


def test_a_refused_or_breaking_request_fails_alone() -> None:
    hold = threading.Event()
    service = RecordingService(hold)
    metrics = Metrics()
    batcher = NaturalBatcher(lambda: service, metrics=lambda: metrics)  # type: ignore[arg-type,return-value]

    a, bad, boom, d = asyncio.run(behind_a_held_batch(batcher, hold, ["a", "bad", "boom", "d"]))
    assert (a, d) == ("answer for a", "answer for d")
    assert isinstance(bad, ForbiddenError)
    assert isinstance(boom, RuntimeError)
    # The batch with "boom" failed as a whole, then each of its requests was ranked alone.
    batch = ["a", "bad", "boom", "d"]
    assert service.batches == [["first"], batch, *([b] for b in batch)]
    assert "recsys_rank_batch_fallbacks_total 1\n" in metrics.render()


def test_without_a_service_every_request_gets_the_reason() -> None:
    def not_loaded() -> RecordingService:
        raise NotReadyError("the model is still loading")

    batcher = NaturalBatcher(not_loaded)  # type: ignore[arg-type]

    async def traffic() -> list[object]:
        tasks = await started(batcher, ["a", "b"])
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    answers = asyncio.run(traffic())
    assert all(isinstance(a, NotReadyError) for a in answers)


def test_a_caller_that_goes_away_does_not_stop_the_others() -> None:
    hold = threading.Event()
    service = RecordingService(hold)
    batcher = NaturalBatcher(lambda: service)  # type: ignore[arg-type,return-value]

    async def traffic() -> list[object]:
        first = await started(batcher, ["first"])
        await asyncio.sleep(0.05)
        tasks = await started(batcher, ["a", "gone", "c"])
        tasks[1].cancel()  # a client that disconnected while waiting
        hold.set()
        return list(await asyncio.gather(*first, *tasks, return_exceptions=True))[1:]

    a, gone, c = asyncio.run(traffic())
    assert (a, c) == ("answer for a", "answer for c")
    assert isinstance(gone, asyncio.CancelledError)


def test_rank_raises_the_first_error_of_its_requests_and_a_new_loop_starts_afresh() -> None:
    service = RecordingService()
    batcher = NaturalBatcher(lambda: service)  # type: ignore[arg-type,return-value]
    assert asyncio.run(batcher.rank([request("a")], [ADMIN])) == ["answer for a"]
    with pytest.raises(ForbiddenError):  # a second loop: the first one's state is gone
        asyncio.run(batcher.rank([request("a"), request("bad")], [ADMIN, ADMIN]))


def test_rank_batch_answers_each_request_in_order() -> None:
    service = RecordingService()
    answers = rank_batch(service, [request("a"), request("bad")], [ADMIN, ADMIN])  # type: ignore[arg-type]
    assert answers[0] == "answer for a"
    assert isinstance(answers[1], ForbiddenError)


def test_max_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        NaturalBatcher(lambda: RecordingService(), max_batch_size=0)  # type: ignore[arg-type,return-value]
