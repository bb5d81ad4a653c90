"""The dashboard's charts and pages rendered from a scripted project (pure): the right marks at
the right x positions for their dates, arrows between the right milestones, health in words."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

from events import (
    BaselineSet,
    DependencyAdded,
    MilestoneAchieved,
    MilestonePlanned,
    MilestoneRescheduled,
    ProjectCreated,
    StatusReported,
    StoredEvent,
    TaskAdded,
)
from services.dashboard import model, pages, svg
from services.domain import reporting

D = dt.date.fromisoformat
TODAY = D("2026-03-10")
NS = {"s": "http://www.w3.org/2000/svg"}


def stored(day: str, event) -> StoredEvent:
    t = dt.datetime.combine(D(day), dt.time(12), dt.UTC)
    return StoredEvent(
        id=f"e-{day}-{type(event).__name__}",
        source="test",
        type=type(event).__name__,
        subject="s",
        time=t,
        recordedtime=t,
        correlationid="c",
        causationid="c",
        data=event,
        actor="pm",
    )


def planned(mid: str, order: int, due: str, phase: str) -> MilestonePlanned:
    return MilestonePlanned(
        project_id="p",
        milestone_id=mid,
        name=f"Milestone {mid}",
        kind="event",
        due=D(due),
        order=order,
        phase=phase,
    )


SCRIPT = [
    ("2026-01-05", ProjectCreated(project_id="p", name="Pilot", goals=["go live"])),
    ("2026-01-05", planned("a", 1, "2026-02-01", "Design")),
    ("2026-01-05", planned("b", 2, "2026-03-01", "Design")),
    ("2026-01-05", planned("c", 3, "2026-04-01", "Build")),
    (
        "2026-01-05",
        TaskAdded(
            project_id="p",
            milestone_id="c",
            task_id="t",
            title="T",
            start=D("2026-02-15"),
            due=D("2026-04-10"),
        ),
    ),
    ("2026-01-05", DependencyAdded(project_id="p", milestone_id="b", depends_on="a", lag_days=0)),
    ("2026-01-05", DependencyAdded(project_id="p", milestone_id="c", depends_on="b", lag_days=5)),
    (
        "2026-01-06",
        BaselineSet(
            project_id="p",
            name="v1",
            planned={"a": D("2026-02-01"), "b": D("2026-03-01"), "c": D("2026-04-01")},
        ),
    ),
    ("2026-01-30", MilestoneAchieved(project_id="p", milestone_id="a")),
    (
        "2026-02-10",
        MilestoneRescheduled(
            project_id="p",
            milestone_id="b",
            new_due=D("2026-03-20"),
            reason="x",
            old_due=D("2026-03-01"),
        ),
    ),
    ("2026-02-16", StatusReported(project_id="p", health="at_risk", note="b late")),
]
EVENTS = [(n + 1, stored(day, e)) for n, (day, e) in enumerate(SCRIPT)]


def view(**kw) -> model.ProjectView:
    return model.project_view("p", EVENTS, today=TODAY, **kw)


def parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_gantt_has_a_bar_and_a_diamond_per_milestone_at_its_dates():
    v = view()
    root = parse(svg.gantt_svg(v))
    start = D(root.get("data-start"))
    px = float(root.get("data-px-per-day"))

    def x(d: dt.date) -> float:
        return round(svg.LABEL_W + (d - start).days * px, 1)

    bars = root.findall(".//s:rect[@class='bar'][@data-milestone]", NS)
    diamonds = root.findall(".//s:path[@data-milestone]", NS)
    assert [b.get("data-milestone") for b in bars] == ["a", "b", "c"]
    due = {d.get("data-milestone"): d for d in diamonds if d.get("class", "").startswith("diamond")}
    # a was achieved on Jan 30: one mark, at its achievement, not at its due date
    assert {m: (d.get("data-date"), float(d.get("data-x"))) for m, d in due.items()} == {
        "a": ("2026-01-30", x(D("2026-01-30"))),
        "b": ("2026-03-20", x(D("2026-03-20"))),
        "c": ("2026-04-01", x(D("2026-04-01"))),
    }
    ghosts = {
        g.get("data-milestone"): g.get("data-date")
        for g in diamonds
        if g.get("class") == "baseline"
    }
    assert ghosts == {"a": "2026-02-01", "b": "2026-03-01", "c": "2026-04-01"}
    c_bar = next(
        b for b in bars if b.get("data-milestone") == "c"
    )  # the tasks' span: task start to task due
    assert (c_bar.get("data-start"), c_bar.get("data-end")) == ("2026-02-15", "2026-04-10")
    assert float(c_bar.get("x")) == x(D("2026-02-15"))
    a_marks = [d for d in diamonds if d.get("data-milestone") == "a"]
    assert [d.get("class") for d in a_marks] == ["baseline", "diamond achieved health-achieved"]
    # one mark for an achieved milestone: no forecast circle, no float bar beside it
    assert root.findall(".//s:g[@class='forecast'][@data-milestone='a']", NS) == []
    assert [
        r
        for r in root.findall(".//s:rect", NS)
        if "float" in (r.get("class") or "") and r.get("data-milestone") == "a"
    ] == []
    # the arrow to b leaves from a's one mark
    arrow = root.find(".//s:path[@class='arrow'][@data-from='a']", NS)
    assert arrow.get("d").startswith(f"M{x(D('2026-01-30')) + 7},")
    today = root.find(".//s:g[@class='today-mark']", NS)
    assert today.get("data-date") == "2026-03-10" and float(today.get("data-x")) == x(TODAY)


def test_gantt_draws_arrows_between_the_right_milestones_and_health_in_words():
    root = parse(svg.gantt_svg(view()))
    arrows = root.findall(".//s:path[@class='arrow'][@data-from]", NS)
    assert sorted((a.get("data-from"), a.get("data-to")) for a in arrows) == [
        ("a", "b"),
        ("b", "c"),
    ]
    rows = {
        g.get("data-milestone"): g.get("data-health")
        for g in root.findall(".//s:g[@class='milestone-row']", NS)
    }
    # c: b finishes Mar 20 + 5 days lag = Mar 25 <= Apr 1, but its open task is due Apr 10: late
    assert rows == {"a": "achieved", "b": "on_track", "c": "late"}
    words = [t.text for t in root.findall(".//s:text[@class='health-word']", NS)]
    assert words == ["achieved", "on track", "late"]
    phases = [g.get("data-phase") for g in root.findall(".//s:g[@class='phase-row']", NS)]
    assert phases == ["Design", "Build"]
    assert (
        root.find(".//s:line[@class='expected-finish'][@data-milestone='c']", NS).get("data-date")
        == "2026-04-10"
    )


def test_as_of_draws_the_project_as_it_stood_then():
    then = parse(svg.gantt_svg(view(as_of=D("2026-01-20"))))
    due = {
        d.get("data-milestone"): d.get("data-date")
        for d in then.findall(".//s:path[@data-milestone]", NS)
        if d.get("class", "").startswith("diamond")
    }
    assert due["b"] == "2026-03-01"  # not yet rescheduled on Jan 20
    assert then.findall(".//s:path[@data-milestone='a']", NS)[-1].get("class") == (
        "diamond health-on_track"
    )  # a not yet achieved: its due date
    assert then.find(".//s:g[@class='today-mark']", NS).get("data-date") == "2026-01-20"
    # the same as folding a log truncated at that day
    truncated = [(p, e) for p, e in EVENTS if e.time.date() <= D("2026-01-20")]
    assert (
        model.project_view("p", truncated, today=D("2026-01-20")).rows
        == view(as_of=D("2026-01-20")).rows
    )


def test_trend_chart_has_a_line_per_milestone_and_the_diagonal():
    trend = reporting.trend("p", EVENTS, today=TODAY)
    root = parse(svg.trend_svg(trend))
    lines = root.findall(".//s:polyline[@class='series']", NS)
    assert [line.get("data-milestone") for line in lines] == ["a", "b", "c"]
    diagonal = root.find(".//s:line[@class='diagonal']", NS)
    x1, y1, x2, y2 = (float(diagonal.get(k)) for k in ("x1", "y1", "x2", "y2"))
    # a was achieved on Jan 30: its line ends on the diagonal at (Jan 30, Jan 30)
    a_points = root.findall(".//s:g[@data-milestone='a']/*[@class='point']", NS)
    assert (a_points[-1].get("data-date"), a_points[-1].get("data-expected")) == (
        "2026-01-30",
        "2026-01-30",
    )
    ax, ay = centre(a_points[-1])
    assert abs((ax - x1) * (y2 - y1) - (ay - y1) * (x2 - x1)) / abs(x2 - x1) < 1  # on the line
    b_expected = [
        p.get("data-expected")
        for p in root.findall(".//s:g[@data-milestone='b']/*[@class='point']", NS)
    ]
    assert b_expected[0] == "2026-03-01" and b_expected[-1] == "2026-03-20"  # rising: it slipped


def centre(point: ET.Element) -> tuple[float, float]:
    if point.get("cx"):
        return float(point.get("cx")), float(point.get("cy"))
    if point.get("width"):
        return float(point.get("x")) + 3.5, float(point.get("y")) + 3.5
    pairs = re.findall(r"(-?[\d.]+),(-?[\d.]+)", point.get("d"))
    xs, ys = [float(a) for a, _ in pairs], [float(b) for _, b in pairs]
    return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2


def test_trend_plot_fills_its_frame_with_a_marker_and_a_colour_blind_safe_colour_each():
    trend = reporting.trend("p", EVENTS, today=TODAY)
    root = parse(svg.trend_svg(trend))
    frame = root.find(".//s:rect[@class='frame']", NS)
    left, top = float(frame.get("x")), float(frame.get("y"))
    right, bottom = left + float(frame.get("width")), top + float(frame.get("height"))
    points = [centre(p) for p in root.findall(".//*[@class='point']", NS)]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    # the first and last report dates and the earliest and latest expected finish are near
    # the frame's edges: the plot fills it (a shared scale left its future half empty)
    assert min(xs) - left < 0.05 * (right - left) and right - max(xs) < 0.05 * (right - left)
    assert min(ys) - top < 0.05 * (bottom - top) and bottom - max(ys) < 0.05 * (bottom - top)
    groups = root.findall(".//s:g[@class='series-group']", NS)
    colours = [g.find("s:polyline", NS).get("stroke") for g in groups]
    shapes = [
        (g.find("*[@class='point']", NS).tag, g.find("*[@class='point']", NS).get("stroke-width"))
        for g in groups
    ]
    assert len(set(colours)) == len(set(shapes)) == len(groups) == 3
    assert set(colours) <= set(svg.SERIES_COLOURS)
    assert {c.lower() for c in svg.SERIES_COLOURS} <= OKABE_ITO
    keys = root.findall(".//s:g[@class='series-key']", NS)
    assert [k.find("s:text", NS).text for k in keys] == [
        "Milestone c",
        "Milestone b",
        "Milestone a ✓",
    ]  # in the order their lines end, top to bottom


OKABE_ITO = {"#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000"}


def test_pages_are_semantic_and_say_health_in_words():
    v = view()
    html = pages.gantt_page(v, svg.gantt_svg(v, link="/ui/projects/p"))
    assert html.startswith("<!doctype html>") and '<html lang="en">' in html
    assert '<main id="main" data-live="/ui/live?project_id=p">' in html and "<script>" in html
    assert 'aria-label="Gantt chart"' in html and '<th scope="col">Health and reasons</th>' in html
    assert re.search(r'class="health health-late"[^>]*>late</span>', html)
    assert 'href="/ui/projects/p/gantt.svg?baseline=v1" download' in html
    assert 'label for="as_of"' in html and 'href="/ui/projects/p/milestones/c"' in html
    then = pages.gantt_page(view(as_of=D("2026-01-20")), "")
    assert "data-live" not in then and "<script>" not in then  # time travel is a still picture


def test_five_hundred_milestones_stay_readable():
    script = [("2026-01-05", ProjectCreated(project_id="p", name="Big"))]
    script += [
        (
            "2026-01-05",
            planned(
                f"m{n:03d}",
                n,
                (D("2026-02-01") + dt.timedelta(days=n % 300)).isoformat(),
                f"Phase {n // 50}",
            ),
        )
        for n in range(500)
    ]
    script += [
        (
            "2026-01-06",
            DependencyAdded(project_id="p", milestone_id=f"m{n:03d}", depends_on=f"m{n - 1:03d}"),
        )
        for n in range(1, 500, 7)
    ]
    events = [(n + 1, stored(day, e)) for n, (day, e) in enumerate(script)]
    v = model.project_view("p", events, today=TODAY)
    root = parse(svg.gantt_svg(v))
    rows = root.findall(".//s:g[@class='milestone-row']", NS)
    assert len(rows) == 500 and len(root.findall(".//s:g[@class='phase-row']", NS)) == 10
    ys = [float(r.find("s:rect[@class='hit']", NS).get("y")) for r in rows]
    assert all(b - a >= svg.ROW_H for a, b in zip(ys, ys[1:], strict=False))  # rows never overlap
    assert len(root.findall(".//s:path[@class='arrow'][@data-from]", NS)) == len(range(1, 500, 7))
    html = pages.gantt_page(v, svg.gantt_svg(v, link="/ui/projects/p"))
    assert html.count('<tr id="m-') == 500


def test_the_gantt_draws_floats_forecasts_and_the_critical_chain_and_the_trend_its_forecasts():
    """A pace of one task a day (one completed each day of the six weeks before today), so an
    open milestone's forecast is today plus its work ahead: q (3 open, due 03-20) 03-13, r (2 more
    behind q, due 03-31, 1 day after q) 03-15. Both fit their due dates, so their early finishes
    are their expected finishes (03-20, 03-31). No target: the finish is r's due date 03-31: r's
    float is 0 and q's 03-30 - 03-20 = 10; r alone is critical."""
    from events import TaskCompleted

    script = [
        ("2026-01-20", ProjectCreated(project_id="p", name="Paced")),
        ("2026-01-20", planned("done", 1, "2026-03-09", "Build")),
        ("2026-01-20", planned("q", 2, "2026-03-20", "Build")),
        ("2026-01-20", planned("r", 3, "2026-03-31", "Build")),
        (
            "2026-01-20",
            DependencyAdded(project_id="p", milestone_id="r", depends_on="q", lag_days=1),
        ),
    ]
    tasks = {"done": 42, "q": 3, "r": 2}
    for mid, n in tasks.items():
        script += [
            ("2026-01-20", TaskAdded(project_id="p", milestone_id=mid, task_id=f"t{i}", title="T"))
            for i in range(n)
        ]
    for i in range(42):  # one a day, 01-28 .. 03-10
        day = (D("2026-01-28") + dt.timedelta(days=i)).isoformat()
        script.append((day, TaskCompleted(project_id="p", milestone_id="done", task_id=f"t{i}")))
    script.append(("2026-03-10", MilestoneAchieved(project_id="p", milestone_id="done")))
    events = [(n, stored(d, e)) for n, (d, e) in enumerate(script, 1)]
    view = model.project_view("p", events, today=TODAY)
    rows = {r.milestone_id: r for r in view.rows}
    assert (rows["q"].forecast, rows["r"].forecast) == (D("2026-03-13"), D("2026-03-15"))
    assert (rows["q"].float_days, rows["r"].float_days) == (10, 0)
    root = parse(svg.gantt_svg(view))
    forecast = {
        g.get("data-milestone"): g.get("data-date")
        for g in root.findall(".//s:g[@class='forecast']", NS)
        if g.get("data-milestone")  # the legend's swatch has none
    }
    assert forecast == {"q": "2026-03-13", "r": "2026-03-15"}  # none for the achieved one
    floats = {
        r.get("data-milestone"): r.get("data-float")
        for r in root.findall(".//s:rect[@class='float']", NS)
        if r.get("data-milestone")  # the legend's swatch has none
    }
    assert floats == {"q": "10", "r": "0"}
    critical = root.findall(".//s:g[@class='milestone-row'][@data-critical='true']", NS)
    assert [g.get("data-milestone") for g in critical] == ["r"]

    trend = reporting.trend("p", events, today=TODAY)
    assert "forecast-line" not in svg.trend_svg(trend)
    drawn = parse(svg.trend_svg(trend, forecasts=True))
    lines = drawn.findall(".//s:polyline[@class='forecast-line']", NS)
    # "done" too: it had forecasts on the report dates before it was achieved
    assert {p.get("data-milestone") for p in lines} == {"done", "q", "r"}
