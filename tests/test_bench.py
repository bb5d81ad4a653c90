"""The benchmark runs end to end at a tiny size and reports every figure (no speed is asserted):
secured as in production, with the authentication A/B, the ceilings and CPU per message."""

from __future__ import annotations

import json

from bench.auth_ab import summary
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
    # every connection asked each kind twice before the timed runs, the echo's alike
    assert results["query_warm_up"]["requests"] == 16 * 3 * 2
    assert results["query_warm_up"]["errors"] == 0
    echo_warm_up = results["ceilings"]["http_echo"]["warm_up"]
    assert echo_warm_up["requests"] == 16 * 2 and echo_warm_up["errors"] == 0
    assert "warm-up before the timed HTTP runs" in table(results)
    # milestone by id asked while reschedules go through the intake, both counted
    under = results["query_while_intake_runs"]
    assert under["milestone_by_id"]["errors"] == 0 and under["milestone_by_id"]["n"] == 30
    assert under["freshness"]["refused"] == 0 and under["freshness"]["n"] == 200 * (0.3 + 1.0)
    assert "query milestone_by_id while the intake runs" in table(results)
    assert set(results["rebuild"]) == {"status+history+audit", "status", "history", "audit"}
    assert all(r["events"] >= 3000 for r in results["rebuild"].values())
    for key in (
        "atomic_batch_durable",
        "atomic_batch_lazy",
        "publish_async_durable",
        "publish_async_lazy",
        "ordered_read",
        "ordered_read_decoded",
        "ordered_read_runner",
        "pg_upsert_rows",
        "pg_copy_rows",
    ):
        assert results["raw"][key] > 0, key
    assert 0 < results["ratios"]["intake_vs_atomic_batch_durable"] < 1
    # the ceilings, measured in the same run from the same clients
    echo = results["ceilings"]["nats_echo"]
    assert echo["messages"] == 4 * 181 and echo["last_position"] == 1  # every reply the echo's
    # /proc counts CPU in clock ticks (10 ms): at this size an echo may use less than one
    assert echo["responder_cpu_ms_per_message"] >= 0
    assert results["ratios"]["intake_vs_nats_echo"] == round(
        results["intake_commands"]["per_s"] / echo["per_s"], 3
    )
    http_echo = results["ceilings"]["http_echo"]
    assert http_echo["errors"] == 0 and http_echo["n"] == 30
    assert http_echo["max"]["per_s"] > 0 and http_echo["max"]["errors"] == 0
    assert "query_milestone_by_id_p99_vs_http_echo" in results["ratios"]
    # each rebuild against the decoded reads taken just before and just after it (the one
    # after a rebuild is the one before the next)
    order = ["status+history+audit", "status", "history", "audit"]
    for name, label in (("status+history+audit", "all"), ("audit", "audit")):
        rebuilt = results["rebuild"][name]
        before, after = rebuilt["ceiling_before_per_s"], rebuilt["ceiling_after_per_s"]
        assert min(before, after) <= rebuilt["ceiling_per_s"] <= max(before, after)
        if name != order[0]:
            assert before == results["rebuild"][order[order.index(name) - 1]]["ceiling_after_per_s"]
        assert results["ratios"][f"rebuild_{label}_vs_ordered_read_decoded"] == round(
            rebuilt["per_s"] / rebuilt["ceiling_per_s"], 3
        )
    cpu = results["cpu_ms_per_message"]
    for scenario in ("intake_commands", "intake_inbox", "freshness", "query", "nats_echo"):
        assert cpu[scenario]["messages"] > 0, scenario
    assert cpu["intake_commands"]["intake"] > 0 and cpu["intake_commands"]["nats-server"] > 0
    assert cpu["query"]["query"] > 0 and cpu["http_echo"]["echo-http"] >= 0
    assert cpu["rebuild status+history+audit"]["rebuild"] > 0
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
    paths = {side: ab[side]["path_cpu_ms_per_command"][0] for side in ("secured", "unsecured")}
    for side, path in paths.items():  # one run a side: the run's intake and server CPU summed
        figures = ab[side]
        assert path == round(
            figures["intake_cpu_ms_per_command"][0] + figures["server_cpu_ms_per_command"][0], 4
        )
        assert figures["path_cpu_ms_per_command_median"] == path > 0
    assert ab["path_cpu_ratio"] == round(paths["secured"] / paths["unsecured"], 4)
    assert results["ratios"]["intake_secured_vs_unsecured_cpu"] == ab["path_cpu_ratio"]
    printed = table(results)
    assert "rebuild status+history+audit" in printed
    for line in (
        "ceiling: NATS request/reply echo",
        "ceiling: HTTP echo",
        "ceiling: ordered read + Item.of/decode_event",
        "binary COPY",
        "CPU ms/msg, intake_commands",
    ):
        assert line in printed, line
    assert "intake, commands, secured (A/B, 1 runs)" in printed and "unsecured" in printed
    assert f"CPU {ab['path_cpu_ratio']:.1%}" in printed


def test_an_ab_side_sums_each_runs_cpu_before_the_median():
    """The path's CPU per command is the intake's and nats-server's of the same run, summed run
    by run, then the median: a sum of the two medians would mix runs (here 4 against 11)."""

    def one(intake: float, server: float) -> dict:
        return {
            "per_s": 1000,
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "intake_cpu_ms_per_command": intake,
            "server_cpu_ms_per_command": server,
            "messages": 10,
            "refused": {},
        }

    side = summary([one(1, 10), one(2, 2), one(10, 1)])
    assert side["path_cpu_ms_per_command"] == [11, 4, 11]
    assert side["path_cpu_ms_per_command_median"] == 11
    assert side["intake_cpu_ms_per_command_median"] + side["server_cpu_ms_per_command_median"] == 4
