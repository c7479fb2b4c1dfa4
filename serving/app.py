"""The Ray Serve application: a thin FastAPI adapter over `serving.service.RankingService`.

- `create_api(state, max_body_bytes=...)` builds the FastAPI app (routes, auth, errors,
  metrics, request size limits); it knows nothing of Ray, so it is tested with a plain
  test client.
- `serving.deployment.RankerDeployment` owns one replica's state: the current service
  (model), the decision log, the champion poller; `/v1/rank` goes through `@serve.batch`,
  so concurrent requests are scored together in one vectorized call.
- `app_builder(args)` is the typed application builder `serve deploy` and `recsys serve`
  use (import path `serving.app:app_builder`): it binds `RankerDeployment` to the config.
  Importing this module neither needs nor touches Ray.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException
from starlette.routing import Match

from recsys.campaigns import AudienceKind
from recsys.campaigns.planner import UnknownCampaignError
from serving.auth import ENV_VAR, AccessError, ApiKeyEntry, KeyRing, Principal, parse_env_keys
from serving.batching import NaturalBatcher
from serving.config import BatchingConfig, ServeConfig
from serving.csv_export import to_csv
from serving.decision_log import DecisionLogError
from serving.guards import (
    AuthGate,
    BodyLimit,
    NoStore,
    StrictJSONRoute,
    bounded_errors,
    principal_of,
    unreadable_body,
)
from serving.incrementality import IncrementalityBoard
from serving.metrics import Measure, Metrics
from serving.outcomes import OutcomeError
from serving.pages import add_seller_pages
from serving.schemas import (
    MAX_BODY_BYTES,
    MAX_CAMPAIGN_ID,
    MAX_ID,
    MAX_MONEY,
    BatchRankRequest,
    BatchRankResponse,
    CampaignsResponse,
    Health,
    IncrementalityResponse,
    OutcomesRequest,
    OutcomesResponse,
    RankRequest,
    RankResponse,
)
from serving.sessions import SessionStore

if TYPE_CHECKING:  # Ray and the service (polars, the model) load only where they run
    from ray.serve import Application

    from serving.service import RankingService

__all__ = [
    "ApiState",
    "BodyLimit",
    "ServiceHolder",
    "app_builder",
    "create_api",
    "settle_heap",
]

log = logging.getLogger(__name__)

BUDGET_QUERY = Query(
    None,
    ge=0,
    le=MAX_MONEY,
    allow_inf_nan=False,
    description="spend limit to plan for (a finite number); default: the serving policy's "
    "budget, else none",
)
AUDIENCE_QUERY = Query("journey_stage", description="what groups buyers into audiences")
SELLER_PATH = Path(min_length=1, max_length=MAX_ID, description="the seller's id")
CAMPAIGN_PATH = Path(
    min_length=1, max_length=MAX_CAMPAIGN_ID, description="a campaign id of the seller's plan"
)

Ranker = Callable[[list[RankRequest], list[Principal]], Awaitable[list[RankResponse]]]

RETRY_AFTER_S = 5
"""What a 503 tells a client to wait before retrying (`Retry-After`)."""

BEARER = HTTPBearer(
    auto_error=False,
    description="an API key (`recsys keys new SELLER`); reading routes also take the "
    "seller page's session cookie",
)
"""Documents the key in the OpenAPI schema; `serving.guards.AuthGate` checks it."""


@dataclass
class ServiceHolder:
    """The service currently answering, swapped whole when a new model is loaded."""

    service: RankingService | None = None
    version: str | None = None
    load_error: str | None = None
    loaded_at: float = field(default_factory=time.time)


@dataclass
class ApiState:
    """What the routes use; one per process (per Serve replica)."""

    holder: ServiceHolder
    keyring: KeyRing
    metrics: Metrics
    rank: Ranker | None = None
    sessions: SessionStore = field(default_factory=SessionStore)
    """The seller page's sessions (in memory unless a replica shares a directory)."""
    incrementality: IncrementalityBoard = field(default_factory=lambda: IncrementalityBoard(None))
    """The latest incrementality report (the seller route, page card and gauges)."""


def create_api(
    state: Callable[[], ApiState],
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_batch_size: int | None = None,
) -> FastAPI:
    """The HTTP API over `state()` (see the module docstring).

    `state` is looked up on every request rather than captured (a Serve replica builds
    its app around its own state: `serving.deployment.RankerDeployment`).
    `/v1/rank` requests go to `state().rank` (the replica's dynamic batching); without
    one, concurrent requests are ranked together, up to `max_batch_size` at a time
    (`serving.batching.NaturalBatcher`; None: the serve config's default).
    Before any route, `serving.guards` answers a `/v1/` request without a valid key 401
    without reading its body, and a body over its route's limit 413 (`max_body_bytes`
    sizes /v1/rank/batch); a body that is not UTF-8 JSON, repeats a key, or holds a
    number Python cannot read is a 422 naming the body; every answer is `no-store`.
    """
    api = FastAPI(
        title="promo-recsys ranking API",
        version="1",
        description="Which offer, if any, to give each buyer; decisions are logged.",
    )
    api.router.route_class = StrictJSONRoute
    # Innermost first: the key is checked before the body limit reads anything, and
    # `Measure` (added last, outermost) counts every answer, refusals too.
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    api.add_middleware(AuthGate, credentials=lambda: _credentials(state))
    api.add_middleware(NoStore)

    def ready_service() -> RankingService:
        holder = state().holder
        if holder.service is None:
            raise NotReadyError(holder.load_error or "the model is still loading")
        return holder.service

    direct = NaturalBatcher(
        ready_service,
        BatchingConfig().max_batch_size if max_batch_size is None else max_batch_size,
        metrics=lambda: state().metrics,
    )

    def observe(scope: Any, status: int, seconds: float) -> None:
        try:
            metrics = state().metrics
        except NotReadyError:  # a replica still starting has nothing to count into
            return
        metrics.observe(_route_path(api, scope), status, seconds)

    api.add_middleware(Measure, observe=observe)  # outermost: counts refusals too

    @api.exception_handler(AccessError)
    async def access_denied(request: Request, exc: AccessError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    @api.exception_handler(NotReadyError)
    async def not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        return _unavailable(str(exc))

    @api.exception_handler(DecisionLogError)
    async def log_unavailable(request: Request, exc: DecisionLogError) -> JSONResponse:
        # The decision could not be made durable, so it is not acknowledged: retry later.
        return _unavailable(str(exc))

    @api.exception_handler(UnknownCampaignError)
    async def unknown_campaign(request: Request, exc: UnknownCampaignError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(OutcomeError)
    async def outcomes_refused(request: Request, exc: OutcomeError) -> JSONResponse:
        return JSONResponse(bounded_errors(exc.problems), status_code=422)

    @api.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer, kept small: a few problems, each quoting a short prefix
        # of what was sent (a huge body of bad values never makes a huge answer).
        return JSONResponse(bounded_errors(list(exc.errors())), status_code=422)

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        unreadable = unreadable_body(exc)
        if unreadable is not None:
            return JSONResponse(bounded_errors([unreadable]), status_code=422)
        return await http_exception_handler(request, exc)

    keyed = [Depends(BEARER)]

    @api.post("/v1/rank", response_model=RankResponse, dependencies=keyed)
    async def rank_one(request: Request, body: RankRequest) -> RankResponse:
        who = principal_of(request)
        rank = state().rank or direct.rank
        return (await rank([body], [who]))[0]

    @api.post("/v1/rank/batch", response_model=BatchRankResponse, dependencies=keyed)
    async def rank_batch(request: Request, body: BatchRankRequest) -> BatchRankResponse:
        who = principal_of(request)
        service = ready_service()
        responses = await asyncio.to_thread(
            service.rank, list(body.requests), [who] * len(body.requests)
        )
        return BatchRankResponse(responses=responses)

    @api.post("/v1/outcomes", response_model=OutcomesResponse, dependencies=keyed)
    async def outcomes(request: Request, body: OutcomesRequest) -> OutcomesResponse:
        """Report what happened after decisions (see docs/serving.md): every outcome is
        stored once, whichever replica gets it and however often it is retried."""
        who = principal_of(request)
        service = ready_service()
        result: OutcomesResponse = await asyncio.to_thread(
            service.record_outcomes, list(body.outcomes), who
        )
        return result

    @api.get(
        "/v1/sellers/{seller_id}/campaigns", response_model=CampaignsResponse, dependencies=keyed
    )
    async def campaigns(
        request: Request,
        seller_id: str = SELLER_PATH,
        budget: float | None = BUDGET_QUERY,
        audience: AudienceKind = AUDIENCE_QUERY,
    ) -> CampaignsResponse:
        who = principal_of(request)
        state().keyring.authorize(who, seller_id)
        service = ready_service()
        plan = functools.partial(service.campaigns, budget=budget, audience=audience)
        result: CampaignsResponse = await asyncio.to_thread(plan, seller_id, who)
        return result

    @api.get(
        "/v1/sellers/{seller_id}/campaigns/{campaign_id}/targets.csv",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/csv": {}}, "description": "buyer_id,offer_id,..."}},
        dependencies=keyed,
    )
    async def campaign_targets(
        request: Request,
        seller_id: str = SELLER_PATH,
        campaign_id: str = CAMPAIGN_PATH,
        budget: float | None = BUDGET_QUERY,
        audience: AudienceKind = AUDIENCE_QUERY,
    ) -> Response:
        """A campaign's target list as CSV, in the data contract's pairs form (text cells
        a spreadsheet would run as a formula are neutralised: `serving.csv_export`)."""
        who = principal_of(request)
        state().keyring.authorize(who, seller_id)
        service = ready_service()
        targets = functools.partial(service.campaign_targets, budget=budget, audience=audience)
        frame = await asyncio.to_thread(targets, seller_id, who, campaign_id)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{seller_id}-{campaign_id}")[:120]
        return Response(
            to_csv(frame),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )

    @api.get(
        "/v1/sellers/{seller_id}/incrementality",
        response_model=IncrementalityResponse,
        dependencies=keyed,
    )
    async def incrementality(
        request: Request, seller_id: str = SELLER_PATH
    ) -> IncrementalityResponse:
        """The seller's measured lift of the engine's offers vs its holdout (the latest
        `recsys report incrementality` written to the configured file)."""
        who = principal_of(request)
        state().keyring.authorize(who, seller_id)
        board = state().incrementality
        return await asyncio.to_thread(board.for_seller, seller_id)

    add_seller_pages(api, lambda: state().keyring, lambda: state().sessions)

    @api.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok", model_version=state().holder.version)

    @api.get("/readyz", response_model=Health)
    async def readyz() -> Response:
        holder = state().holder
        if holder.service is None:
            body = Health(status="loading", detail=holder.load_error)
            return JSONResponse(
                body.model_dump(), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        status = "degraded" if holder.load_error else "ok"
        body = Health(status=status, model_version=holder.version, detail=holder.load_error)
        return JSONResponse(body.model_dump(), status_code=200)

    @api.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> str:
        current = state()
        current.incrementality.export(current.metrics)
        return current.metrics.render()

    return api


def _credentials(state: Callable[[], ApiState]) -> tuple[KeyRing, SessionStore]:
    current = state()
    return current.keyring, current.sessions


def _unavailable(detail: str) -> JSONResponse:
    """503 with `Retry-After`: nothing was acknowledged, the same request may be retried."""
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


def _route_path(api: FastAPI, scope: Any) -> str:
    """The route template a request matched (`other` for none), for metrics; a request
    refused before routing (no key, too large) is matched here."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "other"))
    for candidate in api.routes:
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", "other"))
    return "other"


class NotReadyError(RuntimeError):
    """No model is loaded yet (503)."""


def keyring_entries(config: ServeConfig) -> list[ApiKeyEntry]:
    """Hashed keys of the config plus those of RECSYS_API_KEYS (hashed on reading)."""
    return [*config.api_keys, *parse_env_keys(os.environ.get(ENV_VAR, ""))]


def keyring_from(config: ServeConfig) -> KeyRing:
    """The key ring of the config plus RECSYS_API_KEYS."""
    return KeyRing(keyring_entries(config))


# ---------------------------------------------------------------------------- Ray Serve


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redacted(text: str) -> str:
    """`text` with the credentials of any URL in it replaced (`/readyz` shows load errors
    to callers without a key, and a tracking URI may hold a user and password).

    Examples
    --------
    >>> redacted("cannot reach https://ann:s3cret@mlflow.example:5000/api (timeout)")
    'cannot reach https://***@mlflow.example:5000/api (timeout)'
    """
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


GRACEFUL_STOP_S = 5.0
"""Longest a stopping replica waits for its requests in flight."""

MAX_RETRY_SECONDS = 300.0
"""Longest wait before a replica tries again to load a model version that failed."""


def settle_heap() -> None:
    """Take the objects alive now (a loaded model, its served state) out of Python's
    cyclic garbage collector's reach; call it once a service is loaded and warmed up.

    A loaded model and its served state are millions of long-lived Python objects. Every
    full collection walks them all: 120-160 ms with the 20,000-buyer benchmark's model,
    every second or two under load, which set a served request's p99 latency. Frozen
    (`gc.freeze`), they are skipped; objects created later are collected as before. Any
    earlier freeze is undone first, so a replaced model's cycles are collected (one full
    collection per model swap, off the request path's locks).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def service_for(
    config: ServeConfig,
    ranker: Any,
    version: str,
    decision_log: Any = None,
    history: Any = None,
    outcomes: Any = None,
    clock: Callable[[], datetime] | None = None,
) -> RankingService:
    """The `RankingService` a serve config describes for a loaded ranker: its serving
    policy, score cache and clock (`clock`, else `replica_clock(config)`). A replica
    passes its own history, outcome recorder and clock, which outlive a model swap."""
    from serving.service import RankingService

    return RankingService(
        ranker,
        model_version=version,
        decision_log=decision_log,
        policy=config.serving_policy(ranker.config.policy),
        score_cache_rows=config.score_cache_rows,
        history=history,
        outcomes=outcomes,
        clock=clock if clock is not None else replica_clock(config),
        holdout=config.holdout,
    )


def replica_clock(config: ServeConfig) -> Callable[[], datetime]:
    """The decision clock of a serve config: `as_of`, running at the real pace from the
    moment this is called, else the real UTC clock."""
    from serving.service import clock_from, now_utc

    return clock_from(config.as_of) if config.as_of is not None else now_utc


def app_builder(args: dict[str, Any]) -> Application:
    """Typed application builder: `serve deploy` (import path `serving.app:app_builder`,
    args = the serve config) and `recsys serve` both use it.

    The config sizes `serving.deployment.RankerDeployment` and is its constructor's
    argument; its `batching` is the deployment's `user_config`, which a Serve config file
    may override for the `ranker` deployment to change it on live replicas
    (docs/serving.md).
    Raw keys of RECSYS_API_KEYS (in this process's environment) are hashed here and
    travel to the replicas as hashes only.
    """
    from serving.deployment import ranker_application

    config = ServeConfig.from_dict(args, source="serve config")
    config.api_keys = list(keyring_entries(config))
    return ranker_application(config)
