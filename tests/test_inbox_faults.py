"""The inbox cannot loop and loses nothing (services.intake.inbox), on a real nats-server:

- a message refused for what it is (undecodable, too deep, out of bounds, a business rule)
  becomes a rejection at once, delivered once;
- a message that meets an outage (the event stream refuses writes) waits, NAKed with backoff,
  counted by ``milestones_inbox_waiting``, and is accepted when the stream takes writes again —
  never rejected;
- a message whose handling raises is retried a bounded number of times, then rejected as
  ``internal`` with the exception named; one that fails only at first is accepted.

Deliveries are read from the consumer (``delivered.consumer_seq``), not guessed with sleeps."""

from __future__ import annotations

import json
import time

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import REGISTRY

from events import REJECTION_DECODER, decode_stored
from events.envelope import Rejection
from events.subjects import EVENTS_STREAM, INBOX, INBOX_STREAM, REJECTIONS, REJECTIONS_STREAM
from services.app.wiring import intake as run_intake
from services.app.wiring import prepare_streams
from services.eventlog.log import EventLog, direct_batch
from services.intake import inbox
from services.intake.inbox import INBOX_DURABLE, InboxPolicy, outcome
from tests.conftest import cloudevent, plan_project, request, wait_for
from tests.test_cli import run as cli

# Fast retries, so that bounded waits stay short; the production policy is InboxPolicy().
FAST = InboxPolicy(retry_first_s=0.05, retry_max_s=0.4, error_deliveries=4)


@pytest.fixture
async def fast_intake(settings, monkeypatch):
    monkeypatch.setattr(inbox, "DEFAULT_POLICY", FAST)
    async with run_intake(settings) as running:
        yield running


async def rejections(nc) -> list[Rejection]:
    try:
        got = await direct_batch(
            nc, REJECTIONS_STREAM, {"seq": 1, "next_by_subj": REJECTIONS, "batch": 100}
        )
    except Exception:  # noqa: BLE001 - the stream is empty
        return []
    return [REJECTION_DECODER.decode(m.data) for m in got]


async def consumer(nc):
    async def exists() -> bool:
        try:
            await nc.jetstream().consumer_info(INBOX_STREAM, INBOX_DURABLE)
            return True
        except Exception:  # noqa: BLE001 - not created yet
            return False

    await wait_for(exists, what="the inbox consumer")
    return await nc.jetstream().consumer_info(INBOX_STREAM, INBOX_DURABLE)


def waiting() -> float:
    return REGISTRY.get_sample_value("milestones_inbox_waiting") or 0.0


async def publish(nc, body: bytes, type_: str = "ProjectCreated") -> None:
    await nc.jetstream().publish(f"milestones.inbox.{type_}", body, stream=INBOX_STREAM)


def test_outcomes():
    from events import Reply

    policy = InboxPolicy(error_deliveries=3)
    assert outcome(Reply.ok([]), 1, policy) == "accepted"
    for code in ("invalid", "unknown_type", "not_found", "rejected", "too_large", "forbidden"):
        assert outcome(Reply.fail(code, "x"), 1, policy) == "rejected"
    for code in ("unavailable", "conflict"):
        assert outcome(Reply.fail(code, "x"), 10_000, policy) == "waiting"
    assert outcome(Reply.fail("internal", "x"), 2, policy) == "retried"
    assert outcome(Reply.fail("internal", "x"), 3, policy) == "failed"
    assert [policy.delay(n) for n in (1, 2, 3, 6, 100)] == [0.5, 1.0, 2.0, 10.0, 10.0]


async def test_refused_messages_become_rejections_at_once_and_are_delivered_once(
    intake, nc, settings
):
    bodies = {
        "invalid UTF-8": json.dumps(cloudevent("ProjectCreated", {"project_id": "a", "name": "N"}))
        .encode()
        .replace(b'"N"', b'"\xff\xfe"'),
        "deep beyond msgspec": b'{"specversion": "1.0", "data": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}",
        "deep beyond the limit": json.dumps(
            cloudevent(
                "ProjectCreated",
                {
                    "project_id": "b",
                    "name": "x",
                    "d": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
                },
            )  # noqa: E501
        ).encode(),
        "NUL in a name": json.dumps(
            cloudevent("ProjectCreated", {"project_id": "c", "name": "a\x00b"})
        ).encode(),
        "garbage": b"\x00\x01\x02 not json at all",
    }
    started = time.monotonic()
    for body in bodies.values():
        await publish(nc, body)

    async def all_recorded() -> bool:
        return len(await rejections(nc)) == len(bodies)

    await wait_for(all_recorded, timeout=10, what="a rejection for each refused message")
    elapsed = time.monotonic() - started
    records = await rejections(nc)
    assert [r.code for r in records] == ["invalid"] * len(bodies)
    assert "not UTF-8" in records[0].message and records[0].payload_base64
    assert "nested more than" in records[1].message and records[1].payload
    assert "nested more than 32 levels" in records[2].message
    assert "`$.name`" in records[3].message and "control characters" in records[3].message
    assert all(r.deliveries == 1 for r in records)
    info = await consumer(nc)
    assert info.delivered.consumer_seq == len(bodies)  # each delivered once, never again
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
    print(f"\n{len(bodies)} refused inbox messages recorded in {elapsed:.2f}s, delivered once each")

    # the service goes on
    await publish(
        nc, json.dumps(cloudevent("ProjectCreated", {"project_id": "ok", "name": "OK"})).encode()
    )  # noqa: E501

    async def accepted() -> bool:
        return await EventLog(nc).last_sequence() >= 2  # the receipt and the event

    await wait_for(accepted, what="the good message after the bad ones")
    code, out, _ = await cli("rejections", "--json", env=_cli_env(settings))
    assert code == 0 and len(out.splitlines()) == len(bodies)


def _cli_env(settings) -> dict[str, str]:
    from tests.conftest import cli_env

    return cli_env(settings)


async def test_an_outage_is_waited_out_never_rejected(fast_intake, nc):
    for ce in plan_project("p", "m", tasks=("t0",)):
        assert (await request(nc, ce)).accepted
    js = nc.jetstream()
    info = await js.stream_info(EVENTS_STREAM)
    full = info.config
    full.max_msgs = info.state.messages  # discard "new": the stream refuses every write now
    await js.update_stream(full)
    outage_started = time.monotonic()

    tasks = [f"w{i}" for i in range(3)]
    for t in tasks:
        ce = cloudevent(
            "TaskAdded", {"project_id": "p", "milestone_id": "m", "task_id": t, "title": t}
        )
        await publish(nc, json.dumps(ce).encode(), "TaskAdded")

    async def all_waiting_and_retried() -> bool:
        c = await consumer(nc)
        return waiting() == len(tasks) and c.delivered.consumer_seq >= 8 * len(tasks)

    # each delivered about 8 times: well past FAST.error_deliveries, and still waiting
    await wait_for(all_waiting_and_retried, timeout=20, what="the inbox to wait out the outage")
    assert await rejections(nc) == []
    deliveries_in_outage = (await consumer(nc)).delivered.consumer_seq

    full.max_msgs = -1  # the stream takes writes again
    await js.update_stream(full)
    outage = time.monotonic() - outage_started
    back = time.monotonic()

    async def all_in() -> bool:
        messages = await EventLog(nc).read_subject("milestones.events.p.m")
        added = {decode_stored(m.data).data.task_id for m in messages if b"TaskAdded" in m.data}
        return added >= set(tasks)

    await wait_for(all_in, timeout=20, what="the waiting messages to be accepted")
    recovered = time.monotonic() - back
    assert await rejections(nc) == []

    async def settled() -> bool:
        return (await consumer(nc)).num_ack_pending == 0

    await wait_for(settled, what="every inbox message acked")
    assert waiting() == 0
    print(
        f"\noutage {outage:.1f}s: {len(tasks)} messages waited "
        f"({deliveries_in_outage} deliveries), accepted {recovered:.2f}s after the stream "
        "took writes again, 0 rejected, 0 lost"
    )


async def test_an_exception_is_retried_a_bounded_number_of_times_then_rejected(fast_intake, nc):
    intake = fast_intake.intake
    original = intake.inbox_reply
    failures: dict[int, int] = {}

    async def failing(msg):
        seq = msg.metadata.sequence.stream
        if b"explode" in msg.data or (b"flaky" in msg.data and failures.get(seq, 0) < 2):
            failures[seq] = failures.get(seq, 0) + 1
            raise RuntimeError("boom in the decider")
        return await original(msg)

    intake.inbox_reply = failing
    flaky = cloudevent("ProjectCreated", {"project_id": "flaky", "name": "flaky"})
    explode = cloudevent("ProjectCreated", {"project_id": "x", "name": "explode"})
    await publish(nc, json.dumps(flaky).encode())
    await publish(nc, json.dumps(explode).encode())

    async def recorded() -> bool:
        return len(await rejections(nc)) == 1

    await wait_for(recorded, timeout=20, what="the failing message's rejection")
    (record,) = await rejections(nc)
    assert record.code == "internal" and record.deliveries == FAST.error_deliveries
    assert "RuntimeError" in record.message and "boom in the decider" in record.message
    assert json.loads(record.payload)["id"] == explode["id"]

    async def settled() -> bool:
        return (await consumer(nc)).num_ack_pending == 0

    await wait_for(settled, what="both messages acked")
    info = await consumer(nc)
    # flaky: 2 failures + 1 success; explode: exactly error_deliveries, then never again
    assert info.delivered.consumer_seq == 3 + FAST.error_deliveries
    assert failures == {1: 2, 2: FAST.error_deliveries}
    assert (await request(nc, flaky)).accepted  # the flaky one was accepted (a repeat now)
    assert await EventLog(nc).read_subject("milestones.events.x") == []


async def test_the_inbox_consumer_configuration_is_explicit_and_applied(settings, nc):
    """A consumer an older version made (other limits) gets today's settings at start."""
    await prepare_streams(nc, settings)
    await nc.jetstream().add_consumer(
        INBOX_STREAM,
        ConsumerConfig(
            durable_name=INBOX_DURABLE,
            filter_subject=INBOX,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=5,
            max_deliver=3,
        ),
    )
    async with run_intake(settings):

        async def applied() -> bool:
            c = (await consumer(nc)).config
            return c.max_deliver == -1 and c.ack_wait == 60

        await wait_for(applied, what="the inbox consumer's configuration")
        config = (await consumer(nc)).config
        assert config.ack_policy == AckPolicy.EXPLICIT and not config.backoff
        assert config.filter_subject == INBOX


async def test_the_inbox_decides_the_next_batch_while_the_last_waits_and_settles_each(nc):
    """Two batches in hand (``consume_each(depth=2)``): the second is handed over while the first
    is still being handled (as the committer's pipelined rounds expect), each is settled when
    its own handling ends, and a stop finishes and settles what is in hand."""
    import asyncio

    from nats.js.api import StreamConfig

    from services.eventlog.consume import consume_each, durable_pull

    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="PIPE", subjects=["pipe.>"]))
    for i in range(6):
        await js.publish(f"pipe.{i}", str(i).encode())
    psub = await durable_pull(
        nc, "pipe.>", durable="pipe", stream="PIPE", ack_wait=30, max_ack_pending=100
    )
    first_may_end, stop = asyncio.Event(), asyncio.Event()
    handed: list[list[bytes]] = []

    async def handle(msgs):
        handed.append([m.data for m in msgs])
        if len(handed) == 1:
            await first_may_end.wait()  # the first batch waits, as for its fsync
        elif len(handed) == 2:
            first_may_end.set()
        if sum(map(len, handed)) == 6:
            stop.set()
        return [None] * len(msgs)

    await asyncio.wait_for(consume_each(psub, 3, 0.1, stop, handle, "test", depth=2), 20)
    assert handed == [[b"0", b"1", b"2"], [b"3", b"4", b"5"]]  # the second came while the
    # first was held: without the pipeline the first would wait forever (the timeout above)

    async def settled() -> bool:  # acks are published, not confirmed: read the consumer
        info = await js.consumer_info("PIPE", "pipe")
        return info.num_ack_pending == 0 and info.ack_floor.stream_seq == 6

    await wait_for(settled, what="every message acked")


async def test_a_batch_settled_whole_that_fails_is_handled_again_before_the_next(nc):
    """``consume_batches`` (the scheduler's, the notifier's): a batch whose handling failed is
    handed over again, whole, before anything after it is fetched (NAKed while the next batch
    went on, it came back after later ones: an older schedule could undo a reschedule), and
    every message is acked once handled."""
    import asyncio

    from nats.js.api import StreamConfig

    from services.eventlog.consume import consume_batches, durable_pull

    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="WHOLE", subjects=["whole.>"]))
    for i in range(6):
        await js.publish(f"whole.{i}", str(i).encode())
    psub = await durable_pull(
        nc, "whole.>", durable="whole", stream="WHOLE", ack_wait=30, max_ack_pending=100
    )
    stop = asyncio.Event()
    handed: list[list[bytes]] = []

    async def handle(msgs):
        handed.append([m.data for m in msgs])
        if len(handed) == 1:
            raise RuntimeError("the first try fails")
        if sum(map(len, handed[1:])) == 6:
            stop.set()

    await asyncio.wait_for(consume_batches(psub, 3, 0.1, stop, handle, "test"), 30)
    assert handed == [[b"0", b"1", b"2"], [b"0", b"1", b"2"], [b"3", b"4", b"5"]]

    async def settled() -> bool:
        info = await js.consumer_info("WHOLE", "whole")
        return info.num_ack_pending == 0 and info.ack_floor.stream_seq == 6

    await wait_for(settled, what="every message acked")
