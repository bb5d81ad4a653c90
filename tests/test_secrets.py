"""Secrets never in clear, webhook targets safe (issue 12, requirements 5 and 6).

The cipher, the keyring and the target policy on their own; then, on real servers: the secret
is sealed in the log, the read model, the outbox, and shown nowhere (direct reads of the streams,
the audit trail and its export, /rejections, /parked, the subscriptions listing), while the
receiver still verifies the signature; keys rotate; a moved, tampered or unknown-key secret fails
its delivery; unsafe targets are refused at subscription and, through a stub resolver, at send
time, and the connection goes to the address that was checked. Nothing here sends anything to a
private or metadata address: refused targets are refused before any connect, and the only
receiver is the local one on 127.0.0.1 (allow-listed, as `milestones dev` does).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import ipaddress
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import httpcore
import httpx
import msgspec
import nats
import pytest
import structlog

from events import (
    ENCODER,
    REJECTION_DECODER,
    StakeholderSubscribed,
    StoredEvent,
    decode_stored,
    event_of,
)
from events.errors import StartupError
from events.subjects import EVENTS_STREAM, INBOX_STREAM, REJECTIONS_STREAM
from projections.db import connect, park
from services.app.logs import redact_secrets
from services.app.schema_export import data_schema
from services.app.settings import Settings
from services.notify.redact import redact_bytes, redact_json_text
from services.notify.secretbox import (
    Keyring,
    KeyringError,
    SecretError,
    Tampered,
    UnknownKey,
    is_sealed,
    keyring_from_settings,
    load_key_file,
    subscription_aad,
    write_key_file,
)
from services.notify.sender import signing_key
from services.notify.targets import PinnedTransport, TargetPolicy, TargetRefused, unsafe
from tests.conftest import append_as_before, caught_up, cloudevent, request, wait_for
from tests.test_notifier import notifier
from tests.webhook_receiver import Receiver, verify

# A Standard Webhooks style secret ("whsec_" + base64): sealed and opened unchanged.
SECRET = "whsec_" + base64.b64encode(b"milestones-test-secret-0123456789").decode()
OTHER = "another-secret-for-stakeholder-b"
OLD = Keyring.generate("old")
NEW = Keyring.generate("new")
ALLOWED = "127.0.0.1,hooks.test"  # the local receiver, and a name the stub resolver maps to it
AAD = subscription_aad("apollo", "board", "https://hooks.example.com/x")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, secret_key=OLD, webhook_allow_hosts=ALLOWED)


class StubDNS:
    """A resolver with fixed answers; each name's answers are used in turn (the last repeats),
    so a test can play a rebinding DNS server. Records every question."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        turns = self.answers.get(host)
        if not turns:
            raise OSError(f"stub: no such host {host}")
        return turns.pop(0) if len(turns) > 1 else turns[0]


def ce(type_: str, **data: object) -> dict:
    return cloudevent(type_, {"project_id": "apollo", **data})


def planned() -> list[dict]:
    return [
        ce("ProjectCreated", name="Apollo"),
        ce("MilestonePlanned", milestone_id="m1", name="Launch", kind="event", due="2026-12-20"),
        ce("TaskAdded", milestone_id="m1", task_id="t1", title="Build"),
    ]


def subscribe(stakeholder: str, url: str, secret: str | None = SECRET) -> dict:
    extra = {"secret": secret} if secret else {}
    return ce("StakeholderSubscribed", stakeholder=stakeholder, url=url, **extra)


def reschedule(due: str) -> dict:
    return ce("MilestoneRescheduled", milestone_id="m1", new_due=due, reason="scope")


async def raw_stream(nc: nats.NATS, stream: str, subjects: str = "") -> list[bytes]:
    """Every message of a stream as stored (direct reads, as the services may do), optionally
    only those whose subject starts with ``subjects``."""
    js = nc.jetstream()
    state = (await js.stream_info(stream)).state
    if not state.messages:
        return []
    found = [await js.get_msg(stream, seq) for seq in range(state.first_seq, state.last_seq + 1)]
    return [m.data or b"" for m in found if (m.subject or "").startswith(subjects)]


async def deliveries(api: httpx.AsyncClient, **params: object) -> list[dict]:
    return (await api.get("/deliveries", params={"limit": 1000, **params})).json()["data"]


# -- the cipher and the keyring --------------------------------------------------------------------
def test_a_sealed_secret_opens_with_its_key_and_only_for_its_subscription() -> None:
    ring = Keyring.from_setting(OLD)
    sealed = ring.seal(SECRET, AAD)
    assert is_sealed(sealed) and sealed.startswith("sealed.v1.old.") and SECRET not in sealed
    assert ring.seal(SECRET, AAD) != sealed  # a fresh nonce every time
    assert ring.open(sealed, AAD) == SECRET
    moved = subscription_aad("apollo", "board", "https://attacker.example/x")
    with pytest.raises(Tampered, match="belongs to another subscription"):
        ring.open(sealed, moved)
    head, ct = sealed.rsplit(".", 1)
    flipped = head + "." + ("A" if ct[0] != "A" else "B") + ct[1:]
    with pytest.raises(Tampered, match="altered"):
        ring.open(flipped, AAD)
    with pytest.raises(Tampered):
        ring.open(sealed[:-6], AAD)
    with pytest.raises(Tampered, match="malformed"):
        ring.open("sealed.v1.old.x", AAD)
    with pytest.raises(UnknownKey, match="'old', which is not in the keyring") as unknown:
        Keyring.from_setting(NEW).open(sealed, AAD)
    assert OLD.split(":")[1] not in str(unknown.value) and "old" in repr(ring)
    assert OLD.split(":")[1] not in repr(ring)  # no key bytes in a log line or a traceback


def test_keys_rotate_the_first_seals_and_every_key_opens() -> None:
    before = Keyring.from_setting(OLD).seal(SECRET, AAD)
    rotated = Keyring.from_setting(f"{NEW}, {OLD}")
    after = rotated.seal(SECRET, AAD)
    assert after.startswith("sealed.v1.new.") and rotated.kids == ("new", "old")
    assert rotated.open(before, AAD) == rotated.open(after, AAD) == SECRET
    with pytest.raises(UnknownKey):
        Keyring.from_setting(OLD).open(after, AAD)


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("", "empty"),
        ("nokid", "not 'kid:base64url'"),
        ("bad kid:" + "A" * 43, "key id must be"),
        ("k1:" + base64.urlsafe_b64encode(b"short").decode(), "is 5 bytes; AES-256 needs 32"),
        ("k1:%%%", "not base64url"),
        (f"{OLD},{OLD}", "appears twice"),
    ],
)
def test_a_bad_key_setting_says_what_is_wrong(setting: str, says: str) -> None:
    with pytest.raises(KeyringError, match=says):
        Keyring.from_setting(setting)


def test_key_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "secret.key"
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        text = write_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path).kids == Keyring.from_setting(text).kids
    with pytest.raises(KeyringError, match="not overwritten"):
        write_key_file(path)
    path.chmod(0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        load_key_file(path)
    path.chmod(0o600)
    assert keyring_from_settings(None, str(path)) is not None
    assert keyring_from_settings(None, None) is None
    with pytest.raises(StartupError, match="keep one"):
        keyring_from_settings(OLD, str(path))
    with pytest.raises(StartupError, match="MILESTONES_SECRET_KEY: .*empty"):
        keyring_from_settings(" , ", None)


def test_a_secret_stored_in_clear_before_sealing_still_decodes_and_signs() -> None:
    legacy = StakeholderSubscribed(
        project_id="apollo", stakeholder="board", url="https://hooks.example.com/x", secret=SECRET
    )
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    body = ENCODER.encode(
        StoredEvent(
            id="e1",
            source="old",
            type="StakeholderSubscribed",
            subject="milestones.events.apollo",
            time=t0,
            recordedtime=t0,
            correlationid="c",
            causationid="c",
            data=legacy,
        )
    )
    assert decode_stored(body).data == legacy
    ring = Keyring.from_setting(OLD)
    assert signing_key(SECRET, AAD, ring, "the-default") == SECRET  # clear: used as it is
    assert signing_key(ring.seal(SECRET, AAD), AAD, ring, "the-default") == SECRET
    assert signing_key(None, AAD, ring, "the-default") == "the-default"
    with pytest.raises(SecretError, match="has no key: set MILESTONES_SECRET_KEY"):
        signing_key(ring.seal(SECRET, AAD), AAD, None, None)


def test_publishers_see_the_clear_secret_in_the_schema_and_the_log_takes_the_sealed_one() -> None:
    secret = data_schema("StakeholderSubscribed")["$defs"]["StakeholderSubscribed"]["properties"][
        "secret"
    ]
    assert secret["anyOf"][0]["maxLength"] == 256 and secret["anyOf"][0]["minLength"] == 16
    sealed = Keyring.from_setting(OLD).seal("x" * 256, AAD)
    event = StakeholderSubscribed(project_id="p", stakeholder="s", url="https://h.example/x")
    stored = msgspec.json.decode(
        msgspec.json.encode(msgspec.structs.replace(event, secret=sealed)),
        type=StakeholderSubscribed,
    )
    assert stored.secret == sealed  # the longest clear secret, sealed, still fits the field


# -- redaction -------------------------------------------------------------------------------------
def test_payloads_and_log_lines_never_show_a_secret() -> None:
    payload = (
        '{"data": {"secret": "' + SECRET + '", "list": [{"Secret": 1}, {"client_secret": "x"}]}}'
    )
    shown = redact_json_text(payload)
    assert SECRET not in shown and msgspec.json.decode(shown)["data"] == {
        "secret": "[redacted]",
        "list": [{"Secret": "[redacted]"}, {"client_secret": "[redacted]"}],
    }
    assert redact_json_text('{"a": 1}') == '{"a": 1}'  # nothing to hide: byte for byte
    broken = '[{"data": {"secr\\u0065t": "' + SECRET + '", "url": "x'
    assert SECRET not in redact_json_text(broken) and '"url": "x' in redact_json_text(broken)
    cut = '{"data": {"secret": "' + SECRET[:20]
    assert SECRET[:20] not in redact_json_text(cut)
    as_text = msgspec.json.encode({"data": msgspec.json.encode({"secret": SECRET}).decode()})
    assert SECRET not in redact_json_text(as_text.decode())
    assert SECRET.encode() not in redact_bytes(b'\xff{"secret": "' + SECRET.encode() + b'"}')

    logged = redact_secrets(
        None,
        "info",
        {
            "event": "request",
            "secret": SECRET,
            "headers": {"Authorization": "Bearer t0k3n", "cookie": "s=1", "accept": "*/*"},
            "http_token": "t0k3n",
            "body": payload,
            "n": 3,
        },
    )
    assert SECRET not in str(logged) and "t0k3n" not in str(logged)
    assert logged["headers"]["accept"] == "*/*" and logged["n"] == 3
    assert logged["event"] == "request"


def test_the_configured_logger_redacts() -> None:
    # logs.configure (run by conftest, as by every service) puts the processor in the chain
    assert redact_secrets in structlog.get_config()["processors"]
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            *structlog.get_config()["processors"][:-1],
            structlog.processors.JSONRenderer(),
        ],
    )
    logger.warning("subscribed", secret=SECRET, password="pw-123456", url="https://h.example")
    assert "subscribed" in out.getvalue() and "https://h.example" in out.getvalue()
    assert SECRET not in out.getvalue() and "pw-123456" not in out.getvalue()


# -- targets, the policy ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/x", "must use https, not http"),
        ("https://127.0.0.1/x", "127.0.0.1 is a loopback address"),
        ("https://[::1]:8443/x", "::1 is a loopback address"),
        ("https://169.254.169.254/latest", "a cloud metadata address"),
        ("https://[fd00:ec2::254]/", "a cloud metadata address"),
        ("https://10.1.2.3/x", "10.1.2.3 is a private address"),
        ("https://192.168.0.10/x", "a private address"),
        ("https://[fc00::1]/x", "fc00::1 is a private address"),
        ("https://[fe80::1]/x", "a link-local address"),
        ("https://224.0.0.1/x", "a multicast address"),
        ("https://0.0.0.0/x", "an unspecified address"),
        ("https://100.64.0.1/x", "not a public address"),
        ("https://[::ffff:127.0.0.1]/x", "a loopback address (inside the IPv6 address"),
        ("https://[64:ff9b::a00:1]/x", "a private address (inside the IPv6 address"),
        ("https://0x7f.1/x", "0x7f.1 is a loopback address"),
        ("https://2130706433/x", "a loopback address"),
        ("https://localhost/x", "a loopback name"),
        ("https://api.localhost./x", "a loopback name"),
        ("https://evil.example@127.0.0.1/x", "127.0.0.1 is a loopback address"),
    ],
)
def test_unsafe_targets_are_refused_at_subscription_saying_why(url: str, why: str) -> None:
    with pytest.raises(TargetRefused, match=why.replace("(", r"\(")):
        TargetPolicy.from_setting("").check_url(url)


def test_public_https_and_allow_listed_hosts_pass() -> None:
    policy = TargetPolicy.from_setting("127.0.0.1, [::1], LocalHost")
    for url in (
        "https://hooks.example.com/x",
        "https://93.184.215.14/x",
        "http://127.0.0.1:9/x",
        "http://[::1]:9/x",
        "http://localhost./x",
    ):
        policy.check_url(url)
    assert unsafe(ipaddress.ip_address("2606:4700::1111")) is None


# -- targets, the connection -----------------------------------------------------------------------
class Recorder(httpcore.AsyncNetworkBackend):
    """An inner backend that connects nowhere: it records where it was asked to connect."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.connects.append((host, port))
        raise httpcore.ConnectError(f"recorder: not connecting to {host}")

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise AssertionError("no unix sockets")

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("no retries")


async def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    # a rebinding DNS: public when checked, loopback on any later question
    dns = StubDNS({"rebind.example": [["93.184.215.14"], ["127.0.0.1"]]})
    inner = Recorder()
    transport = PinnedTransport(TargetPolicy(), dns, limits=httpx.Limits(), inner=inner)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match="not connecting to 93.184.215.14"):
            await client.post("https://rebind.example/hook", content=b"{}")
        assert dns.asked == ["rebind.example"] and inner.connects == [("93.184.215.14", 443)]
        # the next connection asks again, and this time the answer is refused before a connect
        with pytest.raises(TargetRefused, match="resolves to 127.0.0.1, a loopback address"):
            await client.post("https://rebind.example/hook", content=b"{}")
        assert inner.connects == [("93.184.215.14", 443)]
        # every address a name resolves to is checked, not only the first
        dns.answers["mixed.example"] = [["93.184.215.14", "10.0.0.7"]]
        with pytest.raises(TargetRefused, match="resolves to 10.0.0.7, a private address"):
            await client.post("https://mixed.example/hook", content=b"{}")
        with pytest.raises(TargetRefused, match="loopback address"):
            await client.post("https://127.0.0.1/hook", content=b"{}")  # a literal: no DNS
        with pytest.raises(httpx.ConnectError, match="cannot resolve nowhere.example"):
            await client.post("https://nowhere.example/hook", content=b"{}")
    assert inner.connects == [("93.184.215.14", 443)]


# -- on real servers -------------------------------------------------------------------------------
async def test_unsafe_targets_and_keyless_secrets_are_refused_by_the_intake(
    nc: nats.NATS, settings: Settings
) -> None:
    from services.app.wiring import intake as run_intake

    public_only = msgspec.structs.replace(settings, webhook_allow_hosts="")
    async with run_intake(public_only):
        assert (await request(nc, planned())).accepted
        for url, why in [
            ("http://hooks.example.com/x", "must use https"),
            ("https://127.0.0.1/x", "webhook target 127.0.0.1 is a loopback address"),
            ("https://[::1]/x", "webhook target ::1 is a loopback address"),
            ("https://169.254.169.254/latest/meta-data", "a cloud metadata address"),
            ("https://10.0.0.8/x", "webhook target 10.0.0.8 is a private address"),
            ("https://[fc00::8]/x", "webhook target fc00::8 is a private address"),
            ("http://127.0.0.1:9/x", "must use https"),  # the test receiver's, not allowed here
        ]:
            reply = await request(nc, subscribe("board", url, secret=None))
            assert not reply.accepted and reply.error is not None, url
            assert reply.error.code == "invalid" and why in reply.error.message, reply.error
            assert "MILESTONES_WEBHOOK_ALLOW_HOSTS" in reply.error.message
        batch = await request(
            nc,
            [subscribe("a", "https://hooks.example.com/a"), subscribe("b", "https://10.0.0.8/")],
        )
        assert batch.error is not None and batch.error.message.startswith("CloudEvent #2")
        long = await request(nc, subscribe("board", "https://hooks.example.com/x", "s" * 257))
        assert long.error is not None and "the limit is 256" in long.error.message
        short = await request(nc, subscribe("board", "https://hooks.example.com/x", "s" * 9))
        assert short.error is not None and "the minimum is 16" in short.error.message
        # a whsec_ secret must be the Standard Webhooks form: base64 of 24-64 bytes
        malformed = "whsec_" + base64.b64encode(b"sixteen bytes!!!").decode()
        bad = await request(nc, subscribe("board", "https://hooks.example.com/x", malformed))
        assert bad.error is not None and "base64 of 24-64 bytes" in bad.error.message
        assert malformed not in bad.error.message
        assert (await request(nc, subscribe("board", "https://hooks.example.com/x"))).accepted

    keyless = msgspec.structs.replace(settings, secret_key=None)
    async with run_intake(keyless) as other:
        assert other.intake is not None
        reply = await other.intake.handle(
            ENCODER.encode(subscribe("board", "https://hooks.example.com/y")), "test"
        )
        assert reply.error is not None and reply.error.code == "invalid"
        assert "MILESTONES_SECRET_KEY" in reply.error.message and SECRET not in reply.error.message
        generate = subscribe("board", "https://hooks.example.com/y", secret="generate")
        reply = await other.intake.handle(ENCODER.encode(generate), "test")
        assert reply.error is not None and "MILESTONES_SECRET_KEY" in reply.error.message
        unsigned = subscribe("board", "https://hooks.example.com/y", secret=None)
        assert (await other.intake.handle(ENCODER.encode(unsigned), "test")).accepted
        local = subscribe("local", "http://127.0.0.1:9/x", secret=None)  # allow-listed here
        assert (await other.intake.handle(ENCODER.encode(local), "test")).accepted


async def test_the_secret_is_sealed_everywhere_and_still_signs(system, api, nc, db_url) -> None:
    receiver = await Receiver().start()
    try:
        async with notifier(system, keyring=Keyring.from_setting(OLD)):
            first = await request(nc, [*planned(), subscribe("board", receiver.url)])
            assert first.accepted, first
            posted = await api.post("/events", json=subscribe("http", receiver.url))
            assert posted.status_code == 202, posted.text
            js = nc.jetstream()
            # through the inbox: one accepted, one refused (unknown project), one broken JSON
            inbox_sub = subscribe("inbox", receiver.url)
            orphan = cloudevent(
                "StakeholderSubscribed",
                {"project_id": "ghost", "stakeholder": "x", "url": receiver.url, "secret": SECRET},
            )
            for body in (ENCODER.encode(inbox_sub), ENCODER.encode(orphan)):
                await js.publish("milestones.inbox.StakeholderSubscribed", body)
            await js.publish(
                "milestones.inbox.StakeholderSubscribed",
                b'{"specversion": "1.0", "data": {"secret": "' + SECRET.encode() + b'"',
            )

            async def inbox_done() -> bool:
                recorded = await raw_stream(nc, REJECTIONS_STREAM)
                return len(recorded) == 2 and not await raw_stream(nc, INBOX_STREAM)

            await wait_for(inbox_done, 20, "the inbox to be consumed and refusals recorded")
            moved = await request(nc, reschedule("2026-12-22"))

            async def signed_twice() -> bool:
                return {
                    b["stakeholder"]
                    for _, b in receiver.delivered
                    if b["kind"] == "milestone.rescheduled"
                } == {"board", "http", "inbox"}

            await wait_for(signed_twice, 20, "the reschedule at both subscriptions")
            await caught_up(db_url, moved.events[-1].position)
        for status, headers, body in receiver.requests:
            assert status == 200 and verify(SECRET, headers, body)

        # the log, read raw: the secret is sealed (bound to its subscription), never clear
        log = await raw_stream(nc, EVENTS_STREAM)
        assert all(SECRET.encode() not in m for m in log)
        subscribed = [
            e
            for m in await raw_stream(nc, EVENTS_STREAM, "milestones.events.")
            if isinstance(e := event_of(decode_stored(m)), StakeholderSubscribed)
        ]
        ring = Keyring.from_setting(OLD)
        assert sorted(s.stakeholder for s in subscribed) == ["board", "http", "inbox"]
        for s in subscribed:
            assert s.secret.startswith("sealed.v1.old.")
            assert (
                ring.open(s.secret, subscription_aad(s.project_id, s.stakeholder, s.url)) == SECRET
            )
        # in the inbox's order: a refusal made at parsing (the broken JSON) can be recorded
        # before one the committer decides (the orphan) when they came in two batches
        rejected = sorted(
            (REJECTION_DECODER.decode(m) for m in await raw_stream(nc, REJECTIONS_STREAM)),
            key=lambda r: r.inbox_seq,
        )
        assert all(SECRET not in (r.payload or "") for r in rejected)
        assert '"secret":"[redacted]"' in rejected[0].payload and '"secret": "[redacted]"' in (
            rejected[1].payload or ""
        )

        # the database: read model and outbox hold the sealed form
        conn = await connect(db_url)
        try:
            outbox = await conn.fetch("SELECT secret, d::text AS row FROM deliveries d")
            subs = await conn.fetch("SELECT secret, s::text AS row FROM ms_subscriptions s")
            audit = await conn.fetchval("SELECT string_agg(a::text, '') FROM audit_events a")
            # an event stored in clear before secrets were sealed, parked: shown redacted
            legacy = ENCODER.encode({"type": "StakeholderSubscribed", "data": {"secret": SECRET}})
            await park(conn, "status", 999, "milestones.events.apollo", None, "test", legacy)
        finally:
            await conn.close()
        assert outbox and all(is_sealed(r["secret"]) and SECRET not in r["row"] for r in outbox)
        assert len(subs) == 3 and all(is_sealed(r["secret"]) for r in subs)
        assert SECRET not in (audit or "") and "sealed.v1" not in (audit or "")

        # every answer: nothing shows it (nor the sealed form)
        shown = []
        for path, params in [
            ("/audit", {}),
            ("/audit", {"format": "jsonl"}),
            ("/audit", {"format": "csv"}),
            ("/rejections", {}),
            ("/parked", {}),
            ("/projects/apollo/subscriptions", {}),
            ("/deliveries", {}),
            ("/milestones/m1/history", {"project_id": "apollo"}),
            ("/projects/apollo", {}),
            ("/projects/apollo/report", {}),
            ("/projects/apollo/digest", {}),
        ]:
            answer = await api.get(path, params=params)
            assert answer.status_code == 200, (path, answer.text)
            shown.append(answer.text)
            assert SECRET not in answer.text and "sealed.v1" not in answer.text, path
        rejections, parked = shown[3], shown[4]
        assert rejections.count("[redacted]") == 2 and "[redacted]" in parked
        listed = (await api.get("/projects/apollo/subscriptions")).json()["data"]
        assert sorted((s["stakeholder"], s["signed"], "secret" in s) for s in listed) == [
            ("board", True, False),
            ("http", True, False),
            ("inbox", True, False),
        ]
    finally:
        await receiver.stop()


async def test_keys_rotate_and_a_moved_or_unknown_secret_fails_its_delivery(
    system, api, nc, db_url
) -> None:
    receiver = await Receiver().start()
    try:
        reply = await request(
            nc, [*planned(), subscribe("a", receiver.url), subscribe("b", receiver.url, OTHER)]
        )
        await caught_up(db_url, reply.events[-1].position, ("status",))
        conn = await connect(db_url)
        try:  # b's row gets a's sealed secret: a valid ciphertext, bound to a's subscription
            await conn.execute(
                "UPDATE ms_subscriptions SET secret = "
                "(SELECT secret FROM ms_subscriptions WHERE stakeholder = 'a') "
                "WHERE stakeholder = 'b'"
            )
        finally:
            await conn.close()
        rotated = Keyring.from_setting(f"{NEW},{OLD}")  # new key first, old kept to open
        async with notifier(system, keyring=rotated):
            await request(nc, reschedule("2026-12-21"))

            async def settled() -> bool:
                log = await deliveries(api, kind="milestone.rescheduled")
                return len(log) == 2 and all(d["status"] != "pending" for d in log)

            await wait_for(settled, 20, "both deliveries to settle")
        by = {d["stakeholder"]: d for d in await deliveries(api, kind="milestone.rescheduled")}
        assert by["a"]["status"] == "delivered"
        assert by["b"]["status"] == "failed" and by["b"]["attempts"] == 1
        assert (
            "cannot sign" in by["b"]["last_error"]
            and "another subscription" in by["b"]["last_error"]
        )
        assert [b["stakeholder"] for _, b in receiver.delivered] == ["a"]
        headers, body = next((h, b) for s, h, b in receiver.requests)
        assert verify(SECRET, headers, body)  # opened with the old key, kept in the keyring

        async with notifier(system, keyring=Keyring.from_setting(NEW)):  # the old key dropped
            await request(nc, reschedule("2026-12-23"))

            async def failed() -> bool:
                log = await deliveries(api, kind="milestone.rescheduled", stakeholder="a")
                return len(log) == 2 and log[-1]["status"] == "failed"

            await wait_for(failed, 20, "the delivery whose key is gone to fail")
        last = (await deliveries(api, kind="milestone.rescheduled", stakeholder="a"))[-1]
        assert last["attempts"] == 1 and "'old', which is not in the keyring" in last["last_error"]
        assert len(receiver.requests) == 1
    finally:
        await receiver.stop()


async def test_targets_are_checked_again_when_sent(system, api, nc, db_url) -> None:
    receiver = await Receiver().start()
    port = receiver.port
    dns = StubDNS(
        {
            "internal.example": [["10.0.0.5"]],
            "mixed.example": [["93.184.215.14", "fd00::5"]],
            "metadata.example": [["169.254.169.254"]],
            "hooks.test": [["127.0.0.1"]],  # allow-listed: resolved by the stub, not checked
        }
    )
    try:
        reply = await request(
            nc,
            [
                *planned(),
                subscribe("internal", "https://internal.example/hook"),
                subscribe("mixed", "https://mixed.example/hook"),
                subscribe("metadata", "https://metadata.example/hook"),
                subscribe("named", f"http://hooks.test:{port}/hook"),
                subscribe("bounce", f"http://127.0.0.1:{port}/bounce"),
            ],
        )
        assert reply.accepted, reply  # https hostnames pass at subscription: checked when sent
        receiver.redirect_path = "/bounce"
        policy = TargetPolicy.from_setting(ALLOWED)
        async with notifier(
            system, keyring=Keyring.from_setting(OLD), targets=policy, resolver=dns
        ):
            await request(nc, reschedule("2026-12-21"))

            async def settled() -> bool:
                log = await deliveries(api, kind="milestone.rescheduled")
                return len(log) == 5 and all(d["status"] != "pending" for d in log)

            await wait_for(settled, 20, "every delivery to settle")
        by = {d["stakeholder"]: d for d in await deliveries(api, kind="milestone.rescheduled")}
        assert {k: (d["status"], d["attempts"]) for k, d in by.items()} == {
            "internal": ("failed", 1),
            "mixed": ("failed", 1),
            "metadata": ("failed", 1),
            "named": ("delivered", 1),
            "bounce": ("failed", 1),
        }
        assert (
            "internal.example resolves to 10.0.0.5, a private address"
            in by["internal"]["last_error"]
        )
        assert "mixed.example resolves to fd00::5, a private address" in by["mixed"]["last_error"]
        assert "a cloud metadata address" in by["metadata"]["last_error"]
        assert "redirects are not followed" in by["bounce"]["last_error"]
        # the allow-listed name went to the address the stub gave, with its own Host header
        (named,) = [h for s, h, b in receiver.requests if s == 200]
        assert named["host"] == f"hooks.test:{port}"
        # the redirect was answered once and not followed
        assert sorted(s for s, _, _ in receiver.requests) == [200, 302]
        assert set(dns.asked) <= {
            "internal.example",
            "mixed.example",
            "metadata.example",
            "hooks.test",
        }
    finally:
        await receiver.stop()


async def test_a_subscription_stored_in_clear_before_sealing_still_signs(
    system, api, nc, db_url
) -> None:
    receiver = await Receiver().start()
    try:
        assert (await request(nc, planned())).accepted
        # what a version before sealing appended: the secret in clear (the log is append-only)
        legacy = StakeholderSubscribed(
            project_id="apollo", stakeholder="legacy", url=receiver.url, secret=SECRET
        )
        await caught_up(db_url, await append_as_before(nc, "legacy-1", "before-sealing", legacy))
        async with notifier(system, keyring=Keyring.from_setting(OLD)):
            assert (await request(nc, reschedule("2026-12-21"))).accepted

            async def arrived() -> bool:
                return any(b["kind"] == "milestone.rescheduled" for _, b in receiver.delivered)

            await wait_for(arrived, 20, "the reschedule at the old subscription")
        status, headers, body = receiver.requests[-1]
        assert status == 200 and verify(SECRET, headers, body)
        for path in ("/audit", "/projects/apollo/subscriptions"):
            answer = await api.get(path)
            assert answer.status_code == 200 and SECRET not in answer.text, path
    finally:
        await receiver.stop()
