"""Standard Webhooks (issue 14, point 5), checked with clients this project did not write: the
``standardwebhooks`` library verifies every delivery a real local receiver gets, the official
CloudEvents SDK parses the new payload format. Secrets: generated and returned once, the old
kind still signing; payload formats per subscription (old subscriptions keep their body);
``Retry-After`` as an HTTP date; the delivery's span linked to the event's trace."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json

import msgspec
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from events import ENCODER, StakeholderSubscribed, tracing
from events.subjects import EVENTS_STREAM, INBOX_STREAM, REJECTIONS_STREAM
from projections.db import connect
from services.app.settings import Settings
from services.intake.webhooks import EXISTS, REPEAT, SHOWN
from services.notify import signing
from services.notify.secretbox import Keyring, subscription_aad
from services.notify.sender import backoff, retry_after_seconds
from tests.conftest import append_as_before, caught_up, cloudevent, request, wait_for
from tests.test_notifier import KEY, LOCAL, NOTIFIER_KEY, deliveries, notifier
from tests.test_secrets import raw_stream
from tests.webhook_receiver import Receiver, notification, verify, verify_legacy

OLD_SECRET = "an-old-secret-of-any-text"  # before Standard Webhooks: 16-256 characters
NEW_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, secret_key=KEY, webhook_allow_hosts=LOCAL)


def ce(type_: str, **data: object) -> dict:
    return cloudevent(type_, {"project_id": "apollo", **data})


def planned() -> list[dict]:
    return [
        ce("ProjectCreated", name="Apollo"),
        ce("MilestonePlanned", milestone_id="m1", name="Launch", kind="event", due="2026-12-20"),
        ce("TaskAdded", milestone_id="m1", task_id="t1", title="Build"),
    ]


def subscribe(stakeholder: str, url: str, **extra: object) -> dict:
    return ce("StakeholderSubscribed", stakeholder=stakeholder, url=url, **extra)


def reschedule(due: str, **attributes: object) -> dict:
    moved = ce("MilestoneRescheduled", milestone_id="m1", new_due=due, reason="scope")
    return {**moved, **attributes}


# -- pure: the signature, the secret forms, Retry-After ------------------------------------------
def test_the_library_verifies_each_secret_form() -> None:
    body = b'{"kind": "milestone.achieved"}'
    now = int(dt.datetime.now(dt.UTC).timestamp())
    generated = signing.generate_secret()
    assert generated.startswith("whsec_") and len(base64.b64decode(generated[6:])) == 32
    assert generated != signing.generate_secret()
    for secret, receiver_keys in [
        (generated, [generated]),
        (NEW_SECRET, [NEW_SECRET, bytes(range(32))]),
        # an old secret is its UTF-8 bytes: as bytes, or in whsec_ form, the library agrees
        (
            OLD_SECRET,
            [OLD_SECRET.encode(), "whsec_" + base64.b64encode(OLD_SECRET.encode()).decode()],
        ),
    ]:
        headers = signing.headers(secret, "d-1", now, body)
        assert headers["webhook-id"] == "d-1" and headers["webhook-timestamp"] == str(now)
        assert headers["webhook-signature"].startswith("v1,")
        for key in receiver_keys:
            assert Webhook(key).verify(body, headers) == {"kind": "milestone.achieved"}
        for forged in (
            {**headers, "webhook-timestamp": str(now - 1)},  # the timestamp is signed
            {**headers, "webhook-id": "d-2"},
        ):
            with pytest.raises(WebhookVerificationError):
                Webhook(receiver_keys[0]).verify(body, forged)
        with pytest.raises(WebhookVerificationError):
            Webhook(receiver_keys[0]).verify(body + b" ", headers)
    stale = signing.headers(NEW_SECRET, "d-1", now - 600, body)  # replayed 10 minutes later
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(NEW_SECRET).verify(body, stale)
    # a publisher's whsec_ value must be the specification's form
    assert signing.check_secret(NEW_SECRET) is None and signing.check_secret(OLD_SECRET) is None
    for bad in ("whsec_" + base64.b64encode(b"x" * 16).decode(), "whsec_not*base64*at*all!!"):
        assert "base64 of 24-64 bytes" in (signing.check_secret(bad) or "")


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = dt.datetime(2026, 12, 5, 12, 0, 0, tzinfo=dt.UTC)
    later = email.utils.format_datetime(now + dt.timedelta(seconds=90), usegmt=True)
    assert later == "Sat, 05 Dec 2026 12:01:30 GMT"
    assert retry_after_seconds(later, now) == 90.0
    assert retry_after_seconds("Saturday, 05-Dec-26 12:01:30 GMT", now) == 90.0  # RFC 850
    assert retry_after_seconds("Sat Dec  5 12:01:30 2026", now) == 90.0  # asctime
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Fri, 04 Dec 2026 12:00:00 GMT", now) == 0.0  # past: now
    for unreadable in (None, "", "soon", "-5x"):
        assert retry_after_seconds(unreadable, now) is None
    # honoured up to the cap, as before
    assert backoff(1, 1.0, 3600.0, 90.0) == 90.0
    assert backoff(1, 1.0, 60.0, 90.0) == 60.0


# -- on real servers ------------------------------------------------------------------------------
async def test_payload_formats_per_subscription_and_old_subscriptions_unchanged(
    system, api, nc, db_url, monkeypatch
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    # as a process with the SDK configured (services.app.telemetry) traces, without setting the
    # process-wide provider (set once, it would stay for every later test)
    monkeypatch.setattr(tracing, "TRACER", provider.get_tracer("test"))
    monkeypatch.setattr(tracing, "_on", True)
    receiver = await Receiver().start()
    old_url, new_url, v1_url = (f"{receiver.url}/{p}" for p in ("old", "new", "v1"))
    try:
        assert (await request(nc, planned())).accepted
        # a subscription made before payload versions: its stored event has no `payload`
        ring = Keyring.from_setting(KEY)
        sealed = ring.seal(OLD_SECRET, subscription_aad("apollo", "old", old_url))
        before = StakeholderSubscribed(
            project_id="apollo", stakeholder="old", url=old_url, secret=sealed
        )
        assert b'"payload"' not in ENCODER.encode(before)
        await append_as_before(nc, "before-standard-webhooks", "an-older-version", before)
        subscribed = await request(
            nc,
            [
                subscribe("new", new_url, secret=NEW_SECRET),  # payload: the default
                subscribe("v1", v1_url, secret=NEW_SECRET, payload="milestones.v1"),
            ],
        )
        assert subscribed.accepted, subscribed
        await caught_up(db_url, subscribed.events[-1].position)
        async with notifier(system):
            moved = await request(nc, reschedule("2026-12-21", traceparent=TRACEPARENT))
            assert moved.accepted

            async def all_three() -> bool:
                return len(receiver.delivered) == 3

            await wait_for(all_three, 20, "the reschedule at the three subscriptions")
        by = {notification(h, raw)["stakeholder"]: (h, raw) for _, h, raw in receiver.requests}

        # new: a CloudEvent, structured JSON, that the official SDK parses
        headers, raw = by["new"]
        assert headers["content-type"] == "application/cloudevents+json"
        assert verify(NEW_SECRET, headers, raw) and "x-milestones-signature" not in headers
        event = from_http_event(HTTPMessage(headers=headers, body=raw))
        assert event.get_specversion() == "1.0"
        assert event.get_id() == headers["webhook-id"] == headers["idempotency-key"]
        assert event.get_type() == "dev.milestones.milestone.rescheduled"
        assert event.get_source() == "/projects/apollo" and event.get_subject() == "m1"
        assert event.get_time() == dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
        assert event.get_extension("traceparent") == TRACEPARENT
        data = event.get_data()
        assert data["kind"] == "milestone.rescheduled" and data["id"] == event.get_id()
        assert data["summary"] == "m1 moved from 2026-12-20 to 2026-12-21: scope"

        # old: today's body, byte for byte the Notification, and the old header still verifies
        headers, raw = by["old"]
        assert headers["content-type"] == "application/json"
        legacy = json.loads(raw)
        assert set(legacy) == {
            "id", "kind", "project_id", "milestone_id", "stakeholder", "summary",
            "created_at", "position", "event",
        }  # fmt: skip
        assert legacy["summary"] == data["summary"] and legacy["id"] == headers["webhook-id"]
        assert verify_legacy(OLD_SECRET, headers, raw)
        assert verify(OLD_SECRET, headers, raw)  # Webhook(secret.encode())
        whsec_form = "whsec_" + base64.b64encode(OLD_SECRET.encode()).decode()
        assert Webhook(whsec_form).verify(raw, headers)["kind"] == "milestone.rescheduled"

        # explicitly milestones.v1: the same body as the old ones, signed the new way
        headers, raw = by["v1"]
        assert headers["content-type"] == "application/json" and verify(NEW_SECRET, headers, raw)
        assert set(json.loads(raw)) == set(legacy)

        # the outbox kept what was sent, and each attempt's span is linked to the event's trace
        conn = await connect(db_url)
        try:
            rows = await conn.fetch(
                "SELECT stakeholder, content_type, traceparent, body FROM deliveries"
            )
        finally:
            await conn.close()
        assert {r["stakeholder"]: r["content_type"] for r in rows} == {
            "old": "application/json",
            "new": "application/cloudevents+json",
            "v1": "application/json",
        }
        assert {r["traceparent"] for r in rows} == {TRACEPARENT}
        assert {r["stakeholder"]: bytes(r["body"]) for r in rows} == {
            k: raw for k, (_, raw) in by.items()
        }
        delivered = [s for s in spans.get_finished_spans() if s.name == "webhook.deliver"]
        assert len(delivered) == 3
        for span in delivered:
            assert [format(link.context.trace_id, "032x") for link in span.links] == [
                TRACEPARENT.split("-")[1]
            ]
            assert span.attributes["http.response.status_code"] == 200
    finally:
        await receiver.stop()


async def test_a_generated_secret_is_returned_once_and_signs(system, api, nc, db_url) -> None:
    receiver = await Receiver().start()
    try:
        assert (await request(nc, planned())).accepted
        first = subscribe("board", receiver.url)  # no secret: one is generated
        reply = await request(nc, first)
        assert reply.accepted and reply.webhook_secrets is not None
        (shown,) = reply.webhook_secrets
        assert shown.id == first["id"] and shown.note == SHOWN
        assert shown.secret and shown.secret.startswith("whsec_")
        assert len(base64.b64decode(shown.secret[6:])) == 32

        # the same CloudEvent again: nothing appended, the same answer, but no secret
        again = await request(nc, first)
        assert again.events == reply.events and again.webhook_secrets is not None
        assert [(g.secret, g.note) for g in again.webhook_secrets] == [(None, REPEAT)]
        # the same subscription under a new id: nothing stored, its secret unchanged
        same = await request(nc, subscribe("board", receiver.url, secret="generate"))
        assert same.accepted and same.events == []
        assert [(g.secret, g.note) for g in same.webhook_secrets or []] == [(None, EXISTS)]
        # "generate" over HTTP: returned in the response
        posted = await api.post("/events", json=subscribe("http", receiver.url, secret="generate"))
        assert posted.status_code == 202, posted.text
        http_secret = posted.json()["webhook_secrets"][0]["secret"]
        assert http_secret.startswith("whsec_") and http_secret != shown.secret
        # the inbox sends no reply: "generate" is refused, saying where to subscribe instead
        js = nc.jetstream()
        await js.publish(
            "milestones.inbox.StakeholderSubscribed",
            ENCODER.encode(subscribe("inbox", receiver.url, secret="generate")),
        )

        async def refused() -> bool:
            return bool(await raw_stream(nc, REJECTIONS_STREAM)) and not await raw_stream(
                nc, INBOX_STREAM
            )

        await wait_for(refused, 20, "the inbox's refusal")
        (rejection,) = await raw_stream(nc, REJECTIONS_STREAM)
        assert b"needs a reply to return the secret in" in rejection

        async with notifier(system):
            moved = await request(nc, reschedule("2026-12-21"))

            async def both() -> bool:
                return {b["stakeholder"] for _, b in receiver.delivered} == {"board", "http"}

            await wait_for(both, 20, "the reschedule at both subscriptions")
            await caught_up(db_url, moved.events[-1].position)
        for status, headers, raw in receiver.requests:
            stakeholder = json.loads(raw)["data"]["stakeholder"]
            key = shown.secret if stakeholder == "board" else http_secret
            assert status == 200 and verify(key, headers, raw)
            assert not verify(NOTIFIER_KEY, headers, raw)
        # the clear value is nowhere in the log
        for stored in await raw_stream(nc, EVENTS_STREAM):
            assert shown.secret.encode() not in stored and http_secret.encode() not in stored
    finally:
        await receiver.stop()


async def test_a_retry_after_date_sets_the_next_attempt(system, api, nc, db_url) -> None:
    receiver = await Receiver().start()
    receiver.fail_next = 1
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)
    receiver.retry_after = email.utils.format_datetime(later, usegmt=True)
    try:
        reply = await request(nc, [*planned(), subscribe("board", receiver.url)])
        assert reply.accepted
        async with notifier(system, backoff_base=0.05, backoff_max=3600):
            assert (await request(nc, reschedule("2026-12-21"))).accepted

            async def attempted() -> bool:
                return [d["attempts"] for d in await deliveries(api)] == [1]

            await wait_for(attempted, 20, "the first attempt")
        conn = await connect(db_url)
        try:
            row = await conn.fetchrow(
                "SELECT d.next_attempt_at, a.attempted_at, d.status, d.last_status "
                "FROM deliveries d JOIN delivery_attempts a ON a.delivery_id = d.id"
            )
        finally:
            await conn.close()
        assert (row["status"], row["last_status"]) == ("pending", 503)
        # the date, not the 50 ms backoff (the header has whole seconds: up to 1 s earlier)
        next_at = row["next_attempt_at"]
        assert later - dt.timedelta(seconds=2) <= next_at <= later + dt.timedelta(seconds=1)
        assert (row["next_attempt_at"] - row["attempted_at"]).total_seconds() > 85
    finally:
        await receiver.stop()
