"""API keys for the ranking service: who is calling, and which seller's data they may touch.

A caller sends `Authorization: Bearer <key>`. Each key belongs to one seller, or is an
admin key (seller `*`). A seller's key sees and ranks only that seller's offers and its
own campaigns; an admin key sees everything. No key, or an unknown one, is a 401; a
known key reaching for another seller's data is a 403.

Keys are never stored: the serve config lists `ApiKeyEntry` hashes, and the environment
variable `RECSYS_API_KEYS` (`key:seller_id` pairs, comma-separated; `key:*` for an admin)
is hashed as soon as it is parsed. This module is pure Python (no Ray, no web framework)
so the deployment stays a thin adapter and every rule here is tested in milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import field_validator

from recsys.config import StrictConfig

log = logging.getLogger(__name__)

ENV_VAR = "RECSYS_API_KEYS"
"""Environment variable holding `key:seller_id` pairs (comma-separated; `key:*` is admin)."""

ADMIN = "*"
"""The `seller_id` of an admin key."""

MIN_KEY_LENGTH = 16
"""Shortest raw key accepted; `generate_key` makes 43-character keys.

An unsalted hash is safe only for keys too random to guess, so short keys are refused.
"""

HEADER_FORM = "Authorization: Bearer <key>"

_HASH_PREFIX = "sha256:"
_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
_ENV_FORM = (
    f"{ENV_VAR} holds comma-separated key:seller_id pairs, with key:{ADMIN} for an admin key "
    f"(for example 'k3Yq...:seller-42,Zt9w...:{ADMIN}'); make each key with "
    "serving.auth.generate_key()"
)


# --------------------------------------------------------------------------- keys and hashes


def hash_key(key: str) -> str:
    """The stored form of an API key: `"sha256:"` followed by 64 lowercase hex digits.

    API keys are long random tokens (see `generate_key`), not passwords, so an unsalted
    SHA-256 is the standard for them: a key cannot be guessed from its hash, and an
    unsalted hash lets `KeyRing` compare a presented key's one hash with every stored
    hash instead of hashing it again under every stored salt.

    Examples
    --------
    >>> hash_key("abc")
    'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    """
    return _HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new random API key (256 bits, URL-safe text), e.g. for `make demo` to print."""
    return secrets.token_urlsafe(32)


class ApiKeyEntry(StrictConfig):
    """One API key as the serve config stores it: its hash and the seller it belongs to.

    `seller_id` is `"*"` for an admin key. The raw key never appears in a config; compute
    the hash with `hash_key`.
    """

    key_hash: str
    seller_id: str

    @field_validator("key_hash", mode="before")
    @classmethod
    def _check_hash(cls, value: object) -> str:
        text = value.strip().lower() if isinstance(value, str) else ""
        if not _HASH_RE.fullmatch(text):
            # The value is not repeated here: a malformed hash may be a raw key pasted by
            # mistake.
            raise ValueError(
                "key_hash must be 'sha256:' followed by 64 hex digits; store the hash of "
                "the key (serving.auth.hash_key(key)), never the key itself"
            )
        return text

    @field_validator("seller_id")
    @classmethod
    def _check_seller(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError(f"seller_id must name a seller, or be '{ADMIN}' for an admin key")
        return value

    @property
    def admin(self) -> bool:
        """Whether this is an admin key (all sellers)."""
        return self.seller_id == ADMIN


def parse_env_keys(text: str) -> list[ApiKeyEntry]:
    """Parse the `RECSYS_API_KEYS` value into entries, hashing each key at once.

    `text` is comma-separated `key:seller_id` pairs; `key:*` is an admin key. Whitespace
    around entries and parts is ignored, and so are empty entries. The key ends at the
    first colon (keys from `generate_key` hold none), so a seller id may contain colons.

    Raises `ValueError` for a malformed entry, naming its position (1-based) and the
    expected form but never the entry itself, since it holds a secret key.

    Examples
    --------
    >>> [e.seller_id for e in parse_env_keys(" 0123456789abcdef:s1 ,, fedcba9876543210:* ")]
    ['s1', '*']
    """
    entries: list[ApiKeyEntry] = []
    parts = text.split(",")
    for position, part in enumerate(parts, start=1):
        entry = part.strip()
        if not entry:
            continue
        key, sep, seller = (p.strip() for p in entry.partition(":"))
        problem = _env_entry_problem(key, sep, seller)
        if problem:
            raise ValueError(
                f"{ENV_VAR}: entry {position} of {len(parts)} {problem}; the entry is not "
                f"shown because it holds a secret key. Fix: {_ENV_FORM}"
            )
        entries.append(ApiKeyEntry(key_hash=hash_key(key), seller_id=seller))
    return entries


def _env_entry_problem(key: str, sep: str, seller: str) -> str:
    """What is wrong with one `key:seller_id` entry ("" if nothing)."""
    if not sep:
        return "has no ':' between the key and the seller id"
    if not key:
        return "has an empty key"
    if not seller:
        return f"has no seller id after ':' (use '{ADMIN}' for an admin key)"
    if any(c.isspace() for c in key):
        return "has whitespace inside the key"
    if len(key) < MIN_KEY_LENGTH:
        return f"has a key shorter than {MIN_KEY_LENGTH} characters, which is too easy to guess"
    return ""


# --------------------------------------------------------------------------- errors


class AccessError(Exception):
    """A request may not proceed; `status` is the HTTP status to answer with."""

    status: int = 403

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """Extra HTTP response headers the answer should carry."""
        return {}


class AuthError(AccessError):
    """No valid API key was presented (HTTP 401)."""

    status = 401

    @property
    def headers(self) -> dict[str, str]:
        # RFC 6750: a 401 names the scheme the client should use.
        return {"WWW-Authenticate": "Bearer"}


class ForbiddenError(AccessError):
    """A valid API key asked for data of a seller it does not belong to (HTTP 403)."""

    status = 403


# --------------------------------------------------------------------------- principals


@dataclass(frozen=True)
class Principal:
    """Who is calling: one seller (`seller_id`), or an admin (`seller_id` None).

    A seller key may access only its own seller. Platform-wide offers (seller None) are
    not any seller's, so only an admin key may access them: a seller ranks and sees just
    what it owns, and never another party's promotion.
    """

    seller_id: str | None
    admin: bool

    def __post_init__(self) -> None:
        if self.admin != (self.seller_id is None):
            raise ValueError(
                "a Principal is either an admin (seller_id=None, admin=True) or one seller "
                f"(seller_id set, admin=False); got seller_id={self.seller_id!r}, "
                f"admin={self.admin}"
            )

    def may_access(self, seller_id: str | None) -> bool:
        """Whether this caller may see and rank data of `seller_id` (None: platform-wide)."""
        if self.admin:
            return True
        return seller_id is not None and seller_id == self.seller_id


ADMIN_PRINCIPAL = Principal(seller_id=None, admin=True)


class KeyRing:
    """The accepted API keys (hashes only), answering who a request's key belongs to.

    Built from the serve config's entries and those of `RECSYS_API_KEYS` (see
    `from_sources`). A hash listed twice for the same seller is fine; for two different
    sellers it is a configuration error, raised here rather than at the first request.
    """

    def __init__(self, entries: Iterable[ApiKeyEntry]) -> None:
        by_hash: dict[str, ApiKeyEntry] = {}
        for entry in entries:
            known = by_hash.setdefault(entry.key_hash, entry)
            if known.seller_id != entry.seller_id:
                raise ValueError(
                    f"the API key with hash {entry.key_hash[:19]}... is listed for two "
                    f"sellers, {known.seller_id!r} and {entry.seller_id!r}; a key belongs to "
                    f"one seller (or is an admin key '{ADMIN}'): remove one of the entries "
                    f"from the serve config or {ENV_VAR}"
                )
        self._by_hash = by_hash
        self._hashes = tuple(by_hash.values())
        if not by_hash:
            log.warning(
                "no API keys are configured, so every request will be refused with 401; "
                "add api key entries to the serve config or set %s",
                ENV_VAR,
            )

    @classmethod
    def from_sources(
        cls, config_entries: Iterable[ApiKeyEntry] = (), env: Mapping[str, str] | None = None
    ) -> KeyRing:
        """Keys of the serve config plus those of `RECSYS_API_KEYS` in `env` (os.environ)."""
        env = os.environ if env is None else env
        return cls([*config_entries, *parse_env_keys(env.get(ENV_VAR, ""))])

    def __len__(self) -> int:
        return len(self._by_hash)

    def knows(self, key_hash: str) -> bool:
        """Whether a key with this stored hash is still configured (a seller-page session
        lives only as long as the key that opened it)."""
        found = False
        for stored in self._hashes:
            found |= hmac.compare_digest(stored.key_hash, key_hash)
        return found

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller that the `Authorization` header value identifies.

        Raises `AuthError` (401) when the header is missing, is not `Bearer <key>`, or
        holds an unknown key. The presented key is hashed, and its hash is compared with
        every stored hash by `hmac.compare_digest`, without stopping at a match: no raw key
        is ever compared or kept, and the time taken does not depend on which key, if any,
        matched, nor on how much of a stored hash a presented one shares.
        """
        return self.authenticate_key(_bearer_token(authorization))

    def authenticate_key(self, key: str) -> Principal:
        """The caller a raw key identifies (the seller page's login form and cookie);
        `AuthError` (401) when it is empty or unknown. Same rules as `authenticate`."""
        if not key or not key.strip():
            raise AuthError(f"missing API key. Fix: send the header '{HEADER_FORM}'")
        presented = hash_key(key.strip())
        entry: ApiKeyEntry | None = None
        for stored in self._hashes:  # every one, each in constant time: no early exit
            if hmac.compare_digest(stored.key_hash, presented):
                entry = stored
        if entry is None:
            raise AuthError(
                f"unknown API key. Fix: send a key issued for this service as the header "
                f"'{HEADER_FORM}'"
            )
        if entry.admin:
            return ADMIN_PRINCIPAL
        return Principal(seller_id=entry.seller_id, admin=False)

    @staticmethod
    def authorize(principal: Principal, seller_id: str | None) -> None:
        """Raise `ForbiddenError` (403) unless `principal` may access `seller_id`'s data."""
        if principal.may_access(seller_id):
            return
        if seller_id is None:
            raise ForbiddenError(
                f"this API key belongs to seller {principal.seller_id!r}; platform-wide "
                "offers (no seller) need an admin key"
            )
        raise ForbiddenError(
            f"this API key belongs to seller {principal.seller_id!r} and may not access "
            f"seller {seller_id!r}; use a key of seller {seller_id!r} or an admin key"
        )


def _bearer_token(authorization: str | None) -> str:
    """The key in an `Authorization: Bearer <key>` header value, or `AuthError` (401).

    The scheme is matched case-insensitively (RFC 7235); no part of the header is ever
    quoted in an error.
    """
    if authorization is None or not authorization.strip():
        raise AuthError(f"missing API key. Fix: send the header '{HEADER_FORM}'")
    parts = authorization.split()
    if parts[0].lower() != "bearer":
        # The first word is not quoted: a client that forgot the scheme sent its key there.
        raise AuthError(
            f"the Authorization header does not use the Bearer scheme. "
            f"Fix: send the header '{HEADER_FORM}'"
        )
    if len(parts) != 2:
        what = "holds no key" if len(parts) == 1 else "holds more than one word after Bearer"
        raise AuthError(f"the Authorization header {what}. Fix: send the header '{HEADER_FORM}'")
    return parts[1]
