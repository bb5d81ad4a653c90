"""The trust boundary on NATS, against a real nats-server with the accounts of production: each
role may do what it should, and the server itself refuses the rest (permissions violations), the
intake refuses forged sources, and a revoked credential is shut out within a second."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from events import ENCODER, REPLY_DECODER, Reply
from events.envelope import StoredEvent
from services.app.embedded import EmbeddedNats
from services.app.settings import Settings
from services.app.wiring import Running, running
from services.auth.credentials import Issued
from services.auth.principal import SERVICE
from tests.conftest import cloudevent, plan_project, wait_for


class Client:
    """A NATS client that remembers the server's asynchronous errors (permissions violations)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: nats.NATS | None = None

    async def connect(self, server: EmbeddedNats, issued: Issued | None) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        login = {}
        if issued is not None:
            login = {"user": issued.credential.id, "password": issued.secret}
        self.nc = await nats.connect(
            server.url, error_cb=on_error, allow_reconnect=False, connect_timeout=2, **login
        )
        return self

    async def refused(self, what: str) -> None:
        await wait_for(
            # nats-py lowercases the server's error text
            lambda: _async(
                any("permissions violation" in e and what.lower() in e for e in self.errors)
            ),
            timeout=5,
            what=f"a permissions violation for {what} (got {self.errors})",
        )

    async def request(self, subject: str, body: object = b"", timeout: float = 5) -> Reply:
        assert self.nc is not None
        data = body if isinstance(body, bytes) else ENCODER.encode(body)
        msg = await self.nc.request(subject, data, timeout=timeout)
        return REPLY_DECODER.decode(msg.data)

    async def ask(self, query: str, params: dict) -> dict:
        """A query's answer, or the contract's error JSON."""
        assert self.nc is not None
        msg = await self.nc.request(f"milestones.query.{query}", ENCODER.encode(params), timeout=5)
        return msgspec.json.decode(msg.data)


def code(answer: dict) -> str | None:
    return answer.get("error", {}).get("code") if answer.get("accepted") is False else None


async def _async(value: bool) -> bool:
    return value


@pytest.fixture
async def stack(settings: Settings, db_url: str) -> AsyncIterator[Running]:
    secured = msgspec.structs.replace(settings, database_url=db_url)
    async with running(secured, intake=True, query=True) as run:
        yield run


async def issue(run: Running, role: str, **kw: object) -> Issued:
    assert run.auth is not None and run.accounts is not None
    issued = await run.auth.issue(role, by=SERVICE, **kw)  # type: ignore[arg-type]
    await run.accounts.wait_for(issued.credential.position)
    return issued


async def stored(nc: nats.NATS, position: int) -> StoredEvent:
    msg = await nc.jetstream().get_msg("MILESTONES", position)
    return msgspec.json.decode(msg.data, type=StoredEvent)


async def test_anonymous_clients_cannot_connect(nats_server: EmbeddedNats) -> None:
    with pytest.raises(Exception, match="Authorization Violation"):
        await Client().connect(nats_server, None)


async def test_a_wrong_password_is_refused(stack: Running, nats_server: EmbeddedNats) -> None:
    issued = await issue(stack, "publisher", sources=["ci"])
    issued.secret = "not-the-secret"
    with pytest.raises(Exception, match="Authorization Violation"):
        await Client().connect(nats_server, issued)


async def test_a_publisher_sends_events_and_the_log_names_it(
    stack: Running, nats_server: EmbeddedNats, nc: nats.NATS
) -> None:
    issued = await issue(stack, "publisher", sources=["ci"])
    pub = await Client().connect(nats_server, issued)
    events = plan_project()
    for ce in events:
        ce["source"], ce["actor"] = "ci", "someone-else"
    reply = await pub.request("milestones.commands.batch", events)
    assert reply.accepted, reply
    assert reply.events is not None
    first = await stored(nc, reply.events[0].position)
    assert first.principal == issued.credential.id
    assert first.actor == "someone-else"  # self-declared, kept beside the principal

    # the durable inbox: the server writes the credential into the subject it captures
    ce = cloudevent("TaskCompleted", {"project_id": "p1", "milestone_id": "m1", "task_id": "t1"})
    ce["source"] = "ci"
    assert pub.nc is not None
    await pub.nc.jetstream().publish("milestones.inbox.TaskCompleted", ENCODER.encode(ce))

    async def projected() -> bool:
        last = (await nc.jetstream().stream_info("MILESTONES")).state.last_seq
        return (await stored(nc, last)).type == "TaskCompleted" if last else False

    await wait_for(projected, what="the inbox message in the log")
    last = (await nc.jetstream().stream_info("MILESTONES")).state.last_seq
    assert (await stored(nc, last)).principal == issued.credential.id


async def test_a_reply_tells_the_publisher_nothing_of_the_server_s_accounts(
    stack: Running, nats_server: EmbeddedNats
) -> None:
    """A request that crossed the account import carries the server's ``Nats-Request-Info``
    (account slot, round-trip time); the reply must not send it back. A caller's correlation id
    comes back."""
    issued = await issue(stack, "publisher", sources=["ci"])
    pub = await Client().connect(nats_server, issued)
    assert pub.nc is not None
    ce = plan_project()[0]
    ce["source"] = "ci"
    plain = await pub.nc.request(
        "milestones.commands.ProjectCreated", ENCODER.encode(ce), timeout=5
    )
    assert REPLY_DECODER.decode(plain.data).accepted
    assert not plain.headers
    tagged = await pub.nc.request(
        "milestones.commands.ProjectCreated",
        ENCODER.encode(ce),
        timeout=5,
        headers={"correlation_id": "corr-42"},
    )
    assert REPLY_DECODER.decode(tagged.data).accepted  # a repeat: answered like the first
    assert tagged.headers == {"correlation_id": "corr-42"}


async def test_a_publisher_cannot_touch_the_log_streams_or_the_jetstream_api(
    stack: Running, nats_server: EmbeddedNats
) -> None:
    issued = await issue(stack, "publisher", sources=["ci"])
    forged = ENCODER.encode(cloudevent("MilestoneAchieved", {"project_id": "p1"}))
    for subject in (
        "milestones.events.p1.m1",
        "milestones.ids.x",
        "milestones.credentials.x",
        "$JS.API.STREAM.UPDATE.MILESTONES",
        "$JS.API.STREAM.DELETE.MILESTONES",
        "$JS.API.STREAM.PURGE.MILESTONES",
        "$JS.API.DIRECT.GET.MILESTONES",
        "$JS.API.CONSUMER.CREATE.MILESTONES",
        "milestones.query.audit",
    ):  # a client each: the server reports a client's violations once, not each time
        pub = await Client().connect(nats_server, issued)
        assert pub.nc is not None
        await pub.nc.publish(subject, forged)
        await pub.refused(f'"{subject}"')
    await pub.nc.subscribe("milestones.events.>")
    await pub.refused('subscription to "milestones.events.>"')


async def test_a_forged_source_is_forbidden(stack: Running, nats_server: EmbeddedNats) -> None:
    pub = await Client().connect(nats_server, await issue(stack, "publisher", sources=["ci"]))
    ce = cloudevent("ProjectCreated", {"project_id": "p9", "name": "P"}, source="tracker")
    reply = await pub.request("milestones.commands.ProjectCreated", ce)
    assert not reply.accepted and reply.error is not None
    assert reply.error.code == "forbidden"
    assert "tracker" in reply.error.message and "ci" in reply.error.message


async def test_a_project_limited_publisher_is_forbidden_other_projects(
    stack: Running, nats_server: EmbeddedNats
) -> None:
    issued = await issue(stack, "publisher", sources=["ci"], projects=["p1"])
    pub = await Client().connect(nats_server, issued)
    ok = cloudevent("ProjectCreated", {"project_id": "p1", "name": "P"}, source="ci")
    other = cloudevent("ProjectCreated", {"project_id": "p2", "name": "P"}, source="ci")
    assert (await pub.request("milestones.commands.ProjectCreated", ok)).accepted
    reply = await pub.request("milestones.commands.ProjectCreated", other)
    assert reply.error is not None and reply.error.code == "forbidden"


async def test_two_publishers_with_the_same_id_each_get_their_own_event(
    stack: Running, nats_server: EmbeddedNats
) -> None:
    ci = await Client().connect(nats_server, await issue(stack, "publisher", sources=["ci"]))
    tracker = await Client().connect(
        nats_server, await issue(stack, "publisher", sources=["tracker"])
    )
    a = cloudevent("ProjectCreated", {"project_id": "pa", "name": "A"}, id="run-x", source="ci")
    b = cloudevent(
        "ProjectCreated", {"project_id": "pb", "name": "B"}, id="run-x", source="tracker"
    )
    first = await ci.request("milestones.commands.ProjectCreated", a)
    second = await tracker.request("milestones.commands.ProjectCreated", b)
    assert first.accepted and second.accepted
    assert first.events and second.events
    assert first.events[0].position != second.events[0].position


async def test_readers_query_and_roles_are_ranked(
    stack: Running, nats_server: EmbeddedNats
) -> None:
    reader = await Client().connect(nats_server, await issue(stack, "reader"))
    auditor = await Client().connect(nats_server, await issue(stack, "auditor"))
    admin = await Client().connect(nats_server, await issue(stack, "admin"))
    assert code(await reader.ask("projects", {})) is None
    refused = await reader.ask("audit", {"project_id": "p1"})
    assert code(refused) == "forbidden" and "auditor" in refused["error"]["message"]
    assert code(await auditor.ask("audit", {"project_id": "p1"})) is None
    assert code(await auditor.ask("deliveries", {})) == "forbidden"
    assert code(await admin.ask("deliveries", {})) is None
    # a digest that is sent changes state: admin only, whatever the query's own role
    assert code(await reader.ask("digest", {"project_id": "p1", "send": True})) == "forbidden"
    # readers cannot publish events
    assert reader.nc is not None
    await reader.nc.publish("milestones.commands.ProjectCreated", b"{}")
    await reader.refused('"milestones.commands.ProjectCreated"')


async def test_a_publisher_cannot_query(stack: Running, nats_server: EmbeddedNats) -> None:
    pub = await Client().connect(nats_server, await issue(stack, "publisher", sources=["ci"]))
    with pytest.raises((NoRespondersError, NatsTimeout)):
        await pub.ask("projects", {})
    await pub.refused('"milestones.query.projects"')


async def test_a_revoked_credential_is_refused_within_a_second(
    stack: Running, nats_server: EmbeddedNats
) -> None:
    issued = await issue(stack, "publisher", sources=["ci"])
    pub = await Client().connect(nats_server, issued)
    assert stack.auth is not None and stack.accounts is not None
    ok = cloudevent("ProjectCreated", {"project_id": "pr", "name": "P"}, source="ci")
    assert (await pub.request("milestones.commands.ProjectCreated", ok)).accepted
    started = time.monotonic()
    await stack.auth.revoke(issued.credential.id, by=SERVICE, reason="leaked")
    await stack.accounts.wait_for(stack.auth.position, timeout=1)
    assert pub.nc is not None

    async def disconnected() -> bool:
        return pub.nc is not None and not pub.nc.is_connected

    await wait_for(disconnected, timeout=1, what="the revoked client disconnected")
    with pytest.raises(Exception, match="Authorization Violation"):
        await Client().connect(nats_server, issued)
    assert time.monotonic() - started < 1.0
    assert await stack.auth.bearer(issued.http_token) is None


async def test_credentials_are_in_the_log_as_hashes_only(stack: Running, nc: nats.NATS) -> None:
    issued = await issue(stack, "publisher", sources=["ci"])
    msg = await nc.jetstream().get_msg("MILESTONES", issued.credential.position)
    assert issued.secret.encode() not in msg.data
    assert b"CredentialIssued" in msg.data and b"token_sha256" in msg.data


async def test_a_restarted_service_knows_every_credential(
    settings: Settings, db_url: str, nats_server: EmbeddedNats
) -> None:
    async with running(settings, intake=True) as run:
        kept = await issue(run, "reader")
        gone = await issue(run, "reader")
        assert run.auth is not None
        await run.auth.revoke(gone.credential.id, by=SERVICE)
    async with running(settings, intake=True) as run:
        assert run.auth is not None
        assert await run.auth.bearer(kept.http_token) is not None
        assert await run.auth.bearer(gone.http_token) is None
        reader = await Client().connect(nats_server, kept)
        assert reader.nc is not None and reader.nc.is_connected
        with pytest.raises(Exception, match="Authorization Violation"):
            await Client().connect(nats_server, gone)


async def test_a_truncated_stream_stops_the_services_with_one_line(
    settings: Settings, nc: nats.NATS
) -> None:
    from events.errors import StartupError
    from services.app.wiring import prepare_streams

    await prepare_streams(nc, settings)
    js = nc.jetstream()
    config = (await js.stream_info("MILESTONES")).config
    config.max_msgs = 1
    await js.update_stream(config)
    with pytest.raises(StartupError, match="MILESTONES exists with max_msgs=1"):
        async with running(settings, intake=True):
            pass


async def test_the_audit_trail_names_the_principal_beside_the_actor(
    settings: Settings, db_url: str, nats_server: EmbeddedNats
) -> None:
    from tests.conftest import caught_up

    full = msgspec.structs.replace(settings, database_url=db_url)
    async with running(full, intake=True, query=True, projections=True) as run:
        issued = await issue(run, "publisher", sources=["ci"])
        pub = await Client().connect(nats_server, issued)
        ce = cloudevent("ProjectCreated", {"project_id": "pz", "name": "Z"}, source="ci")
        ce["actor"] = "dana"
        reply = await pub.request("milestones.commands.ProjectCreated", ce)
        assert reply.events is not None
        await caught_up(db_url, reply.events[0].position, ("audit",))
        auditor = await Client().connect(nats_server, await issue(run, "auditor"))
        page = await auditor.ask("audit", {"principal": issued.credential.id})
        [row] = page["data"]
        assert row["actor"] == "dana" and row["principal"] == issued.credential.id
