"""Telling stakeholders, end to end on real servers and a real local HTTP receiver: what is sent,
Standard Webhooks signatures (checked with the ``standardwebhooks`` library), idempotency keys,
retries with backoff while the receiver is down, no loss across a notifier restart, the delivery
log, digests and status reports. (Payload formats, secret forms and ``Retry-After``:
tests/test_standard_webhooks.py.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

import msgspec
import pytest

from events.subjects import EVENTS_STREAM
from services.app.settings import Settings
from services.notify.notifier import NOTIFIER_DURABLE, Notifier
from services.notify.secretbox import Keyring
from services.notify.targets import TargetPolicy
from tests.conftest import TODAY, caught_up, cli_env, cloudevent, request, wait_for
from tests.test_cli import run
from tests.webhook_receiver import Receiver, verify

SECRET = "s3cret-s3cret-s3cret"  # a secret of the old kind: any 16-256 characters
# the notifier's own key (MILESTONES_WEBHOOK_SECRET): signs subscriptions without a secret
NOTIFIER_KEY = "whsec_" + base64.b64encode(b"the-notifier-s-own-key-32-bytes!").decode()
KEY = Keyring.generate("tests")
LOCAL = "127.0.0.1"  # the local receiver: allow-listed, as `milestones dev` allows loopback


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """conftest's, with a key to seal webhook secrets and the local receiver allowed."""
    return msgspec.structs.replace(settings, secret_key=KEY, webhook_allow_hosts=LOCAL)


def ce(type_: str, **data: object) -> dict:
    return cloudevent(type_, {"project_id": "apollo", **data}, actor="ada")


@contextlib.asynccontextmanager
async def notifier(system, **kw: Any):
    queries = system.queries
    n = Notifier(
        system.nc,
        queries.pool,
        queries.watcher,
        today=lambda: TODAY,
        **{
            "backoff_base": 0.05,
            "backoff_max": 0.4,
            "sweep_every": 3600,
            "poll": 0.05,
            "keyring": Keyring.from_setting(KEY),
            "targets": TargetPolicy.from_setting(LOCAL),
            "default_secret": NOTIFIER_KEY,
            **kw,
        },
    )
    stop = asyncio.Event()
    task = asyncio.create_task(n.run(stop))
    try:
        yield n
    finally:
        stop.set()
        await task


def project(url: str, secret: str | None = SECRET) -> list[dict]:
    sub = {"stakeholder": "steering committee", "url": url} | ({"secret": secret} if secret else {})
    return [
        ce("ProjectCreated", name="Apollo"),
        ce("StakeholderSubscribed", **sub),
        ce(
            "MilestonePlanned",
            milestone_id="design",
            name="Design frozen",
            kind="event",
            due="2026-12-01",
        ),
        ce("TaskAdded", milestone_id="design", task_id="spec", title="Spec"),
        ce(
            "MilestonePlanned",
            milestone_id="build",
            name="Build done",
            kind="event",
            due="2026-12-10",
        ),
        ce("TaskAdded", milestone_id="build", task_id="code", title="Code"),
        ce(
            "MilestonePlanned",
            milestone_id="legal",
            name="Contract",
            kind="event",
            due="2026-11-30",
        ),
        ce("TaskAdded", milestone_id="legal", task_id="sign", title="Sign"),
        ce("DependencyAdded", milestone_id="build", depends_on="design", lag_days=2),
    ]


async def deliveries(api, **params: object) -> list[dict]:
    return (await api.get("/deliveries", params={"limit": 1000, **params})).json()["data"]


async def test_each_kind_is_posted_signed_with_its_idempotency_key(system, api, nc, db_url):
    receiver = await Receiver().start()
    try:
        async with notifier(system):
            assert (await request(nc, project(receiver.url))).accepted
            assert (
                await request(
                    nc,
                    ce(
                        "MilestoneRescheduled",
                        milestone_id="design",
                        new_due="2026-12-09",
                        reason="supplier late",
                    ),
                )
            ).accepted

            async def kinds_arrived(*kinds: str) -> bool:
                return set(kinds) <= {b["kind"] for _, b in receiver.delivered}

            # health is judged on the read model as it stands: wait for build to be announced late
            # before design is achieved (which makes build fit again)
            await wait_for(
                lambda: kinds_arrived(
                    "milestone.rescheduled", "dependency.violated", "milestone.at_risk"
                ),
                20,
                "the move, the violation and the lateness",
            )
            for c in [
                ce("TaskCompleted", milestone_id="design", task_id="spec"),
                ce("DeadlineReached", milestone_id="legal", due="2026-11-30"),
                ce(
                    "StatusReported",
                    milestone_id="build",
                    health="at_risk",
                    note="waiting for design",
                ),
            ]:
                assert (await request(nc, c)).accepted
            await wait_for(
                lambda: kinds_arrived("milestone.achieved", "milestone.missed"),
                20,
                "achieved and missed",
            )
            last = (
                (await request(nc, ce("StatusReported", health="on_track", note="weekly")))
                .events[-1]
                .position
            )
            await caught_up(db_url, last)

        for headers, body in receiver.delivered:
            raw = next(b for s, h, b in receiver.requests if h is headers)
            assert verify(SECRET, headers, raw), "the signature must verify over the raw body"
            assert not verify(NOTIFIER_KEY, headers, raw)  # its own secret, not the notifier's
            assert (
                headers["webhook-id"] == headers["idempotency-key"] == body["id"]
                and headers["x-milestones-kind"] == body["kind"]
            )
        by_kind = {b["kind"]: b for _, b in receiver.delivered}
        assert (
            by_kind["milestone.rescheduled"]["summary"]
            == "design moved from 2026-12-01 to 2026-12-09: supplier late"
        )
        assert by_kind["dependency.violated"]["milestone_id"] == "build"
        assert (
            by_kind["milestone.at_risk"]["health"] == "late"
            and by_kind["milestone.at_risk"]["milestone_id"] == "build"
        )
        assert by_kind["milestone.missed"]["event"]["data"]["open_tasks"] == ["sign"]
        assert not verify("another-secret-entirely", *next((h, b) for s, h, b in receiver.requests))

        log = await deliveries(api, project_id="apollo")
        assert {d["status"] for d in log} == {"delivered"} and all(
            len(d["attempt_log"]) == 1 for d in log
        )
        assert len(log) == len(receiver.requests)  # each notification once
        # the secret is never shown: not in the audit trail, not in the subscriptions query
        audit = (await api.get("/audit", params={"type": "StakeholderSubscribed"})).json()["data"]
        assert SECRET not in str(audit)
        subs = (await api.get("/projects/apollo/subscriptions")).json()["data"]
        assert subs[0]["signed"] is True and "secret" not in subs[0]
        # the person's status update is kept and shown
        build = (await api.get("/milestones/build", params={"project_id": "apollo"})).json()["data"]
        assert (build["last_report"]["health"], build["last_report"]["note"]) == (
            "at_risk",
            "waiting for design",
        )
        reports = (await api.get("/projects/apollo/status-reports")).json()["data"]
        assert [(r["milestone_id"], r["actor"], r["note"]) for r in reports] == [
            (None, "ada", "weekly"),
            ("build", "ada", "waiting for design"),
        ]

        # unsubscribed: nothing more is sent to it (the notifier has acked past the change)
        async with notifier(system):
            off = await request(
                nc,
                ce("StakeholderUnsubscribed", stakeholder="steering committee", url=receiver.url),
            )
            moved = await request(
                nc,
                ce(
                    "MilestoneRescheduled",
                    milestone_id="build",
                    new_due="2027-01-15",
                    reason="after the unsubscribe",
                ),
            )
            assert off.accepted and moved.accepted

            async def acked() -> bool:
                info = await nc.jetstream().consumer_info(EVENTS_STREAM, NOTIFIER_DURABLE)
                return info.ack_floor.stream_seq >= moved.events[-1].position

            await wait_for(acked, 20, "the notifier to pass the reschedule")
        assert len(await deliveries(api, project_id="apollo")) == len(log)
        assert (await api.get("/projects/apollo/subscriptions")).json()["data"] == []
        code, out, _ = await run("reports", "apollo", env=cli_env(system.settings))
        assert code == 0 and "waiting for design" in out and "weekly" in out
    finally:
        await receiver.stop()


async def test_a_receiver_that_is_down_gets_everything_once_it_is_back(system, api, nc, db_url):
    receiver = Receiver()  # not listening yet: connection refused
    async with notifier(system):
        subscribed = await request(nc, project(receiver.url, secret=None))
        assert subscribed.accepted
        # no secret sent: one is generated and returned once, or (where none can be) the
        # notifier's own key signs
        generated = [g.secret for g in subscribed.webhook_secrets or [] if g.secret]
        key = generated[0] if generated else NOTIFIER_KEY
        assert (
            await request(nc, ce("TaskCompleted", milestone_id="design", task_id="spec"))
        ).accepted

        async def retried() -> bool:
            log = await deliveries(api, kind="milestone.achieved")
            return bool(log) and log[0]["attempts"] >= 3

        await wait_for(retried, 20, "three failed attempts")
        failing = (await deliveries(api, kind="milestone.achieved"))[0]
        assert failing["status"] == "pending" and "ConnectError" in failing["last_error"]
        gaps = [a["at"] for a in failing["attempt_log"]]
        assert gaps == sorted(gaps)

    # the notifier is down while more happens; events wait in the stream (durable consumer)
    moved = await request(
        nc, ce("MilestoneRescheduled", milestone_id="build", new_due="2026-12-20", reason="scope")
    )
    await caught_up(db_url, moved.events[-1].position, ("status",))
    await receiver.start()
    receiver.fail_next = 2  # and it still stumbles twice: same idempotency key on the retries
    try:
        async with notifier(system):

            async def all_delivered() -> bool:
                log = await deliveries(api)
                return {d["kind"] for d in log} >= {
                    "milestone.achieved",
                    "milestone.rescheduled",
                } and all(d["status"] == "delivered" for d in log)

            await wait_for(all_delivered, 20, "every delivery to succeed")
        log = await deliveries(api)
        keys = [h["idempotency-key"] for _, h, _ in receiver.requests]
        assert sorted(set(keys)) == sorted(d["id"] for d in log)  # nothing lost
        # every attempt signed, with the same webhook-id and its own timestamp
        assert all(verify(key, h, b) for _, h, b in receiver.requests)
        assert [h["webhook-id"] for _, h, _ in receiver.requests] == keys
        assert len(receiver.delivered) == len(
            log
        )  # each accepted exactly once; duplicates only as retries
        achieved = next(d for d in log if d["kind"] == "milestone.achieved")
        assert achieved["attempts"] == len(achieved["attempt_log"]) >= 4
        assert [a["status"] for a in achieved["attempt_log"]][-1] == 200
    finally:
        await receiver.stop()


async def test_failed_deliveries_can_be_sent_again(system, api, nc, db_url):
    receiver = await Receiver().start()
    receiver.fail_next = 10
    try:
        async with notifier(system, max_attempts=2):
            assert (await request(nc, project(receiver.url))).accepted
            assert (
                await request(nc, ce("TaskCompleted", milestone_id="design", task_id="spec"))
            ).accepted

            async def failed() -> bool:
                return any(d["status"] == "failed" for d in await deliveries(api))

            await wait_for(failed, 20, "a delivery to fail for good")
            dead = next(d for d in await deliveries(api) if d["status"] == "failed")
            assert dead["attempts"] == 2 and dead["last_status"] == 503
            receiver.fail_next = 0
            assert (await api.post(f"/deliveries/{dead['id']}/retry")).status_code == 200

            async def delivered() -> bool:
                return (await deliveries(api, status="delivered")) != []

            await wait_for(delivered, 20, "the retried delivery")
            again = await api.post(f"/deliveries/{dead['id']}/retry")
            assert (
                again.status_code == 409 and "delivered already" in again.json()["error"]["message"]
            )
        assert (await api.post("/deliveries/nope/retry")).json()["error"]["code"] == "not_found"
        bad = await api.get("/deliveries", params={"status": "lost"})
        assert (
            bad.status_code == 400
            and "status accepts pending, delivered, failed" in bad.json()["error"]["message"]
        )
    finally:
        await receiver.stop()


async def test_digest_on_demand_says_what_changed_since_the_last_one(
    system, api, nc, db_url, settings
):
    receiver = await Receiver().start()
    try:
        async with notifier(system):
            reply = await request(nc, project(receiver.url))
            await caught_up(db_url, reply.events[-1].position)
            first = (await api.post("/projects/apollo/digest")).json()["data"]
            assert first["queued_deliveries"] == 1
            d1 = first["digest"]
            assert d1["since_position"] == 0 and len(d1["changes"]) == 9
            assert d1["counts"] == {"on_track": 3} and [
                m["milestone_id"] for m in d1["milestones"]
            ] == ["build", "design", "legal"]  # by order, then id
            done = await request(nc, ce("TaskCompleted", milestone_id="design", task_id="spec"))
            await caught_up(db_url, done.events[-1].position)
            preview = (await api.get("/projects/apollo/digest")).json()["data"]["digest"]
            assert [c["summary"] for c in preview["changes"]] == [
                "design: task spec completed",
                "design achieved (all tasks completed)",
            ]
            env = cli_env(settings)
            code, out, _ = await run("digest", "apollo", env=env)
            assert (
                code == 0
                and "[ ACHIEVED] design" in out
                and "design achieved (all tasks completed)" in out
            )
            code, out, _ = await run("digest", "apollo", "--preview", env=env)
            assert (
                code == 0 and "Changes since" in out and "none" in out
            )  # the CLI's digest was recorded

            async def digests_sent() -> bool:
                return sum(b["kind"] == "project.digest" for _, b in receiver.delivered) == 2

            await wait_for(digests_sent, 20, "both digests to reach the subscriber")
            code, out, _ = await run(
                "deliveries", "--project", "apollo", "--kind", "project.digest", env=env
            )
            assert code == 0 and out.count("project.digest") == 2 and "delivered" in out
        missing = await api.get("/projects/nobody/digest")
        assert missing.status_code == 404
    finally:
        await receiver.stop()
