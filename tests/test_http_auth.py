"""Who may call which HTTP route (issue 12, requirement 4): every route but /health needs a
credential; each role is allowed its routes and refused the others; project-limited and feed
credentials stay within their projects; the dashboard signs in once with a session cookie that
dies with its credential and guards every state-changing request with a CSRF token.

The routes are read from the app itself, so a new route is covered the day it is added. The
credentials are in memory (tests/conftest.py); JWTs are checked against a JWKS served here.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from litestar import MediaType, Request, get, post

from services.app import auth_http
from services.app.auth_http import SESSION_COOKIE, Sessions
from services.app.http import build_http_app
from services.auth.jwt import JwtVerifier
from services.auth.principal import Principal
from tests.conftest import (
    TEST_TOKENS,
    MemoryAuthenticator,
    auth_headers,
    caught_up,
    cloudevent,
    plan_project,
    request,
)

DUMMY = {"project_id": "p1", "milestone_id": "m1"}  # path parameters; any other: "x"


def routes(app) -> Iterator[tuple[str, str, dict]]:
    """(method, path with parameters filled in, opt) of every route handler of the app."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            path = re.sub(r"{(\w+)(?::\w+)?}", lambda m: DUMMY.get(m.group(1), "x"), route.path)
            for method in sorted(handler.http_methods):
                yield method, path, dict(handler.opt or {})


def client(app, base: str = "http://test") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base, timeout=30, follow_redirects=False
    )


def refused(r: httpx.Response, status: int, code: str) -> bool:
    body = r.json()
    return (
        r.status_code == status
        and body["accepted"] is False
        and body["error"]["code"] == code
        and bool(body["error"]["message"])
    )


@pytest.fixture
async def full(system, nc, db_url, authenticator):
    """Every route of `milestones dev` (intake, queries, dashboard) over one seeded project p1."""
    reply = await request(nc, plan_project("p1", "m1") + plan_project("p2", "m2"))
    assert reply.accepted, reply
    await caught_up(db_url, reply.events[-1].position)
    return build_http_app(
        system.intake,
        max_body=256 * 1024,
        authenticator=authenticator,
        extra_handlers=system.http_handlers,
    )


# -- every route -----------------------------------------------------------------------------
async def test_every_route_but_health_needs_a_credential(full):
    seen = 0
    async with client(full) as http:
        for method, path, opt in routes(full):
            if opt.get("login"):  # the sign-in forms: checked in the session tests below
                continue
            for headers in ({}, {"Authorization": "Bearer not-a-token"}):
                r = await http.request(method, path, headers=headers)
                seen += 1
                if opt.get("public"):
                    assert path in ("/health", "/ready") and r.status_code == 200, path
                elif method == "GET" and (path == "/" or path.startswith("/ui")):
                    # a browser is sent to the sign-in form, and back here afterwards
                    assert r.status_code == 303, (method, path, r.status_code)
                    location = r.headers["location"]
                    assert location.startswith("/ui/login?next="), location
                    assert parse_qs(urlsplit(location).query)["next"] == [path]
                else:
                    assert refused(r, 401, "unauthenticated"), (method, path, r.text)
                    assert r.headers["www-authenticate"].startswith("Bearer"), path
    assert seen > 80  # every route of the app, not a handful
    assert {p for _, p, o in routes(full) if o.get("public")} <= {"/health", "/ready"}


async def test_each_role_is_allowed_its_routes_and_refused_the_others(full):
    async with client(full) as http:

        async def status(role: str, method: str, path: str, **kw) -> int:
            r = await http.request(method, path, headers=auth_headers(role), **kw)
            if r.status_code in (401, 403) and r.headers["content-type"].startswith("app"):
                assert r.json()["error"]["code"] in ("unauthenticated", "forbidden"), r.text
            return r.status_code

        event = cloudevent("ProjectCreated", {"project_id": "p9", "name": "Nine"})
        cases = [
            ("reader", "GET", "/projects/p1/milestones", 200),
            ("reader", "GET", "/ui/projects/p1", 200),
            ("reader", "GET", "/projects/p1/digest", 200),
            ("reader", "GET", "/projects/p1/digest?send=true", 403),  # changes state: admin
            ("reader", "GET", "/audit", 403),
            ("reader", "GET", "/audit?format=csv", 403),
            ("reader", "GET", "/ui/audit", 403),
            ("reader", "GET", "/rejections", 403),
            ("reader", "GET", "/deliveries", 403),
            ("reader", "GET", "/parked", 403),
            ("reader", "POST", "/events", 403),
            ("auditor", "GET", "/audit", 200),
            ("auditor", "GET", "/audit?format=csv", 200),
            ("auditor", "GET", "/ui/audit", 200),
            ("auditor", "GET", "/rejections", 200),
            ("auditor", "GET", "/projects/p1/milestones", 200),
            ("auditor", "GET", "/deliveries", 403),
            ("auditor", "GET", "/parked", 403),
            ("auditor", "POST", "/deliveries/d1/retry", 403),
            ("auditor", "POST", "/projects/p1/digest", 403),
            ("publisher", "GET", "/projects/p1/milestones", 403),
            ("publisher", "GET", "/ui", 403),
            ("publisher", "GET", "/metrics", 403),
            ("admin", "GET", "/deliveries", 200),
            ("admin", "GET", "/parked", 200),
            ("admin", "GET", "/projects/p1/digest?send=true", 200),
            ("admin", "POST", "/events", 403),  # an admin reads and operates; it does not publish
        ]
        for role, method, path, expected in cases:
            assert await status(role, method, path) == expected, (role, method, path)
        assert await status("publisher", "POST", "/events", json=event) == 202

        # an admin may read everything: no read route refuses it
        for method, path, opt in routes(full):
            if method == "GET" and path != "/ui/live" and not opt.get("login"):
                assert await status("admin", method, path) not in (401, 403), path
        # and every route that changes state is an admin's (or a publisher's: /events), but a
        # decision gate's sign-off: any principal but a feed, the gate says who (test_gates.py)
        for method, path, opt in routes(full):
            if method not in ("GET", "OPTIONS") and opt.get("role") == "any":
                # no body: invalid (the dashboard's form says so on the page it returns to)
                expected = 303 if path.startswith("/ui/") else 400
                assert await status("reader", method, path) == expected, (method, path)
                continue
            if method not in ("GET", "OPTIONS") and not opt.get("login"):
                assert await status("auditor", method, path) == 403, (method, path)
                assert path == "/events" or opt.get("role") == "admin", path


async def test_the_publisher_reaches_the_intake_as_itself(full):
    async with client(full) as http:
        ok = cloudevent("ProjectCreated", {"project_id": "p7", "name": "Seven"})
        r = await http.post("/events", json=ok, headers=auth_headers("publisher"))
        assert r.status_code == 202 and r.json()["accepted"]
        # the intake judged the source by this credential (sources: tests, test), not the body
        forged = cloudevent("ProjectCreated", {"project_id": "p8", "name": "E"}, source="ci")
        r = await http.post("/events", json=forged, headers=auth_headers("publisher"))
        assert refused(r, 403, "forbidden") and "test-publisher" in r.json()["error"]["message"]


async def test_a_project_limited_credential_reads_only_its_projects(full, authenticator):
    authenticator.add("only-p1", Principal(id="r-p1", role="reader", projects=frozenset({"p1"})))
    authenticator.add("aud-p1", Principal(id="a-p1", role="auditor", projects=frozenset({"p1"})))
    mine = {"Authorization": "Bearer only-p1"}
    async with client(full) as http:
        assert (await http.get("/projects/p1/milestones", headers=mine)).status_code == 200
        assert (await http.get("/ui/projects/p1/report", headers=mine)).status_code == 200
        for path in ("/projects/p2/milestones", "/projects/p2", "/projects/p2/report"):
            r = await http.get(path, headers=mine)
            assert refused(r, 403, "forbidden") and "p2" in r.json()["error"]["message"], path
        page = await http.get("/ui/projects/p2", headers=mine)
        assert page.status_code == 403 and "text/html" in page.headers["content-type"]
        audit = {"Authorization": "Bearer aud-p1"}
        assert (await http.get("/audit?project_id=p1", headers=audit)).status_code == 200
        assert refused(await http.get("/audit?project_id=p2", headers=audit), 403, "forbidden")


async def test_a_feed_token_travels_in_the_url_only_to_its_projects_feeds(full, authenticator):
    authenticator.add("feed-p1", Principal(id="feed-1", role="feed", projects=frozenset({"p1"})))
    authenticator.add("feed-any", Principal(id="feed-2", role="feed"))
    async with client(full) as http:
        r = await http.get("/projects/p1/milestones?token=feed-p1")
        assert r.status_code == 200 and r.json()["data"][0]["milestone_id"] == "m1"
        assert (await http.get("/projects/p1?token=feed-p1")).status_code == 200
        for path in (
            "/projects/p2/milestones?token=feed-p1",  # not its project
            "/projects/p1/report?token=feed-p1",  # not a feed route
            "/audit?token=feed-p1",
            "/ui/projects/p1?token=feed-p1",
            "/projects/p1/milestones?token=feed-any",  # a feed names its projects
            f"/projects/p1/milestones?token={TEST_TOKENS['reader']}",  # only feeds in URLs
        ):
            r = await http.get(path)
            assert r.status_code == 403, path
            if not path.startswith("/ui"):  # a page says it in HTML
                assert r.json()["error"]["code"] == "forbidden", path
        assert refused(await http.get("/projects/p1/milestones?token=nope"), 401, "unauthenticated")
        # as a header, the feed credential is no more than in the URL
        feed = {"Authorization": "Bearer feed-p1"}
        assert (await http.get("/projects/p1/milestones", headers=feed)).status_code == 200
        assert refused(await http.get("/projects/p1/trend", headers=feed), 403, "forbidden")


async def test_the_dashboard_signs_in_once_and_the_session_dies_with_the_credential(
    full, authenticator
):
    authenticator.add("reader-2", Principal(id="reader-2", role="reader"))
    async with client(full, "https://test") as http:
        first = await http.get("/ui/projects/p1")
        assert first.status_code == 303
        session = await sign_in(http, "reader-2", first.headers["location"])
        assert session.status_code == 303 and session.headers["location"] == "/ui/projects/p1"
        cookie = session.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=") and "reader-2" not in cookie
        for attribute in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/"):
            assert attribute.lower() in cookie.lower(), cookie
        page = await http.get("/ui/projects/p1")
        assert page.status_code == 200 and 'data-milestone="m1"' in page.text
        assert (await http.get("/projects/p1/milestones")).status_code == 200  # the API too
        assert (await http.get("/ui/audit")).status_code == 403  # still a reader

        authenticator.revoke("reader-2")  # the credential is gone: so is the session, now
        after = await http.get("/ui/projects/p1")
        assert after.status_code == 303 and after.headers["location"].startswith("/ui/login")
        assert refused(await http.get("/projects/p1/milestones"), 401, "unauthenticated")


async def sign_in(http: httpx.AsyncClient, token: str, at: str = "/ui/login") -> httpx.Response:
    form = await http.get(at)
    assert form.status_code == 200 and 'name="token"' in form.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    next_url = re.search(r'name="next" value="([^"]*)"', form.text)
    assert csrf and next_url
    return await http.post(
        "/ui/login",
        data={
            "token": token,
            "csrf": csrf.group(1),
            "next": next_url.group(1).replace("&amp;", "&"),
        },
    )


# -- the session mechanics, on a small app ---------------------------------------------------
@get("/ui/hello", media_type=MediaType.HTML)
async def hello(request: Request) -> str:
    bound = structlog.contextvars.get_contextvars().get("principal")
    return f"<main>hello {request.user.id} by {request.auth}, context {bound}</main>"


@post("/ui/act", opt={"role": "admin"}, status_code=200)
async def act() -> dict:
    return {"done": True}


@post("/act", opt={"role": "admin"}, status_code=200)
async def api_act() -> dict:
    return {"done": True}


def small_app(authenticator, sessions: Sessions | None = None):
    return build_http_app(
        None,
        max_body=4096,
        authenticator=authenticator,
        extra_handlers=[hello, act, api_act],
        sessions=sessions,
    )


async def csrf_of(http: httpx.AsyncClient) -> str:
    page = await http.get("/ui/logout")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


async def test_state_changing_requests_of_a_session_need_its_csrf_token(authenticator):
    async with client(small_app(authenticator)) as http:
        assert (await sign_in(http, TEST_TOKENS["admin"])).status_code == 303
        assert "hello test-admin by session" in (await http.get("/ui/hello")).text
        token = await csrf_of(http)
        for no_token in (
            http.post("/ui/act"),
            http.post("/ui/act", data={"csrf": "wrong"}),
            http.post("/act"),
            http.post("/act", headers={"x-csrf-token": "wrong"}),
            http.post("/ui/logout"),
            http.post("/ui/logout", data={"csrf": "wrong"}),
        ):
            assert (await no_token).status_code == 403
        assert (await http.post("/ui/act", data={"csrf": token})).json() == {"done": True}
        assert (await http.post("/act", headers={"x-csrf-token": token})).json() == {"done": True}
        # a bearer request needs none (even beside the cookie): a browser never sends that
        # header by itself
        r = await http.post("/act", headers=auth_headers("admin"))
        assert r.json() == {"done": True}
        # signing out ends the session on the server, not only in the browser
        sid = http.cookies[SESSION_COOKIE]
        out = await http.post("/ui/logout", data={"csrf": token})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        http.cookies.set(SESSION_COOKIE, sid)
        assert (await http.get("/ui/hello")).status_code == 303


async def test_the_sign_in_form_refuses_forgery_bad_tokens_and_other_sites(authenticator):
    app = small_app(authenticator)
    async with client(app) as http:
        form = await http.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf and "milestones_login" in form.headers["set-cookie"]
        # a cross-site form has the page's token but not the cookie SameSite=Strict keeps back
        async with client(app) as other:
            forged = await other.post(
                "/ui/login", data={"token": TEST_TOKENS["admin"], "csrf": csrf.group(1)}
            )
        assert forged.status_code == 403 and SESSION_COOKIE not in forged.headers.get(
            "set-cookie", ""
        )
        wrong = await http.post("/ui/login", data={"token": "nope", "csrf": csrf.group(1)})
        assert wrong.status_code == 401 and "unknown, revoked or expired" in wrong.text
        publisher = await sign_in(http, TEST_TOKENS["publisher"])
        assert publisher.status_code == 403 and SESSION_COOKIE not in http.cookies
        away = await sign_in(http, TEST_TOKENS["reader"], "/ui/login?next=//evil.example/x")
        assert away.status_code == 303 and away.headers["location"] == "/ui"


async def test_requests_log_their_principal_and_never_a_token(authenticator, monkeypatch):
    authenticator.add("feed-p1", Principal(id="feed-1", role="feed", projects=frozenset({"p1"})))
    secrets = [*TEST_TOKENS.values(), "feed-p1", "made-up-secret"]
    capture = structlog.testing.LogCapture()
    monkeypatch.setattr(  # the edge's logger, at every level, with the request's context
        auth_http,
        "log",
        structlog.wrap_logger(
            None,
            processors=[structlog.contextvars.merge_contextvars, capture],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        ),
    )
    async with client(small_app(authenticator)) as http:
        hello = await http.get("/ui/hello", headers=auth_headers("auditor"))
        assert "context test-auditor" in hello.text  # what the handler logs is bound to it
        await http.get("/ui/hello", headers={"Authorization": "Bearer made-up-secret"})
        await http.post("/act", headers=auth_headers("reader"))
        await http.get("/metrics?token=feed-p1")
        await sign_in(http, TEST_TOKENS["admin"])
        await sign_in(http, "made-up-secret")
    logs = capture.entries
    assert any(e["event"] == "http refused" and e["principal"] == "test-reader" for e in logs)
    assert any(e["event"] == "http refused" and e["principal"] == "feed-1" for e in logs)
    assert any(e["event"] == "dashboard sign-in" and e["principal"] == "test-admin" for e in logs)
    assert not [s for s in secrets if s in repr(logs)]


# -- JWTs from an identity provider ----------------------------------------------------------
ISSUER, AUDIENCE = "https://idp.example", "milestones"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(algorithm, key, kid: str, alg: str) -> dict:
    return json.loads(algorithm.to_jwk(key.public_key())) | {"kid": kid, "alg": alg, "use": "sig"}


JWKS = {
    "keys": [
        jwk(jwt.algorithms.RSAAlgorithm, RSA_KEY, "rsa-1", "RS256"),
        jwk(jwt.algorithms.ECAlgorithm, EC_KEY, "ec-1", "ES256"),
        jwk(jwt.algorithms.OKPAlgorithm, ED_KEY, "ed-1", "EdDSA"),
    ]
}


class JwksServer:
    """The identity provider's JWKS endpoint, on a free local port; counts its fetches."""

    def __init__(self) -> None:
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                served.fetches += 1
                body = json.dumps(JWKS).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.fetches = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


def make_jwt(key=RSA_KEY, kid: str = "rsa-1", alg: str = "RS256", **claims: object) -> str:
    """A token; a claim given as None is left out."""
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "milestones_role": "reader",
    } | claims
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid}
    )


async def test_jwts_are_verified_against_the_jwks(jwks):
    verifier = JwtVerifier(jwks.url, ISSUER, AUDIENCE, "milestones_role")
    alice = await verifier.verify(make_jwt())
    assert alice == Principal(id="jwt:alice", role="reader", via="jwt", name="alice")
    ci = await verifier.verify(
        make_jwt(
            sub="ci-bot",
            milestones_role="publisher",
            milestones_sources=["ci"],
            milestones_projects=["p1"],
        )
    )
    assert ci == Principal(
        id="jwt:ci-bot",
        role="publisher",
        sources=frozenset({"ci"}),
        projects=frozenset({"p1"}),
        via="jwt",
        name="ci-bot",
    )
    for key, kid, alg in ((EC_KEY, "ec-1", "ES256"), (ED_KEY, "ed-1", "EdDSA")):
        assert (await verifier.verify(make_jwt(key, kid, alg))) == alice, alg
    assert jwks.fetches == 1  # the keys are cached, not fetched per token

    now = int(time.time())
    refused = {
        "wrong issuer": make_jwt(iss="https://evil.example"),
        "wrong audience": make_jwt(aud="someone-else"),
        "expired": make_jwt(exp=now - 3600, iat=now - 7200),
        "no exp": make_jwt(exp=None),
        "no issuer": make_jwt(iss=None),
        "no subject": make_jwt(sub=None),
        "bad signature": make_jwt(OTHER_RSA),
        "no role": make_jwt(milestones_role=None),
        "unknown role": make_jwt(milestones_role="superuser"),
        "feed role": make_jwt(milestones_role="feed"),
        "sources not a list": make_jwt(milestones_sources="ci"),
        "unknown kid": make_jwt(kid="nobody"),
        "algorithm not the key's": make_jwt(EC_KEY, "rsa-1", "ES256"),
        "HMAC": jwt.encode({"sub": "x"}, "s" * 32, algorithm="HS256", headers={"kid": "rsa-1"}),
        "alg none": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 60}, None, algorithm="none"
        ),
        "not a jwt": "a.b.c",
    }
    for why, token in refused.items():
        assert await verifier.verify(token) is None, why


class JwtAuthenticator(MemoryAuthenticator):
    """The in-memory tokens, and JWTs verified as the services verify them."""

    def __init__(self, verifier: JwtVerifier) -> None:
        super().__init__()
        self.verifier = verifier

    async def bearer(self, token: str) -> Principal | None:
        if token.count(".") == 2:
            return await self.verifier.verify(token)
        return await super().bearer(token)


async def test_a_jwt_opens_the_api_and_a_session_that_ends_with_it(jwks):
    auth = JwtAuthenticator(JwtVerifier(jwks.url, ISSUER, AUDIENCE))
    clock = [time.time()]
    sessions = Sessions(auth, clock=lambda: clock[0])
    app = small_app(auth, sessions)
    async with client(app) as http:
        ok = await http.get("/ui/hello", headers={"Authorization": f"Bearer {make_jwt()}"})
        assert ok.status_code == 200 and "hello jwt:alice by bearer" in ok.text
        expired = make_jwt(exp=int(time.time()) - 3600)
        r = await http.post("/act", headers={"Authorization": f"Bearer {expired}"})
        assert refused(r, 401, "unauthenticated")
        r = await http.post("/act", headers={"Authorization": f"Bearer {make_jwt()}"})
        assert refused(r, 403, "forbidden") and "admin" in r.json()["error"]["message"]

        exp = int(time.time()) + 120
        assert (await sign_in(http, make_jwt(exp=exp))).status_code == 303
        assert (await http.get("/ui/hello")).status_code == 200
        clock[0] = exp + 1  # the JWT has expired: its session with it (12 h would be later)
        assert (await http.get("/ui/hello")).status_code == 303


# -- the OpenAPI document says so ------------------------------------------------------------
async def test_the_openapi_document_names_the_bearer_scheme_and_the_refusals(full):
    async with client(full) as http:
        assert (await http.get("/schema/openapi.json")).status_code == 401
        doc = (await http.get("/schema/openapi.json", headers=auth_headers("reader"))).json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    milestones = doc["paths"]["/projects/{project_id}/milestones"]["get"]
    assert {"401", "403"} <= set(milestones["responses"])
    assert {"feedToken": []} in milestones["security"]
