"""Sessions of the seller page: signed, expiring, revocable tokens in the login cookie.

Signing in with an API key sets the cookie `COOKIE` to a session token, never the key:

- the token is signed (`itsdangerous`, HMAC-SHA256 with the deployment's secret) and
  carries a random session id, the seller it is bound to and when it was issued;
- the session is also recorded server side (one small file per session under the
  sessions directory, which every replica shares), with its expiry and the hash of the
  key that opened it. A token is accepted only while its record exists, is unexpired
  and names the same seller, and while that key is still configured: signing out
  deletes the record (`revoke`), so a copied cookie is refused from then on by every
  replica, and removing a key ends its sessions;
- a token is not an API key: `Authorization: Bearer <token>` is an unknown key (401),
  since keys are checked only against the configured key hashes.

The secret comes from `RECSYS_SESSION_SECRET` (at least 32 characters), else from the
file `secret` in the sessions directory, made at random (mode 0600) by the first replica
that needs it. Without a directory (tests, one process) everything stays in memory.

Pure Python (no Ray, no web framework).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from serving.auth import ADMIN, ADMIN_PRINCIPAL, AuthError, KeyRing, Principal

COOKIE = "recsys_session"
"""The seller page's cookie: a session token (never an API key)."""

SECRET_ENV = "RECSYS_SESSION_SECRET"
"""Environment variable holding the signing secret shared by the replicas."""

MIN_SECRET_LENGTH = 32

DEFAULT_TTL = timedelta(hours=8)

_SALT = "recsys-seller-session"
_SIGN_IN_AGAIN = "Fix: sign in again on the seller page"


class SessionStore:
    """Issues, checks and revokes seller-page sessions (see the module docstring).

    Parameters
    ----------
    directory
        Where session records and the generated secret live, shared by every replica;
        None: in this process's memory only.
    ttl
        How long a session lasts after sign-in.
    secret
        The signing secret; None: `RECSYS_SESSION_SECRET`, else the directory's file,
        else (no directory) a random one.
    clock
        Seconds since the epoch (tests move it).
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        ttl: timedelta = DEFAULT_TTL,
        secret: str | bytes | None = None,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError(f"a session must last a positive time (got {ttl})")
        self.directory = None if directory is None else Path(directory)
        self.ttl = ttl
        self.clock = clock
        self._memory: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()
        key = secret if secret is not None else self._secret(os.environ if env is None else env)
        store = self

        class _Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(store.clock())

        self._serializer = URLSafeTimedSerializer(
            key,
            salt=_SALT,
            signer=_Signer,
            signer_kwargs={"digest_method": hashlib.sha256},
        )

    # ----------------------------------------------------------------------- lifecycle

    def issue(self, principal: Principal, key_hash: str) -> str:
        """A new session for `principal`, opened with the key whose stored hash is
        `key_hash`; the token to set as the cookie."""
        sid = secrets.token_urlsafe(24)
        seller = ADMIN if principal.admin else str(principal.seller_id)
        record = {"seller": seller, "expires": self.clock() + self.ttl.total_seconds()}
        record["key"] = key_hash
        self._purge_expired()
        self._write(sid, record)
        return str(self._serializer.dumps({"sid": sid, "seller": seller}))

    def verify(self, token: str, keyring: KeyRing) -> Principal:
        """The caller a session token identifies; `AuthError` (401) when it is forged,
        expired, signed out, or its key is no longer configured."""
        try:
            payload = self._serializer.loads(token, max_age=int(self.ttl.total_seconds()))
        except SignatureExpired:
            raise AuthError(f"the session has expired. {_SIGN_IN_AGAIN}") from None
        except BadSignature:
            raise AuthError(f"the session cookie is not valid here. {_SIGN_IN_AGAIN}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("sid"), str):
            raise AuthError(f"the session cookie is not valid here. {_SIGN_IN_AGAIN}")
        record = self._read(payload["sid"])
        if record is None:
            raise AuthError(f"this session was signed out. {_SIGN_IN_AGAIN}")
        expires = record.get("expires")
        if not isinstance(expires, int | float) or expires <= self.clock():
            raise AuthError(f"the session has expired. {_SIGN_IN_AGAIN}")
        seller = record.get("seller")
        if not isinstance(seller, str) or not hmac.compare_digest(seller, str(payload["seller"])):
            raise AuthError(f"the session cookie is not valid here. {_SIGN_IN_AGAIN}")
        key = record.get("key")
        if not isinstance(key, str) or not keyring.knows(key):
            raise AuthError(f"the key this session was opened with was removed. {_SIGN_IN_AGAIN}")
        return ADMIN_PRINCIPAL if seller == ADMIN else Principal(seller_id=seller, admin=False)

    def revoke(self, token: str) -> bool:
        """End the session of `token` for every replica; whether there was one. A
        forged or expired token ends nothing."""
        try:
            payload = self._serializer.loads(token)
        except BadSignature:
            return False
        if not isinstance(payload, dict) or not isinstance(payload.get("sid"), str):
            return False
        return self._delete(payload["sid"])

    # ----------------------------------------------------------------------- records

    def _secret(self, env: Mapping[str, str]) -> str:
        given = env.get(SECRET_ENV, "")
        if given:
            if len(given) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"{SECRET_ENV} must be at least {MIN_SECRET_LENGTH} characters long (it "
                    "signs the seller page's sessions); make one with "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
            return given
        if self.directory is None:
            return secrets.token_urlsafe(32)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "secret"
        made = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            for _ in range(50):  # another replica may be writing it right now
                text = path.read_text().strip()
                if len(text) >= MIN_SECRET_LENGTH:
                    return text
                time.sleep(0.02)
            raise ValueError(
                f"the session secret file {path} is shorter than {MIN_SECRET_LENGTH} "
                f"characters; delete it (every session ends) or set {SECRET_ENV}"
            ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(made)
            handle.flush()
            os.fsync(handle.fileno())
        return made

    def _path(self, sid: str) -> Path:
        assert self.directory is not None
        return self.directory / ("s-" + hashlib.sha256(sid.encode()).hexdigest())

    def _write(self, sid: str, record: dict[str, object]) -> None:
        if self.directory is None:
            with self._lock:
                self._memory[sid] = record
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self._path(sid)
        tmp = final.with_name("." + final.name + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, final)

    def _read(self, sid: str) -> dict[str, object] | None:
        if self.directory is None:
            with self._lock:
                return self._memory.get(sid)
        try:
            record = json.loads(self._path(sid).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _delete(self, sid: str) -> bool:
        if self.directory is None:
            with self._lock:
                return self._memory.pop(sid, None) is not None
        try:
            self._path(sid).unlink()
        except FileNotFoundError:
            return False
        return True

    def _purge_expired(self) -> None:
        """Forget expired sessions (at each sign-in, so records never pile up)."""
        now = self.clock()
        if self.directory is None:
            with self._lock:
                for sid in [s for s, r in self._memory.items() if _expired(r, now)]:
                    del self._memory[sid]
            return
        with contextlib.suppress(OSError):
            for path in self.directory.glob("s-*"):
                try:
                    record = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if isinstance(record, dict) and _expired(record, now):
                    path.unlink(missing_ok=True)


def _expired(record: Mapping[str, object], now: float) -> bool:
    expires = record.get("expires")
    return not isinstance(expires, int | float) or expires <= now
