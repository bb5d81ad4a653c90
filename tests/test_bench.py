"""The benchmark runs end to end at a tiny size and reports every figure (no speed is asserted):
secured as in production, with the authentication A/B."""

from __future__ import annotations

import json

from bench.run import Options, run, table


async def test_bench_reports_every_figure(database_url, tmp_path):
    out = tmp_path / "bench.json"
    opts = Options(
        projects=4,
        inbox_projects=2,
        publishers=8,
        freshness_rate=200,
        freshness_seconds=0.5,
        query_rate=100,
        query_seconds=0.3,
        raw_messages=4000,
        database_url=database_url,
        out=str(out),
        lazy=True,
        events=3000,
        auth_runs=1,
        auth_projects=2,
    )
    results = await run(opts, lambda _line: None)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert (
        results["intake_commands"]["messages"] == 4 * 181
        and not results["intake_commands"]["refused"]
    )
    assert results["intake_inbox"]["messages"] == 2 * 181
    assert results["intake_commands_lazy"]["messages"] == 4 * 181
    assert results["freshness"]["refused"] == 0 and results["freshness"]["n"] == 100
    for figures in results["query"].values():
        assert figures["errors"] == 0 and figures["n"] == 30
    assert set(results["rebuild"]) == {"status+history+audit", "status", "history", "audit"}
    assert all(r["events"] >= 3000 for r in results["rebuild"].values())
    for key in (
        "atomic_batch_durable",
        "atomic_batch_lazy",
        "publish_async_durable",
        "publish_async_lazy",
        "ordered_read",
        "pg_upsert_rows",
    ):
        assert results["raw"][key] > 0, key
    assert 0 < results["ratios"]["intake_vs_atomic_batch_durable"] < 1
    assert results["authentication"] is True  # the load used its own credentials
    assert "password" not in out.read_text()
    ab = results["auth_ab"]
    assert ab["order"] == ["secured", "unsecured"]
    for side in ("secured", "unsecured"):
        figures = ab[side]
        assert figures["messages"] == 2 * 181 and not figures["refused"], side
        assert len(figures["per_s"]) == 1 and figures["min"] <= figures["median"] <= figures["max"]
        assert figures["intake_cpu_ms_per_command_median"] > 0, side
    assert ab["ratio"] == round(ab["secured"]["median"] / ab["unsecured"]["median"], 4)
    assert results["ratios"]["intake_secured_vs_unsecured"] == ab["ratio"]
    printed = table(results)
    assert "rebuild status+history+audit" in printed
    assert "intake, commands, secured (A/B, 1 runs)" in printed and "unsecured" in printed
