"""HTTP Basic authentication for the TAP service, mapped onto PostgreSQL reader logins.

An operator creates a login with ``dpdb db grant-reader NAME`` (a member of ``dpdb_reader``, with
the reader limits; its password is printed once). A client that sends ``Authorization: Basic``
with that name and password has its queries run as that login: PostgreSQL itself checks the
password (scram-sha-256 over TCP) and enforces what the login may read and its limits
(``ALTER ROLE NAME SET statement_timeout`` ...). A wrong name or password gets HTTP 401 with
``WWW-Authenticate: Basic``; a login that could write (superuser, loader) gets 403, as user SQL
never runs with write rights (:mod:`dpdb.readers`).

Anonymous requests run as the service's own query login (``dpdb_query``) when
:attr:`dpdb.tap.run.Limits.anonymous` is true (the default), and get 401 otherwise. The VOSI
endpoints (``/capabilities``, ``/availability``) stay public so clients can discover the service.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from ..errors import ConfigError, DpdbError

__all__ = ["Login", "LoginError", "Authenticator", "REALM"]

REALM = "dpdb TAP"
_PUBLIC = ("/capabilities", "/availability")
_VERIFIED_S = 60.0
"""A verified name and password is trusted this long without a new connection to check it."""


class LoginError(DpdbError):
    """The request's credentials are missing, wrong, or name a login that may write."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Login:
    name: str
    archive: Any
    """The :class:`dpdb.Archive` whose reader login is this user's (``DPDB_READER_DSN`` set to it)."""


def _login_conninfo(settings: Any, name: str, password: str) -> str:
    """libpq connection string of reader login ``name`` (TCP: the server checks the password)."""
    from ..pg import server_for

    server = server_for(settings)
    if server is not None:
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1", port=server.port, dbname=settings.database, user=name, password=password
        )
    base = settings.reader_dsn or settings.dsn
    if base is None:
        raise ConfigError("no database to authenticate against: set DPDB_DSN")
    return psycopg.conninfo.make_conninfo(base, user=name, password=password)


class Authenticator:
    """Maps a request's ``Authorization`` header onto a :class:`Login` (see the module)."""

    def __init__(self, archive: Any, anonymous: bool = True) -> None:
        self.archive = archive
        self.anonymous = anonymous
        self._lock = threading.Lock()
        self._verified: dict[tuple[str, str], tuple[float, Login]] = {}

    def public(self, path: str) -> bool:
        return path.rstrip("/").endswith(_PUBLIC)

    def login(self, authorization: str | None) -> Login | None:
        """The login of a request (None: anonymous, allowed). Raises :class:`LoginError` (401/403)."""
        if not authorization:
            if self.anonymous:
                return None
            raise LoginError("this service requires a login: send HTTP Basic credentials of a reader login")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise LoginError(f"authorization scheme {scheme!r} is not supported: use HTTP Basic")
        try:
            name, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise LoginError("malformed HTTP Basic credentials") from None
        if not sep or not name:
            raise LoginError("malformed HTTP Basic credentials (name:password)")
        key = (name, hashlib.sha256(password.encode()).hexdigest())
        now = time.monotonic()
        with self._lock:
            found = self._verified.get(key)
        if found is not None and now - found[0] < _VERIFIED_S:
            return found[1]
        login = self._verify(name, password)
        with self._lock:
            self._verified[key] = (now, login)
        return login

    def _verify(self, name: str, password: str) -> Login:
        from ..readers import _check_reader

        settings = self.archive.settings
        info = _login_conninfo(settings, name, password)
        try:
            with psycopg.connect(info, connect_timeout=10) as conn:
                _check_reader(conn, info)
                row = conn.execute(
                    "SELECT setting::int8 FROM pg_settings WHERE name = 'statement_timeout'"
                ).fetchone()
        except psycopg.OperationalError as e:
            text = str(e)
            if "password authentication failed" in text or "does not exist" in text:
                raise LoginError(f"login {name}: wrong name or password") from None
            raise LoginError(f"login {name}: cannot reach the database ({text.splitlines()[0]})", 503) from e
        except ConfigError as e:
            raise LoginError(f"login {name} may write; the service runs user queries only as readers "
                             f"({e})", 403) from e  # fmt: skip
        update: dict[str, Any] = {"reader_dsn": info}
        own_ms = int(row[0]) if row else 0
        if 0 < own_ms < settings.reader_statement_timeout * 1000:  # the login's own limit is stricter
            update["reader_statement_timeout"] = own_ms / 1000
        # the service's archive class (dpdb.Archive) on the login's settings; no import of the API here
        return Login(name, type(self.archive)(settings=settings.model_copy(update=update)))


class BasicAuthMiddleware:
    """ASGI middleware: requests under ``prefix`` (but the public VOSI ones) get their login in
    ``scope['state']['tap_login']`` (None: anonymous), or a 401/403 TAP error document."""

    def __init__(self, app: Any, authenticator: Authenticator, prefix: str = "/tap") -> None:
        self.app = app
        self.auth = authenticator
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(self.prefix) or self.auth.public(path):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        header = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), None)
        try:
            anonymous = header is None and self.auth.anonymous
            login = None if anonymous else await _in_thread(self.auth.login, header)
        except LoginError as e:
            from starlette.responses import Response

            from .output import VOTABLE_MIME, error_votable

            challenge = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
            response = Response(error_votable(str(e)), status_code=e.status,
                                headers=challenge if e.status == 401 else {},
                                media_type=VOTABLE_MIME)  # fmt: skip
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["tap_login"] = login
        await self.app(scope, receive, send)


async def _in_thread(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)
