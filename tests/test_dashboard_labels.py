"""Where the charts put their words (pure): beside the marks, clear of every line and of each
other, inside the chart; lines that share dates drawn side by side. The browser tests measure
the same on the demo project; these cover tangled projects a browser test would be slow for."""

from __future__ import annotations

import datetime as dt
import random
import re
import xml.etree.ElementTree as ET

from events import (
    DependencyAdded,
    MilestoneAchieved,
    MilestonePlanned,
    MilestoneRescheduled,
    ProjectCreated,
    TaskAdded,
)
from services.dashboard import labels, model, svg, trend
from services.domain import reporting
from tests.test_dashboard import NS, TODAY, D, stored


def test_a_word_steps_past_the_lines_in_its_way_and_goes_left_when_the_right_is_full():
    line = labels.segment_box(110, 0, 110, 100)
    x = labels.place_beside(
        30, 40, 52, right_of=100, left_of=50, lo=0, hi=300, obstacles=[line], gap=4
    )
    assert x is not None and x >= line.x1 and not labels.Box(x, 40, x + 30, 52).hits(line)
    wall = labels.Box(100, 0, 300, 100)
    left = labels.place_beside(30, 40, 52, right_of=100, left_of=50, lo=0, hi=300, obstacles=[wall])
    assert left == 50 - 4 - 30
    assert (
        labels.place_beside(30, 40, 52, right_of=100, left_of=20, lo=0, hi=120, obstacles=[wall])
        is None
    )


def test_spread_keeps_order_and_distance_and_stays_in_bounds_when_it_can():
    assert labels.spread([10, 10, 10], 15, 0, 100) == [10, 25, 40]
    assert labels.spread([95, 95, 95], 15, 0, 100) == [70, 85, 100]
    crowded = labels.spread([50] * 10, 15, 0, 100)  # more than fit: still apart, from the top
    assert all(b - a >= 15 for a, b in zip(crowded, crowded[1:], strict=False))


def test_fit_shortens_a_name_to_its_width():
    long = "A milestone with a name far too long for the column it has to stand in"
    short = labels.fit(long, 12, 200)
    assert short.endswith("…") and labels.text_width(short, 12) <= 200
    assert labels.fit("Beta", 12, 200) == "Beta"


def tangled(n: int = 40, seed: int = 7) -> list:
    """A project whose dependencies cross each other: some achieved, some late."""
    rng = random.Random(seed)
    script: list = [("2026-01-05", ProjectCreated(project_id="p", name="Tangle"))]
    for k in range(n):
        due = D("2026-02-01") + dt.timedelta(days=rng.randrange(0, 90))
        script.append(
            (
                "2026-01-05",
                MilestonePlanned(
                    project_id="p",
                    milestone_id=f"m{k}",
                    name=f"Milestone number {k}",
                    kind="event",
                    due=due,
                    order=k,
                    phase=f"Phase {k // 8}",
                ),
            )
        )
        if k % 5 == 2:
            script.append(
                (
                    "2026-01-05",
                    TaskAdded(
                        project_id="p",
                        milestone_id=f"m{k}",
                        task_id="t",
                        title="T",
                        due=due + dt.timedelta(days=9),
                    ),
                )
            )
    for k in range(1, n):
        for pred in rng.sample(range(k), min(k, rng.randrange(0, 3))):
            script.append(
                (
                    "2026-01-06",
                    DependencyAdded(project_id="p", milestone_id=f"m{k}", depends_on=f"m{pred}"),
                )
            )
    for k in range(0, n, 6):
        script.append(("2026-02-20", MilestoneAchieved(project_id="p", milestone_id=f"m{k}")))
    return [(p + 1, stored(day, e)) for p, (day, e) in enumerate(script)]


def points(d: str) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)]


def test_gantt_words_never_cover_an_arrow_the_today_line_or_each_other():
    view = model.project_view("p", tangled(), today=TODAY)
    root = ET.fromstring(svg.gantt_svg(view))
    lines = [
        labels.segment_box(*a, *b, pad=0)
        for arrow in root.findall(".//s:path[@class='arrow'][@data-from]", NS)
        for a, b in zip(points(arrow.get("d")), points(arrow.get("d"))[1:], strict=False)
    ]
    today = root.find(".//s:line[@class='today']", NS)
    lines.append(labels.segment_box(*(float(today.get(k)) for k in ("x1", "y1", "x2", "y2"))))
    assert len(lines) > 40  # a tangle indeed
    words = [
        labels.text_box(float(t.get("x")), float(t.get("y")), t.text, svg.WORD_SIZE, bold=True)
        for t in root.findall(".//s:text[@class='health-word']", NS)
    ]
    assert len(words) == 40
    assert [w for w in words if any(w.hits(line) for line in lines)] == []
    assert [(a, b) for n, a in enumerate(words) for b in words[n + 1 :] if a.hits(b)] == []
    assert all(svg.LABEL_W <= w.x0 and w.x1 <= svg.WIDTH for w in words)
    names = [
        labels.text_box(16, float(t.get("y")), t.text, 12)
        for t in root.findall(".//s:text[@class='label']", NS)
    ]
    assert all(n.x1 <= svg.LABEL_W for n in names)  # names stay left of the time axis


def test_an_achieved_milestone_is_one_mark_and_its_arrows_leave_from_it():
    view = model.project_view("p", tangled(), today=TODAY)
    root = ET.fromstring(svg.gantt_svg(view))
    achieved = {r.milestone_id: r for r in view.rows if r.achieved_on}
    assert achieved
    for mid in achieved:
        marks = root.findall(f".//s:path[@data-milestone='{mid}']", NS)
        [mark] = [m for m in marks if m.get("class", "").startswith("diamond")]
        assert mark.get("data-date") == achieved[mid].achieved_on.isoformat()
        for arrow in root.findall(f".//s:path[@class='arrow'][@data-from='{mid}']", NS):
            x, _ = points(arrow.get("d"))[0]
            assert x == float(mark.get("data-x")) + 7


def test_trend_lines_that_share_dates_run_side_by_side_and_their_names_do_not_overlap():
    script = [("2026-01-05", ProjectCreated(project_id="p", name="Twins"))]
    for k in range(12):  # twelve milestones, due in pairs on the same day
        script.append(
            (
                "2026-01-05",
                MilestonePlanned(
                    project_id="p",
                    milestone_id=f"m{k}",
                    name=f"Milestone {k}",
                    kind="event",
                    due=D("2026-04-01") + dt.timedelta(days=k // 2),
                    order=k,
                ),
            )
        )
    script.append(
        (
            "2026-02-10",
            MilestoneRescheduled(
                project_id="p", milestone_id="m0", new_due=D("2026-04-02"), reason="x"
            ),
        )
    )
    events = [(p + 1, stored(day, e)) for p, (day, e) in enumerate(script)]
    root = ET.fromstring(trend.trend_svg(reporting.trend("p", events, today=TODAY)))
    lines = [p.get("points") for p in root.findall(".//s:polyline[@class='series']", NS)]
    assert len(lines) == len(set(lines)) == 12  # no line hidden under another
    keys = root.findall(".//s:text[@class='series-label']", NS)
    boxes = [labels.text_box(float(k.get("x")), float(k.get("y")), k.text, 12) for k in keys]
    assert [(a, b) for n, a in enumerate(boxes) for b in boxes[n + 1 :] if a.hits(b)] == []
    height = float(root.get("height"))
    assert all(0 <= b.y0 and b.y1 <= height and b.x1 <= trend.WIDTH for b in boxes)
    frame = root.find(".//s:rect[@class='frame']", NS)
    right = float(frame.get("x")) + float(frame.get("width"))
    assert all(b.x0 > right for b in boxes)  # right of every line
