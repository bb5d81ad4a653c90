"""A three-node NATS cluster under faults (``-m cluster``): three nats-servers on loopback with
routes, JetStream (``sync_interval: always``) and the accounts of production, the streams at R3,
the intake connected with the list of all URLs. Under a steady load through the intake the
MILESTONES stream's leader is killed with SIGKILL, restarted, and a node's store is wiped:
every acknowledged event is in the stream exactly once, at its acknowledged position, on every
node. Figures: tests/faults_support.record."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import nats
import pytest

from services.app.embedded import EmbeddedCluster, EmbeddedNats
from services.app.settings import Settings
from services.app.wiring import intake as run_intake
from services.eventlog.log import EventLog, OutgoingMessage, StaleReplica
from tests.conftest import TEST_SECRET_KEY, cloudevent, plan_project, request, wait_for
from tests.faults_support import SteadyLoad, lost_and_duplicated, record

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(tmp_path: Path, identity):
    nodes = EmbeddedCluster(tmp_path / "cluster", identity=identity).start()
    yield nodes
    nodes.stop()


def cluster_settings(cluster: EmbeddedCluster, tmp_path: Path, url: str | None = None) -> Settings:
    assert cluster.identity is not None
    login, system = cluster.identity.service, cluster.identity.system
    return Settings(
        nats_url=url or cluster.url,
        nats_user=login.user,
        nats_password=login.password,
        nats_system_user=system.user,
        nats_system_password=system.password,
        nats_auth_file=str(cluster.credentials_file),
        stream_replicas=3,
        data_dir=str(tmp_path),
        command_workers=64,
        scheduler=False,
        secret_key=TEST_SECRET_KEY,
    )


async def connect(cluster: EmbeddedCluster, *nodes: EmbeddedNats) -> nats.NATS:
    """The services' identity, to the nodes given (default: all, reconnecting among them)."""
    assert cluster.identity is not None
    login = cluster.identity.service
    return await nats.connect(
        [n.url for n in nodes or cluster.nodes],
        user=login.user,
        password=login.password,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
    )


async def stream_state(node: EmbeddedNats, stream: str = "MILESTONES") -> dict | None:
    """The stream's state as this node holds it (its monitoring port, ``/jsz``)."""
    url = f"http://{node.host}:{node.http_port}/jsz?accounts=true&streams=true"
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            body = (await client.get(url)).json()
    except (httpx.HTTPError, ValueError):
        return None
    for account in body.get("account_details") or []:
        for detail in account.get("stream_detail") or []:
            if detail["name"] == stream:
                state = detail["state"]
                return {k: state.get(k) for k in ("messages", "bytes", "first_seq", "last_seq")}
    return None


async def stream_leader(nc: nats.NATS) -> str | None:
    try:
        info = await asyncio.wait_for(nc.jetstream().stream_info("MILESTONES"), 2)
    except Exception:  # no leader yet (an election), or the connection is moving
        return None
    return info.cluster.leader if info.cluster else None


async def last_seq(nc: nats.NATS, timeout: float = 30.0) -> int:
    """The stream's last sequence as its leader says (asked again while one is elected)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = await asyncio.wait_for(nc.jetstream().stream_info("MILESTONES"), 2)
            return info.state.last_seq
        except Exception:  # no leader yet, or this client's node is the one that went away
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def caught_up(node: EmbeddedNats, last_seq: int, timeout: float = 30.0) -> float:
    """Seconds until ``node``'s copy of the stream reaches ``last_seq``."""
    started = time.monotonic()

    async def reached() -> bool:
        state = await stream_state(node)
        return state is not None and (state["last_seq"] or 0) >= last_seq

    await wait_for(reached, timeout=timeout, what=f"{node.name} to reach {last_seq}")
    return time.monotonic() - started


async def content(nc: nats.NATS) -> list[tuple[int, str, bytes]]:
    return [(m.seq, m.subject, m.data) for m in await EventLog(nc).read_subject(">")]


async def test_the_leader_killed_under_load_loses_nothing_and_nodes_recover(
    cluster: EmbeddedCluster, tmp_path: Path
):
    settings = cluster_settings(cluster, tmp_path)
    async with run_intake(settings) as running:
        client = await connect(cluster)
        load = await SteadyLoad(client, projects=6, senders=2, every=0.02).start()
        try:
            await wait_for(lambda: _more(load, 60), timeout=30, what="a steady load")

            # -- kill -9 the stream's leader -----------------------------------------------
            old = await stream_leader(client)
            assert old is not None
            victim = cluster.node(old)
            before = len(load.acked)
            killed = time.monotonic()
            victim.kill()

            # two senders: at most 8 events were in flight at the kill, so 16 more acknowledged
            # means batches sent after the kill went through a new leader
            await wait_for(lambda: _more(load, before + 16), timeout=60, what="acks after kill")
            recover_s = time.monotonic() - killed

            async def elected() -> bool:
                return (await stream_leader(client)) not in (None, old)

            await wait_for(elected, timeout=30, what="a new leader")
            acked_after_kill = len(load.acked) - before

            # -- restart it: it catches up with the leader -------------------------------------
            target = await last_seq(client)
            restarted = time.monotonic()
            victim.spawn()
            await asyncio.to_thread(victim.wait_listening)
            await caught_up(victim, target)
            catch_up_s = time.monotonic() - restarted

            # -- wipe a follower's store and restart it: it recovers from its peers -------------
            leader = await stream_leader(client)
            wiped = next(n for n in cluster.nodes if n.name not in (leader, victim.name))
            wiped.kill()
            wiped.wipe()
            assert not wiped.jetstream_dir.exists()
            target = await last_seq(client)
            restarted = time.monotonic()
            wiped.spawn()
            await asyncio.to_thread(wiped.wait_listening)
            await caught_up(wiped, target, timeout=60)
            wipe_recover_s = time.monotonic() - restarted
            goal = len(load.acked) + 16
            await wait_for(lambda: _more(load, goal), timeout=30, what="acks after the wipe")
        finally:
            await load.stop()

        # every node holds the same stream, and every acknowledged event once, where acked
        final = await last_seq(client)
        for node in cluster.nodes:
            await caught_up(node, final)
        states = [await stream_state(n) for n in cluster.nodes]
        assert all(s == states[0] for s in states), states
        survivor = next(n for n in cluster.nodes if n not in (victim, wiped))
        copies = {}
        for node in (survivor, victim, wiped):
            alone = await connect(cluster, node)  # direct gets answered by this node first
            try:
                assert await lost_and_duplicated(alone, load.acked) == (0, 0), node.name
                copies[node.name] = await content(alone)
            finally:
                await alone.close()
        assert copies[victim.name] == copies[survivor.name] == copies[wiped.name]
        await client.close()
        stale = running.committer.log.stale_reads if running.committer else None

    assert acked_after_kill >= 16
    record(
        "cluster: stream leader kill -9 under load, restart, wiped store",
        runs=1,
        acknowledged=len(load.acked),
        lost=0,
        duplicated=0,
        refused_during_election=len(load.refused),
        refusals=sorted(set(load.refused)),
        unanswered=load.unanswered,
        recover_s=round(recover_s, 2),
        catch_up_s=round(catch_up_s, 2),
        wiped_recover_s=round(wipe_recover_s, 2),
        stale_reads=stale,
    )


async def _more(load: SteadyLoad, count: int) -> bool:
    return len(load.acked) >= count


async def test_an_intake_on_a_follower_reads_its_own_writes(cluster: EmbeddedCluster, tmp_path):
    """Direct gets are answered by the node the intake is connected to: a follower here, which
    applies each commit a moment after the leader acknowledged it. Each message below changes
    the aggregate the one before changed, the moment its answer arrived: every one must be
    decided on the state that includes the one before (no conflicts, no stale state)."""
    setup = await connect(cluster)
    try:
        from services.app.wiring import prepare_streams

        await prepare_streams(setup, cluster_settings(cluster, tmp_path))
        leader = await stream_leader(setup)
    finally:
        await setup.close()
    follower = next(n for n in cluster.nodes if n.name != leader)
    settings = cluster_settings(cluster, tmp_path, url=follower.url)
    async with run_intake(settings) as running:
        client = await connect(cluster, follower)
        try:
            reply = await request(client, plan_project("rw", "m1", tasks=("open",)))
            assert reply.accepted, reply
            rounds = 150
            for n in range(rounds):
                ids = {"project_id": "rw", "milestone_id": "m1", "task_id": f"t{n}"}
                reply = await request(client, cloudevent("TaskAdded", {**ids, "title": "t"}))
                assert reply.accepted, reply
                reply = await request(client, cloudevent("TaskCompleted", ids))
                assert reply.accepted, reply
            assert running.committer is not None
            stale = running.committer.log.stale_reads
        finally:
            await client.close()
    record(
        "cluster: intake on a follower, read-your-writes",
        messages=2 * rounds,
        stale_reads_asked_again=stale,
    )


async def test_a_read_behind_what_the_log_wrote_or_saw_is_asked_again(nats_server, nc):
    """The read-your-writes check itself (services/eventlog/log.py), on one server: a replica
    that lags is simulated by a log that 'remembers' more than the server holds. A read waits
    until the server has it, and gives up with a clear error when it never comes."""
    from services.eventlog.streams import ensure_stream, events_stream_config

    await ensure_stream(nc, events_stream_config())
    writer = EventLog(nc)
    await writer.append([OutgoingMessage("milestones.events.a", b"{}", 0)])
    reader = EventLog(nc, stale_deadline=5.0)
    reader.written = 2  # as if this process had appended position 2 already
    reader._saw("milestones.events.b", 2)

    async def later() -> None:
        await asyncio.sleep(0.2)
        await writer.append([OutgoingMessage("milestones.events.b", b"{}", 0)])

    task = asyncio.create_task(later())
    got = await reader.last_of(["milestones.events.a", "milestones.events.b"])
    await task
    assert {s: m.seq for s, m in got.items()} == {
        "milestones.events.a": 1,
        "milestones.events.b": 2,
    }
    assert reader.stale_reads > 0
    history = await reader.read_subject("milestones.events.b")
    assert [m.seq for m in history] == [2]

    never = EventLog(nc, stale_deadline=0.3)
    never._saw("milestones.events.c", 7)
    with pytest.raises(StaleReplica, match="is the cluster healthy"):
        await never.read_subject("milestones.events.c")
    never.written = 99
    with pytest.raises(StaleReplica, match="behind"):
        await never.last_of(["milestones.events.a"])


async def test_a_single_server_backup_restores_into_the_cluster_at_r3(
    intake, nc, settings, cluster: EmbeddedCluster, tmp_path: Path
):
    from services.cli.backup import BACKED_UP
    from tests.backup_support import a_log_worth_keeping, everything, milestones
    from tests.conftest import cli_env

    await a_log_worth_keeping(nc)
    original = await everything(nc, "MILESTONES")
    env = {**cli_env(settings), "MILESTONES_DATA_DIR": str(tmp_path)}
    code, _, stderr = await milestones(env, "backup", "--out", str(tmp_path / "backup"))
    assert code == 0, stderr
    env["MILESTONES_NATS_URL"] = cluster.url
    code, _, stderr = await milestones(env, "restore", str(tmp_path / "backup"), "--replicas", "3")
    assert code == 0, stderr
    client = await connect(cluster)
    try:
        for stream in BACKED_UP:
            info = await client.jetstream().stream_info(stream)
            assert info.config.num_replicas == 3 and info.cluster and info.cluster.leader
            assert len(info.cluster.replicas or []) == 2, stream
        assert await everything(client, "MILESTONES") == original
        final = await last_seq(client)
        for node in cluster.nodes:  # every node holds the restored log
            await caught_up(node, final)
    finally:
        await client.close()


async def test_a_stream_with_other_replicas_stops_the_services_with_one_line(nats_server, nc):
    from events.errors import StartupError
    from services.eventlog.streams import ensure_stream, events_stream_config

    await ensure_stream(nc, events_stream_config(1))
    with pytest.raises(StartupError, match="has 1 replica.*MILESTONES_STREAM_REPLICAS is 3"):
        await ensure_stream(nc, events_stream_config(3))
