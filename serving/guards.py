"""What runs before a route: the key, the body's size, strict JSON, bounded errors.

The API does no work for a caller it does not know. Pure ASGI middleware, in the order
a request meets them (`serving.app.create_api` installs them):

- `NoStore` marks every answer `Cache-Control: no-store` unless it says otherwise (the
  page's static files): answers hold a seller's data and must not be kept by a browser
  or proxy cache.
- `AuthGate` authenticates every `/v1/` request from its headers alone, before a byte of
  its body is read: `Authorization: Bearer <key>`, or, for reading routes (GET), the
  seller page's session cookie. A request without a valid one is answered 401 at once
  and its body is never read, parsed or validated. The caller goes to the route as
  `request.state.principal`.
- `BodyLimit` refuses a body over its route's limit (413), from its `Content-Length`
  before reading it, or as it streams in (`serving.schemas.ROUTE_BODY_BYTES`).

Then FastAPI reads the body with `StrictJSONRequest` (a key twice in one object is a
422 naming it), validates it (strictly: `serving.schemas`), and `bounded_errors` keeps a
422 small: at most `MAX_ERRORS` problems, each quoting at most `MAX_ECHO` characters of
what was sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.auth import AccessError, AuthError, KeyRing, Principal
from serving.schemas import (
    MAX_BATCH,
    MAX_ECHO,
    MAX_ERRORS,
    MAX_OUTCOMES,
    ROUTE_BODY_BYTES,
    SMALL_BODY_BYTES,
)
from serving.sessions import COOKIE, SessionStore

API_PREFIX = "/v1/"
"""Every route under it needs a key (or, to read, a session); none outside it does."""


# --------------------------------------------------------------------------- the key


class AuthGate:
    """Pure ASGI middleware: 401 for any `/v1/` request without a valid key or session,
    decided from its headers before its body is read (see the module docstring).

    `credentials()` returns the key ring and session store to check against; it is
    called per request, since a Serve replica fills them in after the app is built. An
    exception it raises (a replica still starting) propagates to the app's handlers.
    """

    def __init__(
        self, app: ASGIApp, credentials: Callable[[], tuple[KeyRing, SessionStore]]
    ) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        keyring, sessions = self.credentials()
        try:
            principal = authenticate(scope, keyring, sessions)
        except AccessError as exc:
            await _send_json(
                send,
                exc.status,
                exc.message,
                [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()],
            )
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def authenticate(scope: Scope, keyring: KeyRing, sessions: SessionStore) -> Principal:
    """The caller of a request, from its headers: the Bearer key, else (reading routes
    only) the seller page's session cookie; `AuthError` (401) otherwise."""
    headers = _headers(scope)
    authorization = headers.get("authorization")
    if authorization is not None:
        return keyring.authenticate(authorization)
    token = _cookie(headers.get("cookie", ""), COOKIE)
    if token is not None and scope["method"] in ("GET", "HEAD"):
        return sessions.verify(token, keyring)
    return keyring.authenticate(None)  # raises: missing key


def principal_of(request: Request) -> Principal:
    """The caller `AuthGate` authenticated for this request."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # a route outside the gate: a wiring bug
        raise AuthError("this route was reached without authentication; report it")
    return principal


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lowercase name (a repeated one: the first)."""
    out: dict[str, str] = {}
    for name, value in scope["headers"]:
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name and value:
            return value.strip('"')
    return None


# --------------------------------------------------------------------------- caching


class NoStore:
    """Pure ASGI middleware adding `Cache-Control: no-store` to every answer that sets
    no `Cache-Control` of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)


# --------------------------------------------------------------------------- body size


def route_limit(method: str, path: str, max_body_bytes: int) -> int:
    """The body limit of a request: its route's (`ROUTE_BODY_BYTES`; None there means
    `max_body_bytes`), else `SMALL_BODY_BYTES`, never above `max_body_bytes`."""
    if (method, path) in ROUTE_BODY_BYTES:
        limit = ROUTE_BODY_BYTES[(method, path)]
        return max_body_bytes if limit is None else min(limit, max_body_bytes)
    return min(SMALL_BODY_BYTES, max_body_bytes)


class BodyTooLargeError(HTTPException):
    """A request body grew past the limit while it was being read (413)."""


class BodyLimit:
    """Pure ASGI middleware refusing request bodies over their route's limit (413).

    The limit is `route_limit(method, path, max_bytes)`: the largest valid body of the
    route with a margin, at most `max_bytes` (the serve config's `max_body_bytes`, which
    sizes /v1/rank/batch). A `Content-Length` over it is refused before any of the body
    is read; a body without one (chunked) is counted as it streams in, and refused as
    soon as it passes the limit, so the app never holds more than the limit. A
    `Content-Length` that is not one non-negative integer is a 400. Answers are JSON
    `{"detail": ...}` naming the limit and what to do instead.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (got {max_bytes})")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = route_limit(scope["method"], scope["path"], self.max_bytes)
        declared = [value for name, value in scope["headers"] if name.lower() == b"content-length"]
        try:
            length = _content_length(declared)
        except ValueError as exc:
            await _send_json(send, 400, str(exc))
            return
        if length is not None and length > limit:
            await _send_json(send, 413, self._too_large(f"its Content-Length is {length}", limit))
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised where the app reads the body: FastAPI answers it as a 413.
                    raise BodyTooLargeError(
                        413,
                        self._too_large(f"more than {limit} bytes were sent", limit),
                        headers={"Connection": "close"},
                    )
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLargeError as exc:  # an app that let it through unanswered
            if started:
                raise
            await _send_json(send, 413, str(exc.detail))

    def _too_large(self, what: str, limit: int) -> str:
        return (
            f"the request body is too large: {what}, and this route reads at most "
            f"{_size(limit)} per request. "
            f"Fix: split the work into several calls (at most {MAX_BATCH} requests per "
            f"/v1/rank/batch call, {MAX_OUTCOMES} outcomes per /v1/outcomes call); "
            "/v1/rank/batch's limit is the serve config's max_body_bytes"
        )


def _content_length(values: list[bytes]) -> int | None:
    """The body size the `Content-Length` header(s) declare; None when there is none.

    `ValueError` naming the header when it is not one non-negative integer (repeated
    headers must agree). A number too long to be a real size counts as a huge one.
    """
    if not values:
        return None
    distinct = {value.strip() for value in values}
    text = next(iter(distinct)).decode("latin-1")
    if len(distinct) > 1 or not re.fullmatch(r"[0-9]+", text):
        shown = ", ".join(repr(v.decode("latin-1")[:40]) for v in values[:3])
        raise ValueError(
            f"the Content-Length header must be one non-negative integer, the body's size "
            f"in bytes (got {shown}). Fix: send the body's exact size, or no Content-Length "
            "with a chunked body"
        )
    return int(text) if len(text) <= 18 else 10**18


def _size(n: int) -> str:
    """`n` bytes, readably: "4096 bytes", "16777216 bytes (16 MiB)"."""
    return f"{n} bytes" + (f" ({n / 2**20:.3g} MiB)" if n >= 2**20 else "")


async def _send_json(
    send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer `{"detail": detail}` with `status` straight from ASGI, closing the
    connection (the body was not read, so the connection cannot carry another request)."""
    body = json.dumps({"detail": detail}).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"connection", b"close"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def unreadable_body(exc: HTTPException) -> dict[str, Any] | None:
    """A validation error naming the body, when FastAPI failed to read it (a 400 caused
    by a decoding error, or a key repeated in an object); None for any other HTTP error."""
    cause = exc.__cause__
    if exc.status_code != 400 or not isinstance(cause, ValueError | RecursionError):
        return None
    if isinstance(cause, DuplicateKeyError):
        return {
            "type": "json_duplicate_key",
            "loc": ["body"],
            "msg": f"{cause}, so which value was meant is unknown. Fix: send each key of "
            "an object once",
            "input": _echo(cause.key),
        }
    if isinstance(cause, RecursionError):
        return {
            "type": "json_invalid",
            "loc": ["body"],
            "msg": "the request body nests arrays or objects too deeply to read. Fix: send "
            "the JSON the API's schema describes",
            "input": None,
        }
    if isinstance(cause, UnicodeError):
        start = getattr(cause, "start", None)
        return {
            "type": "utf8_invalid",
            "loc": ["body", start] if isinstance(start, int) else ["body"],
            "msg": f"the request body is not UTF-8 text ({cause}). Fix: send JSON encoded as UTF-8",
            "input": None,
        }
    return {
        "type": "json_invalid",
        "loc": ["body"],
        "msg": f"the request body could not be read as JSON ({cause}). Fix: send the JSON "
        "the API's schema describes (numbers have at most 4300 digits)",
        "input": None,
    }


def json_safe(value: Any) -> Any:
    """`value` (JSON-like) with every NaN or infinite float replaced by its text, and
    every lone surrogate in a string by its escape (`"\\ud800"`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


# --------------------------------------------------------------------------- strict JSON


class DuplicateKeyError(ValueError):
    """A JSON object names one key twice (which value was meant is unknowable)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {_echo(key)!r} appears twice in one JSON object")
        self.key = key


def strict_json(body: bytes) -> Any:
    """Parse a request body as JSON, refusing a key repeated in one object
    (`DuplicateKeyError`) and text that is not UTF-8 (`UnicodeDecodeError`); JSON syntax
    errors raise `json.JSONDecodeError` as usual."""
    return json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


class StrictJSONRequest(Request):
    """A request whose `json()` is `strict_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """FastAPI route reading JSON bodies with `StrictJSONRequest` (FastAPI's documented
    way to change how a route reads its request)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


# --------------------------------------------------------------------------- errors


def bounded_errors(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """A 422 answer's body: at most `MAX_ERRORS` problems, each echoing at most
    `MAX_ECHO` characters of its input (an object or a list is described, not quoted),
    and how many problems there were in all."""
    shown = [_bounded(error) for error in errors[:MAX_ERRORS]]
    body: dict[str, Any] = {"detail": shown}
    if len(errors) > MAX_ERRORS:
        body["errors_total"] = len(errors)
        body["errors_shown"] = MAX_ERRORS
    return body


def _bounded(error: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in error.items():
        if name == "input":
            out[name] = _echo_value(value)
        elif name == "ctx" and isinstance(value, dict):
            out[name] = {k: _echo_value(v) for k, v in list(value.items())[:5]}
        elif name == "loc":
            out[name] = [_echo(p) if isinstance(p, str) else p for p in list(value)[:12]]
        elif name == "msg":
            out[name] = str(value)[:1000]
        elif name in ("type", "url"):
            out[name] = value
    return json_safe(out)


def _echo_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value if not isinstance(value, int) or abs(value) < 10**18 else _echo(str(value))
    if isinstance(value, str):
        return _echo(value)
    if isinstance(value, dict):
        return f"<an object of {len(value)} fields>"
    if isinstance(value, list | tuple):
        return f"<an array of {len(value)} items>"
    return _echo(str(value))


def _echo(text: str) -> str:
    """At most `MAX_ECHO` characters of `text`, saying how long it was if cut."""
    if len(text) <= MAX_ECHO:
        return text
    return f"{text[:MAX_ECHO]}... ({len(text)} characters)"
