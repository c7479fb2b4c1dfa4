"""The seller's web page: recommended campaigns, a budget control and CSV target lists.

`/sellers/{seller_id}` is a plain HTML page with one script of our own (no framework,
no CDN: everything it loads comes from this server), which calls the same API as the
SaaS (`/v1/sellers/{seller_id}/campaigns?budget=...`) and draws the tables and charts
as SVG. Login is a form that takes the seller's API key once and opens a session
(`serving.sessions`): the cookie holds a signed, expiring session token bound to the
seller, never the key, and signing out ends the session on the server.

- the cookie is HttpOnly (page scripts cannot read it), SameSite=Strict (other sites
  cannot make the browser send it) and Secure when the page is served over HTTPS
  (directly, or behind a proxy that ends TLS and sends `X-Forwarded-Proto: https`);
- only reads accept it (the page's campaign and CSV requests): every request that
  changes something still needs the `Authorization` header, so a cookie cannot be
  turned into a forged decision or outcome, and a session token is never an API key;
- a key of another seller gets a 403 page, never the other seller's data.

Page templates are filled in one pass (`_template`): a value is never scanned for
placeholders, so a seller id such as `{{message}}` stays text where it is put.

The page sends a Content-Security-Policy that allows scripts, styles and connections
to this origin only.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable
from importlib import resources
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from serving.auth import AccessError, ForbiddenError, KeyRing, Principal, hash_key
from serving.schemas import MAX_ID, SMALL_BODY_BYTES
from serving.sessions import COOKIE, SessionStore

__all__ = ["COOKIE", "add_seller_pages"]

MAX_LOGIN_BODY = SMALL_BODY_BYTES
"""Largest login form accepted (a key is 43 characters)."""

SELLER_PATH = Path(min_length=1, max_length=MAX_ID, description="the seller's id")
STATIC_PATH = Path(min_length=1, max_length=64)
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
STATIC_FILES = {
    "seller.js": "text/javascript; charset=utf-8",
    "seller.css": "text/css; charset=utf-8",
}


def add_seller_pages(
    api: FastAPI, keyring: Callable[[], KeyRing], sessions: Callable[[], SessionStore]
) -> None:
    """Add the seller page, its login and logout, and its static files to `api`."""

    @api.get("/sellers/{seller_id}", response_class=HTMLResponse, include_in_schema=False)
    async def seller_page(request: Request, seller_id: str = SELLER_PATH) -> Response:
        token = request.cookies.get(COOKIE)
        if not token:
            return _login_page(seller_id, None, status=401)
        try:
            who = sessions().verify(token, keyring())
            KeyRing.authorize(who, seller_id)
        except ForbiddenError as exc:
            return _login_page(seller_id, exc.message, status=403)
        except AccessError as exc:
            return _login_page(seller_id, exc.message, status=exc.status)
        page = _template(
            "seller.html",
            seller_id=seller_id,
            who=_who(who),
            logout=_page_path(seller_id) + "/logout",
        )
        return _page(page)

    @api.post("/sellers/{seller_id}/login", include_in_schema=False)
    async def login(request: Request, seller_id: str = SELLER_PATH) -> Response:
        body = await request.body()
        if len(body) > MAX_LOGIN_BODY:
            return _login_page(seller_id, "the login form is too large", status=413)
        try:
            form = parse_qs(body.decode("utf-8"), max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            return _login_page(seller_id, "the login form could not be read", status=400)
        key = (form.get("key") or [""])[0].strip()
        try:
            who = keyring().authenticate_key(key)
            KeyRing.authorize(who, seller_id)
        except AccessError as exc:
            return _login_page(seller_id, exc.message, status=exc.status)
        token = sessions().issue(who, hash_key(key))
        response = RedirectResponse(_page_path(seller_id), status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(sessions().ttl.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=_over_https(request),
            path="/",
        )
        return response

    @api.post("/sellers/{seller_id}/logout", include_in_schema=False)
    async def logout(request: Request, seller_id: str = SELLER_PATH) -> Response:
        token = request.cookies.get(COOKIE)
        if token:
            sessions().revoke(token)  # a copy of the cookie is refused from now on
        response = RedirectResponse(_page_path(seller_id), status_code=303)
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=_over_https(request)
        )
        return response

    @api.get("/static/{name}", include_in_schema=False)
    async def static(name: str = STATIC_PATH) -> Response:
        media = STATIC_FILES.get(name)
        if media is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(
            _static_text(name), media_type=media, headers={"Cache-Control": "max-age=300"}
        )


@functools.cache
def _static_text(name: str) -> str:
    """A file of `serving/static`, read once per process."""
    return resources.files("serving").joinpath("static", name).read_text("utf-8")


def _over_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS: directly, or through a proxy that ends
    TLS and says so (`X-Forwarded-Proto`). Trusting the header is safe here: it can only
    make the cookie stricter (Secure), never weaker."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _who(principal: Principal) -> str:
    return "admin" if principal.admin else f"seller {principal.seller_id}"


def _page_path(seller_id: str) -> str:
    return "/sellers/" + quote(seller_id, safe="")


def _login_page(seller_id: str, message: str | None, status: int) -> Response:
    page = _template(
        "login.html",
        seller_id=seller_id,
        action=_page_path(seller_id) + "/login",
        message=message or "",
    )
    return _page(page, status=status)


def _template(name: str, **values: str) -> str:
    """A page from `serving/static` with each `{{name}}` replaced by its value, escaped,
    in one pass over the template: a value is never searched for placeholders itself.

    `{{message}}` is special: a non-empty message becomes an alert paragraph (its text
    escaped), an empty one nothing. A placeholder without a value is an error.
    """

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template {name} needs a value for {{{{{key}}}}}")
        text = html.escape(values[key], quote=True)
        if key == "message":
            return f'<p class="error" role="alert">{text}</p>' if text else ""
        return text

    return _PLACEHOLDER.sub(fill, _static_text(name))


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )
