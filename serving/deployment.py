"""The Ray Serve deployment: one replica's state around a `serving.service.RankingService`.

`RankerDeployment` is a module-level deployment class, the idiom of Ray Serve's batching
guide: its constructor takes the serve config (as plain data), `reconfigure` applies the
batching settings of `/v1/rank` (`BatchingConfig`, the deployment's `user_config`), so they
change on live replicas without a restart, and the replica builds its own FastAPI app
(`serving.app.create_api`) around its own state once constructed. `serving.app.app_builder`
sizes and binds it; this module is the only one that needs Ray at import time, and
`serving.app` imports it only there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any, Protocol, cast

from fastapi import FastAPI
from ray import serve
from ray.serve import Application, Deployment

from serving.app import (
    GRACEFUL_STOP_S,
    MAX_RETRY_SECONDS,
    ApiState,
    NotReadyError,
    ServiceHolder,
    create_api,
    redacted,
    replica_clock,
    service_for,
    settle_heap,
)
from serving.auth import KeyRing, Principal
from serving.batching import rank_batch
from serving.config import BatchingConfig, ServeConfig
from serving.decision_index import DecisionIndex
from serving.decision_log import DecisionLog
from serving.history import ExposureHistory
from serving.incrementality import IncrementalityBoard
from serving.metrics import Metrics
from serving.model_source import ModelSource
from serving.outcomes import OutcomeRecorder
from serving.schemas import RankRequest, RankResponse
from serving.sessions import SessionStore

__all__ = ["DEPLOYMENT_NAME", "RankerDeployment", "ranker_application"]

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "ranker"
"""The deployment's name (replicas are titled `ray::ServeReplica:<app>:ranker`)."""

_DEFAULT_BATCHING = BatchingConfig()


class _Batched(Protocol):
    """What `@serve.batch` makes of `rank_batched`, as a bound method: one request in,
    its answer out, and setters of the batch queue that Serve documents for user code."""

    async def __call__(self, request: RankRequest, principal: Principal) -> Any: ...

    def set_max_batch_size(self, new_max_batch_size: int) -> None: ...

    def set_batch_wait_timeout_s(self, new_batch_wait_timeout_s: float) -> None: ...

    def _get_max_batch_size(self) -> int: ...

    def _get_batch_wait_timeout_s(self) -> float: ...


@serve.deployment(
    name=DEPLOYMENT_NAME,
    # A stopping replica finishes its requests in flight (well under a second each) and
    # closes its decision log; Serve's defaults (2 s polls, 20 s) made `recsys serve`
    # take half a minute to stop.
    graceful_shutdown_wait_loop_s=0.5,
    graceful_shutdown_timeout_s=GRACEFUL_STOP_S,
)
@serve.ingress()
class RankerDeployment:
    """One replica: the current model's service, its decision log, the champion poller.

    Parameters
    ----------
    config_data
        The serve config as plain data (`ServeConfig.to_dict()`); API keys in it are
        hashed entries only (`serving.app.app_builder` hashes raw ones).
    """

    def __init__(self, config_data: dict[str, Any]) -> None:
        self.config = ServeConfig.from_dict(config_data)
        self.holder = ServiceHolder()
        self.metrics = Metrics()
        self.source = ModelSource(self.config.model_uri, self.config.tracking_uri)
        # One clock for the replica's life: a model swap does not restart `as_of`.
        self.clock = replica_clock(self.config)
        self.log = DecisionLog(self.config.decision_log_dir)
        self.log.start()  # first: writes what stopped processes logged ahead as parts
        # Every replica's decisions and stored outcomes, read from the shared log, so an
        # outcome is accepted whichever replica (or earlier process) decided.
        decision_log = self.log
        self.index = DecisionIndex(
            self.config.decision_log_dir,
            clock=self.clock,
            max_decisions=self.config.decision_index_rows,
            own_owner=lambda: decision_log.owner,
        )
        self.outcomes = OutcomeRecorder(self.index, self.log)
        logged = self.index.refresh()
        self.state = ApiState(
            holder=self.holder,
            keyring=KeyRing(self.config.api_keys),
            metrics=self.metrics,
            rank=self.rank_each,
            sessions=SessionStore(
                self.config.sessions_directory, ttl=timedelta(hours=self.config.session_hours)
            ),
            incrementality=IncrementalityBoard(self.config.incrementality_path),
        )
        self.history = ExposureHistory()
        self._load(self.source.current_version())
        self._seed_history(logged["exposures"])
        del logged
        self._poller = asyncio.get_event_loop().create_task(self._poll())

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The replica's HTTP API over its own state (Serve calls this once the
        constructor has run, before the replica takes requests)."""
        return create_api(lambda: self.state, max_body_bytes=self.config.max_body_bytes)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply the batching settings of `/v1/rank` (`BatchingConfig` keys).

        Serve calls this after the constructor and again whenever the deployment's
        `user_config` changes, on the running replica: the next batch uses the new size
        and wait. An unknown key or a value out of range is refused, naming it.
        """
        settings = BatchingConfig.from_dict(user_config, source="the ranker's user_config")
        batched = self._batched()
        batched.set_max_batch_size(settings.max_batch_size)
        batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        log.info(
            "batching: at most %d requests, waiting at most %g s",
            settings.max_batch_size,
            settings.batch_wait_timeout_s,
        )

    def batching(self) -> BatchingConfig:
        """The batching settings `/v1/rank` uses now (as read from its batch queue)."""
        batched = self._batched()
        return BatchingConfig(
            max_batch_size=batched._get_max_batch_size(),
            batch_wait_timeout_s=batched._get_batch_wait_timeout_s(),
        )

    def _batched(self) -> _Batched:
        return cast(_Batched, self.rank_batched)  # type: ignore[misc]  # see rank_batched

    def _load(self, version: str) -> None:
        holder, metrics = self.holder, self.metrics
        try:
            ranker = self.source.load(version)
            service = service_for(
                self.config,
                ranker,
                version,
                self.log,
                self.history,
                outcomes=self.outcomes,
                clock=self.clock,
            )
            service.warm_up()
        except Exception as exc:  # keep serving the old model, say why
            holder.load_error = redacted(f"model version {version} failed to load: {exc!r}")
            metrics.inc("model_load_failures_total")
            log.exception("model version %s failed to load", version)
            return
        holder.service, holder.version, holder.load_error = service, version, None
        holder.loaded_at = time.time()
        settle_heap()
        metrics.model_version = version
        metrics.inc("model_swaps_total")

    def _seed_history(self, exposures: Any) -> None:
        """Frequency caps survive a restart: remember the logged recent offers (the
        exposures the index read at start)."""
        service = self.holder.service
        if service is None:
            return
        try:
            seeded = service.seed_history(exposures)
        except Exception:  # caps start empty rather than the replica failing
            log.exception("could not read the decision log for frequency caps")
            return
        log.info("frequency caps: %d recent offers read from the decision log", seeded)

    async def _poll(self) -> None:
        """Follow the alias: load a new version; a version that failed is tried again
        after a back-off (twice as long each time, at most `MAX_RETRY_SECONDS`), not at
        every poll; the alias back on the version served clears the error."""
        failed: dict[str, tuple[int, float]] = {}  # version -> (failures, retry at)
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            try:
                version = await asyncio.to_thread(self.source.current_version)
            except Exception as exc:
                self.holder.load_error = redacted(f"cannot read {self.config.model_uri}: {exc!r}")
                continue
            if version == self.holder.version:
                self.holder.load_error = None  # e.g. rolled back to what is served
                continue
            failures, retry_at = failed.get(version, (0, 0.0))
            if time.monotonic() < retry_at:
                continue
            await asyncio.to_thread(self._load, version)
            if self.holder.version != version:
                wait = min(self.config.poll_seconds * 2**failures, MAX_RETRY_SECONDS)
                failed[version] = (failures + 1, time.monotonic() + wait)

    async def rank_each(
        self, requests: list[RankRequest], who: list[Principal]
    ) -> list[RankResponse]:
        """Each request joins the dynamic batch; errors come back per request."""
        batched = self._batched()
        answers: list[Any] = await asyncio.gather(
            *(batched(r, p) for r, p in zip(requests, who, strict=True))
        )
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return list(answers)

    # The decorator's sizes are placeholders: `reconfigure` sets the configured ones
    # before the replica takes a request. (Serve's typing of `batch` knows one list
    # argument, not two: call it through `_batched`.)
    @serve.batch(  # type: ignore[arg-type]
        max_batch_size=_DEFAULT_BATCHING.max_batch_size,
        batch_wait_timeout_s=_DEFAULT_BATCHING.batch_wait_timeout_s,
    )
    async def rank_batched(  # type: ignore[misc]
        self, requests: list[RankRequest], principals: list[Principal]
    ) -> list[Any]:
        service = self.holder.service
        self.metrics.count_batch(len(requests))
        if service is None:
            return [NotReadyError(self.holder.load_error or "loading")] * len(requests)
        # One bad request must not fail the others batched with it.
        return await asyncio.to_thread(rank_batch, service, requests, principals, self.metrics)

    def __del__(self) -> None:
        self.log.close()


def ranker_application(config: ServeConfig) -> Application:
    """`RankerDeployment` sized by `config` and bound to it, ready for `serve.run`: the
    constructor gets the config as data, `reconfigure` its `batching` (the deployment's
    `user_config`, which a Serve config file may override to change it live)."""
    # mypy does not apply class decorators: the name is a `Deployment` at run time.
    ranker = cast(Deployment, RankerDeployment)
    return ranker.options(
        num_replicas=config.replicas,
        ray_actor_options={"num_cpus": config.cpus_per_replica},
        # Enough requests in flight per replica to fill a batch (Serve's default is 5).
        max_ongoing_requests=max(2 * config.batching.max_batch_size, 8),
        user_config=config.batching.to_dict(),
    ).bind(config.to_dict())
