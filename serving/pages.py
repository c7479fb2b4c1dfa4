"""The seller's web page: recommended campaigns, a budget control and CSV target lists.

`/sellers/{seller_id}` is a plain HTML page with one script of our own (no framework,
no CDN: everything it loads comes from this server), which calls the same API as the
SaaS (`/v1/sellers/{seller_id}/campaigns?budget=...`) and draws the tables and charts
as SVG. Login is a form that takes the seller's API key and keeps it in a cookie:

- the cookie is HttpOnly (page scripts cannot read it), SameSite=Strict (other sites
  cannot make the browser send it) and Secure when the page is served over HTTPS
  (directly, or behind a proxy that ends TLS and sends `X-Forwarded-Proto: https`);
- only reads accept it (the page's campaign and CSV requests): every request that
  changes something still needs the `Authorization` header, so a cookie cannot be
  turned into a forged decision or outcome;
- a key of another seller gets a 403 page, never the other seller's data.

The page sends a Content-Security-Policy that allows scripts, styles and connections
to this origin only.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from importlib import resources
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from serving.auth import AccessError, ForbiddenError, KeyRing, Principal

COOKIE = "recsys_key"
"""The cookie holding the seller page's key."""

MAX_LOGIN_BODY = 4096
"""Largest login form accepted (a key is 43 characters)."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
STATIC_FILES = {
    "seller.js": "text/javascript; charset=utf-8",
    "seller.css": "text/css; charset=utf-8",
}


def cookie_key(request: Request) -> str | None:
    """The key the seller page's cookie carries, if any."""
    return request.cookies.get(COOKIE) or None


def add_seller_pages(api: FastAPI, keyring: Callable[[], KeyRing]) -> None:
    """Add the seller page, its login and logout, and its static files to `api`."""

    @api.get("/sellers/{seller_id}", response_class=HTMLResponse, include_in_schema=False)
    async def seller_page(seller_id: str, request: Request) -> Response:
        key = cookie_key(request)
        if key is None:
            return _login_page(seller_id, None, status=401)
        try:
            who = keyring().authenticate_key(key)
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
    async def login(seller_id: str, request: Request) -> Response:
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
        response = RedirectResponse(_page_path(seller_id), status_code=303)
        response.set_cookie(
            COOKIE,
            key,
            httponly=True,
            samesite="strict",
            secure=_over_https(request),
            path="/",
        )
        return response

    @api.post("/sellers/{seller_id}/logout", include_in_schema=False)
    async def logout(seller_id: str) -> Response:
        response = RedirectResponse(_page_path(seller_id), status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @api.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
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
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return _page(
        _template(
            "login.html", seller_id=seller_id, action=_page_path(seller_id) + "/login"
        ).replace("{{message}}", note),
        status=status,
    )


def _template(name: str, **values: str) -> str:
    """A page from `serving/static`, with `{{name}}` replaced by the escaped value."""
    text = _static_text(name)
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return text


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
