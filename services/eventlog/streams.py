"""The JetStream streams Milestones needs: their configuration, creation, in-place upgrade, and
the checks at start (server version, settings) that stop a service with one clear line."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from events.errors import StartupError
from events.subjects import (
    CHECKPOINTS_STREAM,
    CHECKPOINTS_SUBJECTS,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    INBOX_STREAM,
    INBOX_SUBJECTS,
    REJECTIONS_STREAM,
    REJECTIONS_SUBJECTS,
)

MIN_SERVER = (2, 12, 0)  # atomic batch publish


def check_server_version(nc: NATS) -> None:
    v = nc.connected_server_version
    have = (v.major, v.minor, v.patch)
    if have < MIN_SERVER:
        want = ".".join(map(str, MIN_SERVER))
        at = nc.connected_url.netloc if nc.connected_url else "?"
        raise StartupError(
            f"nats-server {v.major}.{v.minor}.{v.patch} at {at}"
            f" is too old: Milestones needs {want}+ for atomic batch publish "
            "(run `milestones dev`, which starts a bundled 2.15 server)"
        )


# Nothing is ever discarded for size or age: the log is the only truth (checked at start).
UNLIMITED: dict = {"max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msgs_per_subject": -1}


def events_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=EVENTS_STREAM,
        description="Milestones event log: the only source of truth",
        subjects=EVENTS_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        num_replicas=replicas,
        deny_delete=True,
        deny_purge=True,
        # Batched reads exist only as direct gets, which any replica may answer: EventLog asks
        # again when a lagging follower answers (services.eventlog.log, "Reads in a cluster").
        # Mirrors may not answer: nothing checks how far behind a mirror is.
        allow_direct=True,
        mirror_direct=False,
        allow_atomic=True,
        **UNLIMITED,
    )


def inbox_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=INBOX_STREAM,
        description=(
            "Messages published to milestones.inbox.<Type>, kept until the intake acks them"
        ),
        subjects=INBOX_SUBJECTS,
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        # The server refuses message schedules with discard "new". No limits are set on this
        # stream, so nothing is ever discarded either way; whoever adds limits must choose.
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
        allow_msg_schedules=True,
        # the deadline scheduler stores a batch of schedules as one atomic batch (one fsync)
        allow_atomic=True,
        **UNLIMITED,
    )


def rejections_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=REJECTIONS_STREAM,
        description="Inbox messages the intake refused, with the reason",
        subjects=REJECTIONS_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        deny_delete=True,
        allow_direct=True,
        **UNLIMITED,
    )


def checkpoints_stream_config(replicas: int = 1) -> StreamConfig:
    """The log's signed checkpoints (services.ledger): append-only like the log itself, in a
    stream of their own so that MILESTONES' positions stay the tree's leaf indices."""
    return StreamConfig(
        name=CHECKPOINTS_STREAM,
        description="Signed checkpoints of the Merkle tree over MILESTONES (tamper evidence)",
        subjects=CHECKPOINTS_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        num_replicas=replicas,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
    )


# Fields whose drift changes semantics; a mismatch stops the service with one line. The limits
# are among them: a stream whose max_msgs someone lowered would silently drop the log's head.
_CHECKED = (
    "subjects",
    "storage",
    "retention",
    "deny_delete",
    "deny_purge",
    "allow_atomic",
    "allow_direct",
    "mirror_direct",
    "allow_msg_schedules",
    "discard",
    "max_msgs",
    "max_bytes",
    "max_age",
    "max_msgs_per_subject",
    "num_replicas",  # what survives a node's loss (MILESTONES_STREAM_REPLICAS)
)


async def ensure_stream(nc: NATS, want: StreamConfig) -> None:
    if not want.name:
        raise ValueError("nats: stream name is required")  # what nats-py would raise
    js = nc.jetstream()
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want)
        return
    have = info.config
    # Additive upgrades of a stream an earlier version created: new subjects, message schedules,
    # atomic batches (each can be turned on in place, none ever off).
    missing = set(want.subjects or []) - set(have.subjects or [])
    schedules = bool(want.allow_msg_schedules) and not have.allow_msg_schedules
    atomic = bool(want.allow_atomic) and not have.allow_atomic
    if (missing or schedules or atomic) and set(have.subjects or []) <= set(want.subjects or []):
        have.subjects = sorted({*(have.subjects or []), *missing})
        have.allow_msg_schedules = bool(want.allow_msg_schedules or have.allow_msg_schedules)
        have.allow_atomic = bool(want.allow_atomic or have.allow_atomic)
        if have.allow_msg_schedules:
            have.discard = DiscardPolicy.OLD  # required by schedules (see inbox_stream_config)
        have = (await js.update_stream(have)).config
    for field in _CHECKED:
        wanted, got = getattr(want, field), getattr(have, field)
        if wanted is None:
            continue
        if field == "subjects":
            wanted, got = sorted(wanted), sorted(got or [])
        if isinstance(wanted, bool):
            got = bool(got)
        wanted, got = getattr(wanted, "value", wanted), getattr(got, "value", got)
        if wanted != got and field == "num_replicas":
            raise StartupError(
                f"stream {want.name} has {got} replica(s) but MILESTONES_STREAM_REPLICAS is "
                f"{wanted}: scale it (nats stream edit {want.name} --replicas {wanted}) or set "
                "MILESTONES_STREAM_REPLICAS to match"
            )
        if wanted != got:
            raise StartupError(
                f"stream {want.name} exists with {field}={got!r} but Milestones needs {wanted!r}: "
                "fix the stream (nats stream edit) or point MILESTONES_NATS_URL at another server"
            )
