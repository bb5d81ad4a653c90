"""The critical path over a large plan: 10,000 milestones and 20,000 finish-to-start dependencies
(a deterministic pseudo-random DAG, lags -5..10 days), timed in process. ``measure()`` gives the
figures to ``milestones bench``; run as a script it prints one line.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import time

from services.domain.critical_path import Node, critical_path

START = dt.date(2026, 1, 5)


def build(milestones: int = 10_000, dependencies: int = 20_000, seed: int = 7) -> list[Node]:
    """A plan of ``milestones`` with ``dependencies`` distinct edges, each from a milestone to a
    later one within 200 places (so chains are long, as in a real plan), given in shuffled
    order."""
    rng = random.Random(seed)
    edges: dict[int, dict[str, int]] = {j: {} for j in range(milestones)}
    count = 0
    while count < min(dependencies, milestones * (milestones - 1) // 2):
        j = rng.randrange(1, milestones)
        i = rng.randrange(max(0, j - 200), j)
        if f"m{i:05d}" not in edges[j]:
            edges[j][f"m{i:05d}"] = rng.randint(-5, 10)
            count += 1
    nodes = []
    for j in range(milestones):
        due = START + dt.timedelta(days=j // 4 + rng.randint(0, 20))
        nodes.append(
            Node(
                milestone_id=f"m{j:05d}",
                due=due,
                earliest=due + dt.timedelta(days=rng.randint(-10, 5)),
                predecessors=edges[j],
                done=j < milestones // 20 and rng.random() < 0.5,
            )
        )
    rng.shuffle(nodes)
    return nodes


def measure(
    milestones: int = 10_000, dependencies: int = 20_000, repeat: int = 7
) -> dict[str, float | int]:
    """The critical path of ``build(milestones, dependencies)``: median and best of ``repeat``
    runs, in milliseconds (building the plan is not timed)."""
    nodes = build(milestones, dependencies)
    critical_path(nodes)  # warm up
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        critical_path(nodes)
        runs.append((time.perf_counter() - started) * 1000)
    return {
        "milestones": milestones,
        "dependencies": sum(len(n.predecessors) for n in nodes),
        "runs": repeat,
        "median_ms": round(statistics.median(runs), 1),
        "best_ms": round(min(runs), 1),
    }


def main() -> None:
    m = measure()
    print(
        f"critical path: {m['milestones']:,} milestones, {m['dependencies']:,} dependencies: "
        f"{m['median_ms']} ms (median of {m['runs']})"
    )


if __name__ == "__main__":
    main()
