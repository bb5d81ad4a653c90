"""Tamper evidence: the RFC 6962 tree (reference vectors, properties), signed checkpoints, the
writer against a real nats-server, `audit verify` live and on exports, proofs over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Litestar

from services.cli.audit import add_audit_commands, run_audit, signing_key_path
from services.eventlog.streams import checkpoints_stream_config, ensure_stream
from services.ledger import store
from services.ledger.export import open_export
from services.ledger.keys import PublicKey, SigningKey, load_or_create
from services.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    FrontierRange,
    LeafHashes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from services.ledger.note import ORIGIN, Checkpoint, NoteError, open_note, record, sign
from services.ledger.routes import ledger_routes
from services.ledger.verify import verify
from services.ledger.view import LedgerView
from services.ledger.writer import CheckpointWriter
from tests.conftest import plan_project, request, wait_for

# -- the reference vectors of certificate-transparency / transparency-dev/merkle (proof tests) ---
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243")] + [
    bytes.fromhex("5051525354555657"),
    bytes.fromhex("606162636465666768696a6b6c6d6e6f"),
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
INCLUSION = [  # (leaf, 1-based as in the reference), tree size, audit path
    (1, 8, ["96a296d2", "5f083f0a", "6b47aaf2"]),
    (6, 8, ["bc1a0643", "ca854ea1", "d37ee418"]),
    (3, 3, ["fac54203"]),
    (2, 5, ["6e340b9c", "5f083f0a", "bc1a0643"]),
]
CONSISTENCY = [  # size1, size2, proof
    (1, 8, ["96a296d2", "5f083f0a", "6b47aaf2"]),
    (6, 8, ["0ebc5d34", "ca854ea1", "d37ee418"]),
    (2, 5, ["5f083f0a", "bc1a0643"]),
    (6, 7, ["0ebc5d34", "b08693ec", "d37ee418"]),
]


def reference_mth(leaves: list[bytes]) -> bytes:
    """MTH written as RFC 6962 §2.1 states it, recursively: the model the fast code must match."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(reference_mth(leaves[:k]), reference_mth(leaves[k:]))


def tree(leaves: list[bytes]) -> LeafHashes:
    hashes = LeafHashes()
    hashes.add(b"".join(leaf_hash(d) for d in leaves))
    return hashes


def test_roots_match_the_reference_vectors():
    hashes = tree(LEAVES)
    frontier = Frontier()
    for n in range(1, 9):
        frontier.append(leaf_hash(LEAVES[n - 1]))
        assert frontier.root() == ROOTS[n - 1]
        assert hashes.root(n) == ROOTS[n - 1]
        assert root_of([leaf_hash(d) for d in LEAVES[:n]]) == ROOTS[n - 1]
    assert (
        Frontier().root()
        == EMPTY_ROOT
        == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    )


@pytest.mark.parametrize(("leaf", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_the_reference_vectors(leaf, size, path):
    hashes = tree(LEAVES)
    proof = inclusion_proof(leaf - 1, size, hashes.mth)
    assert [p.hex()[:8] for p in proof] == path
    lh = leaf_hash(LEAVES[leaf - 1])
    assert verify_inclusion(leaf - 1, size, lh, proof, ROOTS[size - 1])
    # the reference's corruptions: wrong index, size, leaf or root; garbage; a flipped bit
    assert not verify_inclusion(leaf, size, lh, proof, ROOTS[size - 1])
    assert not verify_inclusion(leaf - 1, size * 2, lh, proof, ROOTS[size - 1])
    assert not verify_inclusion(leaf - 1, size, leaf_hash(b"WrongLeaf"), proof, ROOTS[size - 1])
    assert not verify_inclusion(leaf - 1, size, lh, proof, EMPTY_ROOT)
    assert not verify_inclusion(leaf - 1, size, lh, [*proof, ROOTS[size - 1]], ROOTS[size - 1])
    assert not verify_inclusion(leaf - 1, size, lh, [ROOTS[size - 1], *proof], ROOTS[size - 1])
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        assert not verify_inclusion(leaf - 1, size, lh, bad, ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_proofs_match_the_reference_vectors(old, new, path):
    hashes = tree(LEAVES)
    proof = consistency_proof(old, new, hashes.mth)
    assert [p.hex()[:8] for p in proof] == path
    r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
    assert verify_consistency(old, new, r1, r2, proof)
    assert not verify_consistency(old, new, r2, r1, proof)  # swapped roots
    assert not verify_consistency(old - 1, new, r1, r2, proof)
    assert not verify_consistency(old + 1, new, r1, r2, proof)
    assert not verify_consistency(old, new * 2, r1, r2, proof)
    assert not verify_consistency(old, new, r1, r2, [])
    assert not verify_consistency(old, new, r1, r2, proof[:-1])
    assert not verify_consistency(old, new, r1, r2, [*proof, r1])
    assert not verify_consistency(old, new, r1, r2, [proof[0], *proof])
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        assert not verify_consistency(old, new, r1, r2, bad)
    # the same proof from what the writer holds: the old frontier and the leaves since
    old_tree = Frontier()
    old_tree.extend(leaf_hash(d) for d in LEAVES[:old])
    since = [leaf_hash(d) for d in LEAVES[old:new]]
    assert consistency_proof(old, new, FrontierRange(old_tree, since).mth) == proof


@settings(max_examples=60, deadline=None)
@given(
    leaves=st.lists(st.binary(max_size=40), min_size=1, max_size=300),
    data=st.data(),
)
def test_every_proof_verifies_and_a_changed_byte_does_not(leaves, data):
    n = len(leaves)
    hashes = tree(leaves)
    root = reference_mth(leaves)
    frontier = Frontier()
    frontier.extend(leaf_hash(d) for d in leaves)
    assert hashes.root() == frontier.root() == root
    m = data.draw(st.integers(0, n - 1), label="leaf")
    proof = inclusion_proof(m, n, hashes.mth)
    assert verify_inclusion(m, n, leaf_hash(leaves[m]), proof, root)
    changed = leaves[m] + b"\x00" if not leaves[m] else bytes([leaves[m][0] ^ 1]) + leaves[m][1:]
    assert not verify_inclusion(m, n, leaf_hash(changed), proof, root)
    old = data.draw(st.integers(1, n), label="old size")
    old_root = reference_mth(leaves[:old])
    proof = consistency_proof(old, n, hashes.mth)
    assert verify_consistency(old, n, old_root, root, proof)
    if old < n:
        forked = [*leaves[: old - 1], changed if m == old - 1 else leaves[old - 1] + b"!"]
        assert not verify_consistency(old, n, reference_mth(forked), root, proof)
        before = Frontier()
        before.extend(leaf_hash(d) for d in leaves[:old])
        since = [leaf_hash(d) for d in leaves[old:]]
        assert consistency_proof(old, n, FrontierRange(before, since).mth) == proof


# -- keys and notes -------------------------------------------------------------------------------
def test_the_key_file_is_private_and_the_public_key_is_published_beside_it(tmp_path: Path):
    path = tmp_path / "keys" / "log-signing.pem"
    key = load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert load_or_create(path).public == key.public  # the same key on the next start
    pem, raw = (tmp_path / "keys" / "log-signing.pub.pem"), (tmp_path / "keys" / "log-signing.pub")
    assert PublicKey.parse(pem.read_text()) == key.public == PublicKey.parse(raw.read_text())
    assert PublicKey.parse(key.public.vkey(ORIGIN)) == key.public
    assert len(key.public.key_id) == 16


def test_a_checkpoint_is_a_c2sp_signed_note():
    key = SigningKey.generate()
    cp = Checkpoint(ORIGIN, 3, ROOTS[2], "2026-11-24T10:00:00Z")
    note = sign(cp, key)
    text, _, signatures = note.partition("\n\n")
    assert text.split("\n") == [
        ORIGIN,
        "3",
        base64.b64encode(ROOTS[2]).decode(),
        "time 2026-11-24T10:00:00Z",
    ]
    line = signatures.removesuffix("\n")
    assert line.startswith(f"\u2014 {ORIGIN} ")
    blob = base64.b64decode(line.rsplit(" ", 1)[1])
    assert blob[:4] == key.public.note_key_id(ORIGIN) and len(blob) == 4 + 64
    assert open_note(note, key.public) == cp
    with pytest.raises(NoteError, match="does not verify"):
        open_note(note.replace("\n3\n", "\n4\n"), key.public)
    with pytest.raises(NoteError, match="no signature"):
        open_note(note, SigningKey.generate().public)


# -- verification (pure) ---------------------------------------------------------------------------
def checkpoints_for(leaves: list[bytes], sizes: list[int], key: SigningKey) -> list:
    """Checkpoint records as the writer makes them, at the given sizes."""
    from services.ledger.note import RECORD_DECODER

    out, frontier, done = [], Frontier(), 0
    for size in sizes:
        added = [leaf_hash(d) for d in leaves[done:size]]
        frontier.extend(added)
        cp = Checkpoint(ORIGIN, size, frontier.root(), "2026-11-24T10:00:00Z")
        out.append(RECORD_DECODER.decode(record(cp, key, added, frontier)))
        done = size
    return out


@pytest.mark.parametrize("tamper", ["changed byte", "removed", "swapped", "truncated"])
def test_verify_names_the_first_bad_position(tamper):
    key = SigningKey.generate()
    leaves = [f'{{"n":{i}}}'.encode() for i in range(1, 101)]
    cps = checkpoints_for(leaves, [10, 40, 41, 100], key)
    assert verify(leaves, cps, key.public).ok
    bad = list(leaves)
    if tamper == "changed byte":
        bad[56] = bad[56].replace(b"57", b"58")
        want = 57
    elif tamper == "removed":
        del bad[56]
        want = 57
    elif tamper == "swapped":
        bad[56], bad[80] = bad[80], bad[56]
        want = 57
    else:
        bad = bad[:70]
        want = 71
    report = verify(bad, cps, key.public)
    assert not report.ok
    assert report.first_bad_position == want
    assert f"position {want}" in report.message
    assert report.covered == 41  # the checkpoints before the bad one still verify


def test_verify_refuses_a_forged_checkpoint():
    key, forger = SigningKey.generate(), SigningKey.generate()
    leaves = [b"a", b"b", b"c"]
    good = checkpoints_for(leaves, [2], key)
    forged = checkpoints_for(leaves, [2, 3], forger)[1]
    report = verify(leaves, [*good, forged], key.public)
    assert not report.ok and report.bad_checkpoint == 2
    assert "checkpoint #2" in report.message and "forged" in report.message


# -- against a real nats-server ------------------------------------------------------------------
@contextlib.asynccontextmanager
async def writer_running(nc, settings, every_s: float = 0.2) -> AsyncIterator[CheckpointWriter]:
    await ensure_stream(nc, checkpoints_stream_config())
    writer = CheckpointWriter(nc, load_or_create(signing_key_path(settings)), ORIGIN, every_s)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        yield writer
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def send_project(nc, project: str, tasks: int = 2) -> None:
    for ce in plan_project(project, "m1", tasks=tuple(f"t{i}" for i in range(tasks))):
        assert (await request(nc, ce)).accepted


async def signed_up_to_the_end(nc) -> int:
    """Wait until the last checkpoint covers the whole log; its size."""
    end = await store.last_sequence(nc)

    async def covered() -> bool:
        last = await store.last_checkpoint(nc)
        return last is not None and int(last.record.note.split("\n")[1]) == end

    await wait_for(covered, what=f"a checkpoint covering 1..{end}")
    return end


async def test_the_writer_signs_while_events_arrive_and_not_when_idle(intake, nc, settings):
    async with writer_running(nc, settings) as writer:
        sizes = []
        for project in ("p1", "p2", "p3"):
            await send_project(nc, project)
            sizes.append(await signed_up_to_the_end(nc))
        checkpoints = await store.read_checkpoints(nc)
        key = load_or_create(signing_key_path(settings)).public
        signed = [open_note(c.record.note, key, ORIGIN).size for c in checkpoints]
        assert signed == sorted(set(signed)) and set(sizes) <= set(signed)
        assert writer.size == sizes[-1]
        # Idle: nothing changes, so nothing is signed. This sleep observes an absence over a
        # window of several periods; it synchronises nothing.
        await asyncio.sleep(writer.every_s * 5)
        assert len(await store.read_checkpoints(nc)) == len(checkpoints)


async def test_audit_verify_passes_live_and_on_an_export(intake, nc, settings, tmp_path, capsys):
    async with writer_running(nc, settings):
        await send_project(nc, "p1")
        await signed_up_to_the_end(nc)
        out = tmp_path / "audit.jsonl"
        assert await cli(settings, "export", "--out", str(out)) == 0
        assert await cli(settings, "verify") == 0
        assert "OK: verified" in capsys.readouterr().out
        assert await cli(settings, "verify", "--file", str(out)) == 0
        assert "OK: verified" in capsys.readouterr().out
    lines = out.read_bytes().splitlines()
    head = json.loads(lines[0])
    assert head["key_id"] == load_or_create(signing_key_path(settings)).public.key_id
    positions = [json.loads(line)["position"] for line in lines[1 + head["checkpoints"] :]]
    assert positions == list(range(1, await store.last_sequence(nc) + 1))


async def cli(settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_audit_commands(parser.add_subparsers(dest="command"))
    return await run_audit(parser.parse_args(["audit", *argv]), settings)


@pytest.fixture
async def three_checkpoints(intake, nc, settings, tmp_path) -> tuple[Path, list[int]]:
    """An export of a log signed in three rounds: (the file, the checkpoint sizes)."""
    async with writer_running(nc, settings):
        sizes = []
        for project in ("p1", "p2", "p3"):
            await send_project(nc, project, tasks=3)
            sizes.append(await signed_up_to_the_end(nc))
        out = tmp_path / "audit.jsonl"
        assert await cli(settings, "export", "--out", str(out)) == 0
    return out, sizes


@pytest.mark.parametrize("tamper", ["changed byte", "removed", "swapped"])
async def test_a_tampered_export_fails_naming_the_first_bad_position(
    three_checkpoints, settings, tmp_path, capsys, tamper
):
    path, sizes = three_checkpoints
    lines = path.read_bytes().splitlines(keepends=True)
    first_event = 1 + json.loads(lines[0])["checkpoints"]
    bad = sizes[0] + 3  # inside the second checkpoint's range
    at = first_event + bad - 1
    if tamper == "changed byte":
        event = json.loads(lines[at])
        data = bytearray(base64.b64decode(event["data_b64"]))
        data[data.index(b'"') + 1] ^= 0x01  # one byte of the stored JSON
        event["data_b64"] = base64.b64encode(bytes(data)).decode()
        lines[at] = json.dumps(event).encode() + b"\n"
    elif tamper == "removed":
        del lines[at]
    else:
        lines[at], lines[at + 4] = lines[at + 4], lines[at]
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"".join(lines))
    capsys.readouterr()
    assert await cli(settings, "verify", "--file", str(tampered)) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAILED: ") and err.count("\n") == 1
    assert f"position {bad} " in err
    exported = open_export(tampered)
    report = verify(
        exported.leaves(), exported.checkpoints, PublicKey.parse(exported.header.public_key)
    )
    assert report.first_bad_position == bad and report.covered == sizes[0]


async def test_a_forged_checkpoint_signature_fails(three_checkpoints, settings, tmp_path, capsys):
    path, sizes = three_checkpoints
    lines = path.read_bytes().splitlines(keepends=True)
    last = json.loads(lines[json.loads(lines[0])["checkpoints"]])
    text, _, sig = last["checkpoint"]["note"].rpartition(" ")
    blob = bytearray(base64.b64decode(sig))
    blob[10] ^= 0xFF
    last["checkpoint"]["note"] = f"{text} {base64.b64encode(bytes(blob)).decode()}\n"
    lines[json.loads(lines[0])["checkpoints"]] = json.dumps(last).encode() + b"\n"
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"".join(lines))
    capsys.readouterr()
    assert await cli(settings, "verify", "--file", str(forged)) == 1
    assert "does not verify" in capsys.readouterr().err
    # a whole checkpoint signed by another key, with the right key given explicitly
    assert (
        await cli(
            settings, "verify", "--file", str(path), "--key", SigningKey.generate().public.b64
        )
        == 1
    )
    assert "no signature" in capsys.readouterr().err


@pytest.fixture
async def api(intake, nc, settings) -> AsyncIterator[httpx.AsyncClient]:
    view = LedgerView(nc, load_or_create(signing_key_path(settings)).public, ORIGIN)
    app = Litestar(route_handlers=ledger_routes(view))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30
    ) as client:
        yield client


async def test_proofs_verify_against_the_signed_root_with_only_the_public_key(
    intake, nc, settings, api
):
    async with writer_running(nc, settings):
        await send_project(nc, "p1")
        first = await signed_up_to_the_end(nc)
        await send_project(nc, "p2")
        second = await signed_up_to_the_end(nc)
    published = (await api.get("/.well-known/milestones/log-key")).json()
    key = PublicKey.parse(published["public_key_pem"])
    assert published["origin"] == ORIGIN and published["key_id"] == key.key_id

    answer = (await api.get("/audit/proof", params={"position": 3})).json()
    cp = open_note(answer["checkpoint"]["note"], key, ORIGIN)
    data = base64.b64decode(answer["event"]["data_b64"])
    proof = [base64.b64decode(p) for p in answer["proof"]]
    assert cp.size == second and answer["tree_size"] == second
    assert verify_inclusion(2, cp.size, leaf_hash(data), proof, cp.root)
    assert not verify_inclusion(2, cp.size, leaf_hash(data + b" "), proof, cp.root)
    older = (await api.get("/audit/proof", params={"position": 3, "size": first})).json()
    assert open_note(older["checkpoint"]["note"], key).size == first

    answer = (await api.get("/audit/consistency", params={"from": first, "to": second})).json()
    old = open_note(answer["from_checkpoint"]["note"], key, ORIGIN)
    new = open_note(answer["to_checkpoint"]["note"], key, ORIGIN)
    proof = [base64.b64decode(p) for p in answer["proof"]]
    assert verify_consistency(old.size, new.size, old.root, new.root, proof)

    listed = (await api.get("/audit/checkpoints")).json()
    assert listed["latest"]["size"] == second and listed["problem"] is None
    assert (await api.get("/audit/verify")).json()["ok"] is True

    missing = await api.get("/audit/proof", params={"position": second + 1})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    for params in ({"position": "x"}, {"position": 0}, {}):
        bad = await api.get("/audit/proof", params=params)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    assert (
        await api.get("/audit/consistency", params={"from": first, "to": first + 1})
    ).status_code == 404

    export = await api.get("/audit/export")
    assert export.status_code == 200
    assert len(export.content.splitlines()) == 1 + listed["count"] + second


async def test_a_restarted_writer_continues_consistently(intake, nc, settings):
    async with writer_running(nc, settings):
        await send_project(nc, "p1")
        first = await signed_up_to_the_end(nc)
    before = len(await store.read_checkpoints(nc))
    await send_project(nc, "p2")  # written while no writer runs
    async with writer_running(nc, settings) as writer:
        second = await signed_up_to_the_end(nc)
        assert writer.halted is None
    checkpoints = await store.read_checkpoints(nc)
    assert len(checkpoints) > before and second > first
    key = load_or_create(signing_key_path(settings)).public
    view = LedgerView(nc, key, ORIGIN)
    answer = await view.consistency(first, second)
    old, new = (open_note(answer[k]["note"], key) for k in ("from_checkpoint", "to_checkpoint"))
    proof = [base64.b64decode(p) for p in answer["proof"]]
    assert verify_consistency(first, second, old.root, new.root, proof)
    assert (await view.verify_live()).ok


async def test_a_writer_stops_signing_when_the_last_checkpoint_is_not_its_own(intake, nc, settings):
    async with writer_running(nc, settings):
        await send_project(nc, "p1")
        await signed_up_to_the_end(nc)
    # someone appends a checkpoint signed with another key (only the services could)
    forger = SigningKey.generate()
    last = await store.last_checkpoint(nc)
    assert last is not None
    frontier = Frontier(0)
    cp = Checkpoint(ORIGIN, 0, frontier.root(), "2026-11-24T10:00:00Z")
    await store.append_checkpoint(nc, record(cp, forger, [], frontier), last.seq)
    await send_project(nc, "p2")
    async with writer_running(nc, settings) as writer:
        await wait_for(lambda: _done(writer), what="the writer to halt")
    assert writer.halted and "does not verify with this writer's key" in writer.halted
    assert (await store.last_checkpoint(nc)).seq == last.seq + 1  # it signed nothing after


async def _done(writer: CheckpointWriter) -> bool:
    return writer.halted is not None
