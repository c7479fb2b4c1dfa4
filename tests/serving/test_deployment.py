"""The Ray Serve deployment class (`serving.deployment.RankerDeployment`) without a Ray
cluster: `reconfigure` sets the batching of `/v1/rank` on a replica that is already
batching, and `app_builder` hands the serve config's batching to Serve as `user_config`.

A replica is made from the class Serve runs (`RankerDeployment.func_or_class`) without
its constructor (which loads a model): only the attributes the batched path reads are
set. The batch queue of `@serve.batch` belongs to the method, so the fixture puts the
decorator's settings back and drops the queue (bound to the test's event loop) after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from recsys.config import ConfigError
from serving.app import ServiceHolder, app_builder
from serving.auth import Principal
from serving.config import BatchingConfig
from serving.deployment import RankerDeployment
from serving.metrics import Metrics
from serving.schemas import RankRequest

ADMIN = Principal(seller_id=None, admin=True)


class CountingService:
    """Stands in for `RankingService`: remembers the size of every batch it ranks."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def rank_each(self, requests: list[RankRequest], principals: list[Principal]) -> list[str]:
        self.batches.append(len(requests))
        return [f"answer for {r.buyer_id}" for r in requests]


@pytest.fixture
def replica(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # The batch queue compares its size with the replica's `max_ongoing_requests`.
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=16))
    monkeypatch.setattr("ray.serve.get_replica_context", lambda: context)
    cls = RankerDeployment.func_or_class
    batched = cls.rank_batched
    before = (batched._get_max_batch_size(), batched._get_batch_wait_timeout_s())
    replica = object.__new__(cls)
    replica.holder = ServiceHolder(service=CountingService())  # type: ignore[arg-type]
    replica.metrics = Metrics()
    yield replica
    batched.set_max_batch_size(before[0])
    batched.set_batch_wait_timeout_s(before[1])
    batched.set_max_batch_size.__self__._queue = None  # the lazy queue: made anew on use
    # Serve awaits a replica's destructor (async under `serve.ingress`); this one was
    # never constructed and has nothing to close.
    replica.__class__ = _NeverConstructed


class _NeverConstructed:
    """What a test replica becomes when done: an object without a destructor."""


def test_reconfigure_sets_the_batch_size_and_wait_of_a_replica_already_batching(
    replica: Any,
) -> None:
    service: CountingService = replica.holder.service

    async def traffic() -> tuple[list[Any], list[Any]]:
        replica.reconfigure({"max_batch_size": 2, "batch_wait_timeout_s": 0.05})
        first = await replica.rank_each(
            [RankRequest(buyer_id=f"b{i}") for i in range(5)], [ADMIN] * 5
        )
        # The queue exists now: a live replica's next batches follow the new settings.
        replica.reconfigure({"max_batch_size": 5, "batch_wait_timeout_s": 0.5})
        second = await replica.rank_each(
            [RankRequest(buyer_id=f"c{i}") for i in range(5)], [ADMIN] * 5
        )
        return first, second

    first, second = asyncio.run(traffic())
    assert service.batches == [2, 2, 1, 5]
    assert first == [f"answer for b{i}" for i in range(5)]  # in order, one each
    assert second == [f"answer for c{i}" for i in range(5)]
    assert replica.batching() == BatchingConfig(max_batch_size=5, batch_wait_timeout_s=0.5)


def test_reconfigure_refuses_an_unknown_key_or_a_value_out_of_range(replica: Any) -> None:
    before = replica.batching()
    with pytest.raises(ConfigError, match="max_batch"):
        replica.reconfigure({"max_batch": 8})
    with pytest.raises(ConfigError, match="max_batch_size"):
        replica.reconfigure({"max_batch_size": 0})
    assert replica.batching() == before  # nothing half applied


def test_the_serve_configs_batching_is_the_deployments_user_config() -> None:
    batching = {"max_batch_size": 48, "batch_wait_timeout_s": 0.02}
    app = app_builder({"model_uri": "models:/promo-ranker@champion", "batching": batching})
    deployment = app._bound_deployment
    assert deployment.name == "ranker"
    assert deployment.user_config == batching
    assert deployment.max_ongoing_requests == 96  # room to fill two batches
    (config_data,) = deployment.init_args
    assert config_data["batching"] == batching
