"""Decision gates end to end on real servers (nats-server, PostgreSQL, a webhook receiver, the
CLI against a real HTTP listener): a gate cannot be achieved without its approvals, and every
approval is in the audit with who and why. README "Decision gates"."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from services.app.embedded import free_port
from services.app.serving import serve_http
from services.app.settings import Settings
from services.auth.principal import Principal
from services.eventlog.log import EventLog
from tests.conftest import (
    MemoryAuthenticator,
    caught_up,
    cloudevent,
    http_client,
    request,
    wait_for,
)
from tests.test_cli import run
from tests.test_http_auth import sign_in
from tests.test_notifier import KEY, LOCAL, notifier
from tests.webhook_receiver import Receiver

P, M = "apollo", "launch"
TOKENS = {"dana": "dana-token", "lee": "lee-token", "mallory": "mallory-token"}
MILESTONE = f"/projects/{P}/milestones/{M}"
APPROVALS = f"{MILESTONE}/approvals"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """conftest's, with a key to seal webhook secrets and the local receiver allowed."""
    return msgspec.structs.replace(settings, secret_key=KEY, webhook_allow_hosts=LOCAL)


@pytest.fixture
def authenticator() -> MemoryAuthenticator:
    """The roles' test credentials, and three named ones: dana (a reader) and lee (an auditor)
    approve the gate; mallory is a reader who does not."""
    auth = MemoryAuthenticator()
    for name, role in (("dana", "reader"), ("lee", "auditor"), ("mallory", "reader")):
        principal = Principal(id=f"cred-{name}", role=role, name=name)  # type: ignore[arg-type]
        auth.add(TOKENS[name], principal)
    return auth


def ce(type_: str, **data: object) -> dict:
    return cloudevent(type_, {"project_id": P, **data}, actor="ada")


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@contextlib.asynccontextmanager
async def listening(app) -> AsyncIterator[str]:
    """``app`` on a loopback port, for the CLI (a process of its own)."""
    port, stop = free_port(), asyncio.Event()
    task = asyncio.create_task(serve_http(app, "127.0.0.1", port, stop, grace=0.5))
    url = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                await client.get(f"{url}/health")
            return True
        except httpx.HTTPError:
            return False

    try:
        await wait_for(up, 10, "the HTTP listener")
        yield url
    finally:
        stop.set()
        await task


async def status_of(api: httpx.AsyncClient, position: int) -> dict:
    got = await api.get(f"/milestones/{M}", params={"project_id": P, "min_position": position})
    assert got.status_code == 200, got.text
    return got.json()["data"]


async def test_a_gate_is_achieved_only_with_its_approvals_and_every_one_is_audited(
    system, nc, db_url, authenticator
):
    receiver = await Receiver().start()
    async with (
        notifier(system),
        http_client(system, authenticator) as (api, app),
        listening(app) as url,
    ):
        plan = [
            ce("ProjectCreated", name="Apollo"),
            ce("StakeholderSubscribed", stakeholder="steering", url=receiver.url),
            ce(
                "MilestonePlanned",
                milestone_id=M,
                name="Launch approval",
                kind="event",
                due="2026-12-20",
                approvers=["dana", "lee"],
            ),
            ce("TaskAdded", milestone_id=M, task_id="review", title="Readiness review"),
        ]
        assert (await request(nc, plan)).accepted
        done = await request(nc, ce("TaskCompleted", milestone_id=M, task_id="review"))
        assert [e.type for e in done.events or []] == ["TaskCompleted", "ApprovalRequested"]

        # who may sign: not a principal the gate does not name, whatever its role
        refused = await api.post(
            APPROVALS, json={"decision": "approve", "meaning": "ok"}, headers=bearer("mallory")
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
        assert "mallory is not an approver" in refused.json()["error"]["message"]
        # never a self-declared approver: over HTTP POST /events and over NATS
        forged = ce("MilestoneApproved", milestone_id=M, meaning="ok", approver="dana")
        by_http = await api.post("/events", json=forged)
        assert by_http.status_code == 403, by_http.text
        assert "leave it out" in by_http.json()["error"]["message"]
        forged = ce("MilestoneApproved", milestone_id=M, meaning="ok", approver="dana")
        by_nats = await request(nc, forged)
        assert by_nats.error is not None and by_nats.error.code == "forbidden"
        named = await api.post(
            APPROVALS,
            json={"decision": "approve", "meaning": "ok", "approver": "lee"},
            headers=bearer("dana"),
        )
        assert named.status_code == 403 and "leave it out" in named.json()["error"]["message"]
        # nor the approvals route's source on POST /events for a caller not granted it
        internal = cloudevent(
            "MilestoneApproved",
            {"project_id": P, "milestone_id": M, "meaning": "ok"},
            source="milestones/approvals",
        )
        assert (await api.post("/events", json=internal)).status_code == 403

        # dana approves (a retry with the same key answers like the first)
        body = {"decision": "approve", "meaning": "approved for launch", "reason": "review ok"}
        key = {"Idempotency-Key": "dana-1"}
        first = await api.post(APPROVALS, json=body, headers=bearer("dana") | key)
        assert first.status_code == 202, first.text
        assert [e["type"] for e in first.json()["events"]] == ["MilestoneApproved"]
        again = await api.post(APPROVALS, json=body, headers=bearer("dana") | key)
        assert again.json() == first.json()
        status = await status_of(api, first.json()["events"][0]["position"])
        assert status["health_reasons"][0] == "awaiting approval (1 of 2: dana)"
        assert status["health"] == "on_track" and status["achieved_at"] is None
        sign_off = status["sign_off"]
        assert sign_off["state"] == "awaiting" and sign_off["approved_by"] == ["dana"]
        assert sign_off["pending"] == ["lee"] and sign_off["needed"] == 2
        assert sign_off["approvals"]["dana"]["meaning"] == "approved for launch"
        assert sign_off["approvals"]["dana"]["principal"] == "cred-dana"

        # a principal approves once
        twice = await api.post(APPROVALS, json=body, headers=bearer("dana"))
        assert twice.status_code == 409 and twice.json()["error"]["code"] == "conflict"
        assert "dana already approved" in twice.json()["error"]["message"]
        # a reported achievement without the approvals is refused
        early = await request(nc, ce("MilestoneAchieved", milestone_id=M))
        assert early.error is not None and early.error.code == "rejected"
        assert "1 of 2 approvals missing" in early.error.message

        # lee rejects, with the CLI (--json): the approvals are cleared, the gate reopened
        env = {"MILESTONES_API_URL": url, "MILESTONES_TOKEN": TOKENS["lee"]}
        code, out, err = await run(
            "reject", P, M, "--reason", "load test failed", "--json", env=env
        )
        assert code == 0, err
        rejected = json.loads(out)
        assert rejected["accepted"] is True
        assert [e["type"] for e in rejected["events"]] == ["MilestoneApprovalRejected"]
        status = await status_of(api, rejected["events"][0]["position"])
        assert status["sign_off"]["state"] == "rejected"
        assert status["sign_off"]["approved_by"] == []
        assert status["sign_off"]["last_rejection"]["by"] == "lee"
        assert "rejected by lee: load test failed" in status["health_reasons"][0]

        # dana approves again through the dashboard's form (a session: CSRF-protected)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as browser:
            assert (await sign_in(browser, TOKENS["dana"])).status_code == 303
            page = await browser.get(f"/ui{MILESTONE}")
            assert page.status_code == 200, page.text
            assert 'id="sign-off"' in page.text and "Sign as <strong>dana</strong>" in page.text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf
            form = {"decision": "approve", "meaning": "approved for launch"}
            no_token = await browser.post(f"/ui{APPROVALS}", data=form)
            assert no_token.status_code == 403
            posted = await browser.post(f"/ui{APPROVALS}", data=form | {"csrf": csrf.group(1)})
            assert posted.status_code == 303, posted.text
            assert posted.headers["location"] == f"/ui{MILESTONE}?signed=approve#sign-off"
            shown = await browser.get(posted.headers["location"])
            assert "Your approval is recorded." in shown.text
        # mallory, signed in, sees the state but no form
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as other:
            assert (await sign_in(other, TOKENS["mallory"])).status_code == 303
            page = await other.get(f"/ui{MILESTONE}")
            assert 'id="sign-off"' in page.text and "Sign as" not in page.text

        # lee approves with the CLI (a table): the last approval achieves the gate
        code, out, err = await run(
            "approve", P, M, "--meaning", "approved for launch", "--reason", "fixed", env=env
        )
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith("accepted MilestoneApproved at position ")
        assert lines[1].startswith("   and MilestoneAchieved at position ")
        last = int(lines[1].rsplit(" ", 1)[1])
        code, _, err = await run("approve", P, M, "--meaning", "again", env=env)
        assert code == 1 and "refused (rejected)" in err and "is achieved" in err
        nowhere = {"MILESTONES_API_URL": f"http://127.0.0.1:{free_port()}", "MILESTONES_TOKEN": "t"}
        code, _, err = await run("approve", P, M, "--meaning", "x", env=nowhere)
        assert code == 2 and err.startswith("milestones: cannot reach the HTTP API")

        status = await status_of(api, last)
        assert status["health"] == "achieved" and status["sign_off"]["state"] == "approved"
        assert status["sign_off"]["approved_by"] == ["dana", "lee"]

        # the audit: every approval with who (approver and credential), when, meaning, reason
        await caught_up(db_url, last)
        audit = (await api.get("/audit", params={"project_id": P, "limit": 1000})).json()["data"]
        signed = [
            (a["type"], a["payload"].get("approver"), a["principal"], a["payload"].get("meaning"))
            for a in audit
            if a["type"] in ("MilestoneApproved", "MilestoneApprovalRejected")
        ]
        assert signed == [
            ("MilestoneApproved", "dana", "cred-dana", "approved for launch"),
            ("MilestoneApprovalRejected", "lee", "cred-lee", None),
            ("MilestoneApproved", "dana", "cred-dana", "approved for launch"),
            ("MilestoneApproved", "lee", "cred-lee", "approved for launch"),
        ]
        for a in audit:
            if a["type"] == "MilestoneApproved":
                assert a["payload"]["approved_at"] and a["occurred_at"], a
        achieved = next(a for a in audit if a["type"] == "MilestoneAchieved")
        assert achieved["payload"]["evidence"] == "approved by dana, lee: approved for launch"
        history = (await api.get(f"/milestones/{M}/history", params={"project_id": P})).json()
        reasons = [h["reason"] for h in history["data"]]
        assert (
            "approved by dana (credential cred-dana): approved for launch; reason: review ok"
            in reasons
        )
        assert "approval rejected by lee (credential cred-lee): load test failed" in reasons

        # the webhooks: requested, approved, rejected
        async def notified() -> bool:
            kinds = {b["kind"] for _, b in receiver.delivered}
            return {
                "milestone.approval_requested",
                "milestone.approved",
                "milestone.approval_rejected",
            } <= kinds

        await wait_for(notified, 30, "the sign-off notifications")
        summaries = {b["kind"]: b["summary"] for _, b in receiver.delivered}
        assert "dana, lee must approve" in summaries["milestone.approval_requested"]
        assert summaries["milestone.approval_rejected"].startswith(
            f"{M} approval rejected by lee: load test failed"
        )
    await receiver.stop()
    assert (await EventLog(nc).last_sequence()) >= last


async def test_only_an_admin_changes_a_gate_so_a_publisher_cannot_loosen_one_and_achieve_it(
    system, nc, authenticator
):
    """A publisher plans gates (MilestonePlanned's approvers) but cannot remove or lower one:
    otherwise it could unmake the gate and report MilestoneAchieved without a sign-off."""
    async with http_client(system, authenticator) as (api, _app):
        plan = [
            ce("ProjectCreated", name="Apollo"),
            ce(
                "MilestonePlanned",
                milestone_id=M,
                name="Launch approval",
                kind="event",
                due="2026-12-20",
                approvers=["dana", "lee"],
            ),
        ]
        assert (await request(nc, plan)).accepted
        unmake = ce("ApproversSet", milestone_id=M, approvers=[])
        by_publisher = await api.post("/events", json=unmake)  # the publisher's credential
        assert by_publisher.status_code == 403, by_publisher.text
        assert "changed by an admin only" in by_publisher.json()["error"]["message"]
        achieved = await api.post("/events", json=ce("MilestoneAchieved", milestone_id=M))
        assert achieved.json()["error"]["code"] == "rejected", achieved.text  # 2 approvals missing

        change = {"decision": "set_approvers", "approvers": ["dana"], "approvals_needed": 1}
        by_reader = await api.post(APPROVALS, json=change, headers=bearer("dana"))
        assert by_reader.status_code == 403 and "admin only" in by_reader.text
        by_admin = await api.post(APPROVALS, json=change)  # the admin's credential
        assert by_admin.status_code == 202, by_admin.text
        position = by_admin.json()["events"][-1]["position"]
        assert [e["type"] for e in by_admin.json()["events"]] == [
            "ApproversSet",
            "ApprovalRequested",  # no task: its one approver may sign at once
        ]
        gate = (await status_of(api, position))["sign_off"]
        assert (gate["approvers"], gate["needed"]) == (["dana"], 1)
