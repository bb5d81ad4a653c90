"""Who may call which HTTP route: authentication and authorisation at the edge, for every route.

Each route says what it needs in its handler ``opt``: ``{"role": "reader" | "auditor" | "admin" |
"publisher"}`` (no role: ``reader``, so a route someone forgets is closed, not open),
``{"role": "any"}`` (any principal but a feed: a gate's sign-off), ``{"public": True}`` (health
and readiness only), ``{"feed": True}`` (a feed token may travel in the URL as ``?token=``:
calendar clients cannot send headers; with ``"across_projects": True`` a route that names no
project serves a feed token its own projects only), ``{"role_for": f}`` (the role depends on
the query string: ``f(params)``, the registry's ``Query.role_for``, asks for admin when a
parameter changes state), ``{"login": True}`` (the sign-in and sign-out forms, which check their
own CSRF tokens).

A request is authenticated by ``Authorization: Bearer <token>``, by a feed token in the URL, or
by a dashboard session cookie (a browser has no bearer header: ``/ui/login`` asks for the token
once and keeps a server-side session; the cookie holds a random session id, never the token).
Missing or unknown: 401 ``unauthenticated`` (browser pages under ``/ui`` are sent to the sign-in
form instead); known but not allowed: 403 ``forbidden``. A session stays alive only while its
credential does: a revoked credential's session ends at its next request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import structlog
from litestar import Request, Response, get, post
from litestar.response import Redirect
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from events import ENCODER, Reply
from services.auth.jwt import expires_at
from services.auth.principal import Authenticator, Principal
from services.dashboard import layout

log = structlog.get_logger("milestones.http")

SESSION_COOKIE = "milestones_session"
LOGIN_COOKIE = "milestones_login"  # the sign-in form's CSRF nonce (signed double submit)
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SESSION_TTL_S = 12 * 3600
LOGIN_FORM_TTL_S = 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HTML = "text/html; charset=utf-8"


@dataclass
class Session:
    principal: Principal  # as verified at sign-in
    expires: float  # wall-clock seconds
    csrf: str  # the synchronizer token every state-changing request of this session carries


class Sessions:
    """Dashboard sessions, in memory (a restart signs browsers out; the token is asked again)."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        ttl_s: float = SESSION_TTL_S,
        limit: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authenticator = authenticator
        self.ttl_s, self.limit, self.clock = ttl_s, limit, clock
        self._table: dict[str, Session] = {}
        self._login_key = secrets.token_bytes(32)  # signs the sign-in form's CSRF tokens

    def open(self, principal: Principal, token_expires: float | None = None) -> tuple[str, Session]:
        now = self.clock()
        for sid in [s for s, session in self._table.items() if session.expires <= now]:
            del self._table[sid]
        while len(self._table) >= self.limit:  # the oldest sign-in goes first
            del self._table[next(iter(self._table))]
        expires = now + self.ttl_s
        if token_expires is not None:  # a JWT's session ends with the JWT
            expires = min(expires, token_expires)
        session_id = secrets.token_urlsafe(32)  # 256 random bits
        session = Session(principal, expires, secrets.token_urlsafe(32))
        self._table[session_id] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        session = self._table.get(session_id)
        if session is not None and session.expires <= self.clock():
            del self._table[session_id]
            return None
        return session

    def principal(self, session_id: str) -> tuple[Principal, Session] | None:
        """The session's principal as it stands now: a revoked credential's session ends here."""
        session = self.get(session_id)
        if session is None:
            return None
        signed_in = session.principal
        if signed_in.via == "jwt":  # nothing to ask again: valid until its exp, which bounds it
            return signed_in, session
        live = self.authenticator.by_credential(signed_in.id)
        if live is None:
            self.close(session_id)
            return None
        return dataclasses.replace(live, via=signed_in.via), session

    def close(self, session_id: str) -> None:
        self._table.pop(session_id, None)

    def login_csrf(self, nonce: str) -> str:
        return hmac.new(self._login_key, b"login\0" + nonce.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    clear_session: bool = False
    principal: Principal | None = None  # who was refused, when known (for the log)


def _refuse(
    status: int, message: str, *, clear_session: bool = False, who: Principal | None = None
) -> Refusal:
    code = "unauthenticated" if status == 401 else "forbidden"
    return Refusal(status, code, message, clear_session, who)


@dataclass(frozen=True)
class Identified:
    principal: Principal
    how: str  # bearer | url | session
    session: Session | None = None


class AuthMiddleware:
    """Runs after routing, so it reads the matched route's ``opt`` and path parameters."""

    def __init__(self, app: ASGIApp, *, authenticator: Authenticator, sessions: Sessions) -> None:
        self.app = app
        self.authenticator = authenticator
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # there are no websocket routes; refuse any that appear
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": ""})
                return
            await self.app(scope, receive, send)
            return
        handler = scope.get("route_handler")
        opt: Mapping[str, Any] = getattr(handler, "opt", None) or {}
        if opt.get("public") or opt.get("login"):
            await self.app(scope, receive, send)
            return
        request: Request = Request(scope, receive)
        found = await self.identify(request, opt)
        refusal = found if isinstance(found, Refusal) else await authorize(found, opt, request)
        if refusal is not None:
            who = found.principal if isinstance(found, Identified) else refusal.principal
            log.info(
                "http refused",
                status=refusal.status,
                code=refusal.code,
                method=request.method,
                path=scope["path"],
                principal=who.id if who is not None else None,
            )
            await _respond(send, request, refusal)
            return
        assert isinstance(found, Identified)
        scope["user"] = found.principal
        scope["auth"] = found.how
        if found.session is not None:  # pages with a form carry the session's CSRF token
            scope["csrf"] = found.session.csrf  # type: ignore[typeddict-unknown-key]
        with structlog.contextvars.bound_contextvars(principal=found.principal.id):
            await self.app(scope, receive, send)

    async def identify(self, request: Request, opt: Mapping[str, Any]) -> Identified | Refusal:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return _refuse(401, "send the credential as Authorization: Bearer <token>")
            principal = await self.authenticator.bearer(token.strip())
            if principal is None:
                return _refuse(401, "the bearer token is unknown, revoked, expired or invalid")
            return Identified(principal, "bearer")
        in_url = request.query_params.get("token")
        if in_url is not None:
            principal = await self.authenticator.bearer(in_url)
            if principal is None:
                return _refuse(401, "the token in the URL is unknown, revoked or invalid")
            if principal.role != "feed":
                return _refuse(
                    403,
                    "only a feed token may travel in a URL (URLs end up in logs and histories): "
                    "send this credential as Authorization: Bearer <token>, and revoke it if the "
                    "URL was shared",
                    who=principal,
                )
            if not opt.get("feed"):
                return _refuse(
                    403, "a feed token reads only calendar feeds, not this route", who=principal
                )
            return Identified(principal, "url")
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            live = self.sessions.principal(session_id)
            if live is None:
                return _refuse(
                    401,
                    "the dashboard session has ended (signed out, expired or revoked): sign in "
                    "again at /ui/login",
                    clear_session=True,
                )
            return Identified(live[0], "session", live[1])
        return _refuse(401, "no credential: send Authorization: Bearer <token>")


async def authorize(found: Identified, opt: Mapping[str, Any], request: Request) -> Refusal | None:
    principal = found.principal
    need = opt.get("role", "reader")
    if "role_for" in opt:
        need = opt["role_for"](dict(request.query_params))
    if principal.role == "feed":
        if not opt.get("feed") or need != "reader":
            return _refuse(403, "a feed token reads only calendar feeds, not this route")
    elif need != "any" and not principal.may(need):
        return _refuse(
            403,
            f"{request.method} {request.url.path} needs the {need} role; "
            f"credential {principal.id} is a {principal.role}",
        )
    projects = _projects_named(request)
    if principal.role == "feed" and (
        not principal.projects or not (projects or opt.get("across_projects"))
    ):
        return _refuse(403, "a feed token reads only the projects it names")
    refused = sorted(p for p in projects if not principal.may_project(p))
    if refused:
        return _refuse(403, f"credential {principal.id} may not read project {refused[0]}")
    if found.how == "session" and request.method not in SAFE_METHODS:
        assert found.session is not None
        if not hmac.compare_digest(await _csrf_given(request), found.session.csrf):
            return _refuse(
                403,
                f"a request with a dashboard session needs its CSRF token (header {CSRF_HEADER} "
                f"or form field {CSRF_FIELD}): reload the page",
            )
    return None


def _projects_named(request: Request) -> set[str]:
    """The projects a request is about: its path's project_id, or a project_id filter."""
    named = (
        {str(request.path_params["project_id"])} if "project_id" in request.path_params else set()
    )
    for value in request.query_params.getall("project_id", []):
        named |= {p.strip() for p in value.split(",") if p.strip()}
    return named


async def _csrf_given(request: Request) -> str:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type[0] in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        given = (await request.form()).get(CSRF_FIELD)  # cached: the handler reads it again
    return given if isinstance(given, str) else ""


def _is_page(request: Request) -> bool:
    path = request.url.path
    return path == "/" or path == "/ui" or path.startswith("/ui/")


async def _respond(send: Send, request: Request, refusal: Refusal) -> None:
    headers: list[tuple[bytes, bytes]] = [(b"cache-control", b"no-store")]
    if refusal.clear_session:
        headers.append((b"set-cookie", _expired_cookie(SESSION_COOKIE, "/").encode()))
    page = _is_page(request) and request.method in ("GET", "HEAD")
    if page and refusal.status == 401:  # a browser: to the sign-in form, and back here after
        here = request.url.path
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        if kept:
            here += "?" + urlencode(kept)
        headers.append((b"location", f"/ui/login?next={quote(here, safe='')}".encode()))
        status, body, media = 303, b"", "text/plain"
    elif page:
        status, media = refusal.status, HTML
        body = layout.error_page(refusal.status, refusal.message).encode()
    else:
        status, media = refusal.status, "application/json"
        body = ENCODER.encode(Reply.fail(refusal.code, refusal.message))
        if refusal.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="milestones"'))
    headers += [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": headers,
    }
    await send(start)
    done: HTTPResponseBodyEvent = {
        "type": "http.response.body",
        "body": b"" if request.method == "HEAD" else body,
        "more_body": False,
    }
    await send(done)


def _expired_cookie(name: str, path: str) -> str:
    return f"{name}=; Max-Age=0; Path={path}; HttpOnly; SameSite=Strict"


def safe_next(value: object) -> str:
    """Only a path on this site: never another origin (``//host``, ``/\\host``) after sign-in."""
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or any(ord(c) < 0x20 or c == "\\" for c in value)
    ):
        return "/ui"
    return value


def _html(body: str, status: int = 200) -> Response[str]:
    return Response(
        body, status_code=status, media_type=HTML, headers={"cache-control": "no-store"}
    )


def login_routes(sessions: Sessions, authenticator: Authenticator) -> list:
    """The dashboard's sign-in and sign-out. Each form carries a CSRF token: sign-in a signed
    double submit (there is no session yet), sign-out the session's own token."""

    def form(request: Request, next_url: str, message: str | None, status: int) -> Response[str]:
        nonce = secrets.token_urlsafe(32)
        response = _html(layout.login_page(next_url, sessions.login_csrf(nonce), message), status)
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=LOGIN_FORM_TTL_S,
            path="/ui/login",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    @get("/ui/login", opt={"login": True}, include_in_schema=False)
    async def login_form(request: Request) -> Response[str]:
        return form(request, safe_next(request.query_params.get("next")), None, 200)

    @post("/ui/login", opt={"login": True}, include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = await request.form()
        next_url = safe_next(fields.get("next"))
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        given = fields.get(CSRF_FIELD)
        if not nonce or not hmac.compare_digest(
            given if isinstance(given, str) else "", sessions.login_csrf(nonce)
        ):
            return form(request, next_url, "The sign-in form expired: sign in again.", 403)
        token = str(fields.get("token") or "").strip()
        principal = await authenticator.bearer(token) if token else None
        if principal is None:
            log.info("dashboard sign-in refused", reason="unknown token")
            return form(request, next_url, "That token is unknown, revoked or expired.", 401)
        if not principal.may("reader"):
            log.info("dashboard sign-in refused", principal=principal.id, role=principal.role)
            message = f"A {principal.role} credential cannot open the dashboard: use a reader's."
            return form(request, next_url, message, 403)
        session_id, _ = sessions.open(
            principal, expires_at(token) if principal.via == "jwt" else None
        )
        log.info("dashboard sign-in", principal=principal.id)
        response: Response = Redirect(next_url, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(sessions.ttl_s),
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        response.set_cookie(
            LOGIN_COOKIE, "", max_age=0, path="/ui/login", httponly=True, samesite="strict"
        )
        return response

    @get("/ui/logout", opt={"role": "reader"}, include_in_schema=False)
    async def logout_form(request: Request) -> Response:
        session = sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if session is None:  # signed in with a bearer header: nothing to sign out of
            return Redirect("/ui", status_code=303)
        return _html(layout.logout_page(request.user.id, session.csrf))

    @post("/ui/logout", opt={"login": True}, include_in_schema=False)
    async def logout(request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE, "")
        session = sessions.get(session_id)
        given = (await request.form()).get(CSRF_FIELD)
        if session is None or not hmac.compare_digest(
            given if isinstance(given, str) else "", session.csrf
        ):
            body = layout.error_page(403, "The sign-out form expired: reload it and sign out.")
            return _html(body, 403)
        sessions.close(session_id)
        log.info("dashboard sign-out", principal=session.principal.id)
        response: Response = Redirect("/ui/login", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, "", max_age=0, path="/", httponly=True, samesite="strict"
        )
        return response

    return [login_form, login, logout_form, logout]
