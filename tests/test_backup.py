"""``milestones backup`` and ``milestones restore`` (services/cli/backup.py), through the real
CLI against real servers: a log written by the intake, backed up, restored on a fresh server;
the streams come back byte for byte, the read models rebuild equal and ``audit verify`` passes."""

from __future__ import annotations

import json
from pathlib import Path

import nats
import pytest

from projections import PROJECTIONS
from projections.rebuild import rebuild
from services.app.embedded import EmbeddedNats
from services.cli.backup import BACKED_UP, MANIFEST
from services.eventlog.log import EventLog
from services.ledger import store
from tests.backup_support import a_log_worth_keeping, everything, milestones
from tests.conftest import cli_env, connect, wait_for
from tests.faults_support import EVENT_MODELS, read_models


async def signed_to_the_end(nc) -> int:
    end = await store.last_sequence(nc)

    async def covered() -> bool:
        last = await store.last_checkpoint(nc)
        return last is not None and int(last.record.note.split("\n")[1]) == end

    await wait_for(covered, timeout=20, what=f"a checkpoint covering 1..{end}")
    return end


async def test_backup_then_restore_on_a_fresh_server_gives_the_same_log(
    intake, nc, settings, identity, db_url, tmp_path: Path
):
    await a_log_worth_keeping(nc)
    end = await signed_to_the_end(nc)
    group = [PROJECTIONS[name] for name in EVENT_MODELS]
    await rebuild(group, db_url, nc)
    original_models = await read_models(db_url)
    readable = [s for s in BACKED_UP if s != "MILESTONES_INBOX"]  # the inbox has no direct gets
    original = {s: await everything(nc, s) for s in readable}
    states = {s: (await nc.jetstream().stream_info(s)).state for s in BACKED_UP}
    assert original["MILESTONES"] and original["MILESTONES_CHECKPOINTS"]
    assert original["MILESTONES_REJECTIONS"]

    env = {**cli_env(settings), "MILESTONES_DATA_DIR": str(tmp_path)}
    out = tmp_path / "backup"
    code, stdout, stderr = await milestones(env, "backup", "--out", str(out))
    assert code == 0, stderr
    manifest = json.loads((out / MANIFEST).read_text())
    assert [s["name"] for s in manifest["streams"]] == list(BACKED_UP)
    assert f"MILESTONES: {states['MILESTONES'].messages} message(s)" in stdout
    # a second backup into the same directory is refused, the first one kept
    code, _, stderr = await milestones(env, "backup", "--out", str(out))
    assert code == 2 and "already holds a backup" in stderr

    fresh = EmbeddedNats(tmp_path / "fresh", identity=identity).start()
    try:
        env_fresh = {**env, "MILESTONES_NATS_URL": fresh.url}
        code, stdout, stderr = await milestones(env_fresh, "restore", str(out))
        assert code == 0, stderr
        assert "MILESTONES: restored" in stdout
        restored_nc = await connect(fresh)
        try:
            for stream in readable:  # byte for byte, positions included
                assert await everything(restored_nc, stream) == original[stream], stream
            for stream in BACKED_UP:
                state = (await restored_nc.jetstream().stream_info(stream)).state
                assert (state.messages, state.last_seq) == (
                    states[stream].messages,
                    states[stream].last_seq,
                )
                assert state.consumer_count == states[stream].consumer_count, stream
            assert await EventLog(restored_nc).last_sequence() == end
            # the read models rebuilt from the restored log equal the original ones
            await rebuild(group, db_url, restored_nc)
            assert await read_models(db_url) == original_models
        finally:
            await restored_nc.close()
        code, stdout, stderr = await milestones(env_fresh, "audit", "verify")
        assert code == 0, stderr
        assert stdout.startswith("OK: verified")
        # restoring again onto a server that has the streams is refused, naming them
        code, _, stderr = await milestones(env_fresh, "restore", str(out))
        assert code == 2 and "already exist" in stderr and "MILESTONES" in stderr
    finally:
        fresh.stop()


async def test_a_damaged_backup_is_refused_before_the_server_is_touched(
    intake, nc, settings, identity, tmp_path: Path
):
    await a_log_worth_keeping(nc)
    env = {**cli_env(settings), "MILESTONES_DATA_DIR": str(tmp_path)}
    out = tmp_path / "backup"
    code, _, stderr = await milestones(env, "backup", "--out", str(out))
    assert code == 0, stderr
    snapshot = out / "MILESTONES.snapshot"
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    fresh = EmbeddedNats(tmp_path / "fresh", identity=identity).start()
    try:
        env_fresh = {**env, "MILESTONES_NATS_URL": fresh.url}
        code, _, stderr = await milestones(env_fresh, "restore", str(out))
        assert code == 2 and "damaged" in stderr
        client = await connect(fresh)
        try:
            with pytest.raises(nats.js.errors.NotFoundError):
                await client.jetstream().stream_info("MILESTONES")
        finally:
            await client.close()
        code, _, stderr = await milestones(env_fresh, "restore", str(tmp_path / "nothing"))
        assert code == 2 and "no finished backup" in stderr
    finally:
        fresh.stop()
