"""Every dashboard page, in a real browser 1,024 and 1,440 px wide with the clock pinned, measured
from the DOM (getBoundingClientRect, getPointAtLength): geometry, not pixels, so a font update
does not fail it and a broken layout does.

On every page: nothing makes the page scroll sideways, and no date in a table or in running text
wraps. On the chart pages (Gantt, trend): the controls stand on one line above the chart, the
chart starts in the upper half of the window and fits its width, every mark and word lies inside
the chart, no word overlaps another word or a line (dependency arrows, the today line, the
trend's series and diagonal)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from services.app.demo import PROJECT
from tests import test_browser
from tests.conftest import TEST_TOKENS, TODAY

pytestmark = test_browser.pytestmark

site = test_browser.site
chromium = test_browser.chromium

WIDTHS = {1024: 768, 1440: 900}
PAGES = {
    "projects": "/ui",
    "gantt": f"/ui/projects/{PROJECT}",
    "gantt-as-of": f"/ui/projects/{PROJECT}?as_of={TODAY.replace(day=1).isoformat()}",
    "trend": f"/ui/projects/{PROJECT}/trend",
    "report": f"/ui/projects/{PROJECT}/report",
    "milestone": f"/ui/projects/{PROJECT}/milestones/design",
    "audit": f"/ui/audit?project_id={PROJECT}",
}
CHART_PAGES = {"gantt", "gantt-as-of", "trend"}

# What the page measures of itself: boxes in CSS pixels of the viewport.
MEASURE = """() => {
  const box = e => { const r = e.getBoundingClientRect();
    return {x0: r.left, y0: r.top, x1: r.right, y1: r.bottom}; };
  const out = {width: document.documentElement.clientWidth, height: innerHeight,
               scrollWidth: document.documentElement.scrollWidth,
               charts: [], words: [], lines: [], marks: [], dates: [], controls: null};
  for (const svg of document.querySelectorAll('main svg')) {
    const chart = svg.getAttribute('class');
    out.charts.push({chart, ...box(svg)});
    for (const t of svg.querySelectorAll('text')) {
      const b = box(t);
      if (b.x1 > b.x0) out.words.push({chart, text: t.textContent, ...b});
    }
    for (const m of svg.querySelectorAll('[data-x], .point')) out.marks.push({chart, ...box(m)});
    const lines = 'line:not(.grid):not(.month), polyline, path.arrow';
    for (const el of svg.querySelectorAll(lines)) {
      const m = el.getScreenCTM(), n = el.getTotalLength(), points = [];
      for (let d = 0; d <= n; d += 1) {
        const p = el.getPointAtLength(d);
        points.push([m.a * p.x + m.c * p.y + m.e, m.b * p.x + m.d * p.y + m.f]);
      }
      const what = el.getAttribute('class') || el.tagName;
      out.lines.push({chart, what: what + ' ' + (el.dataset.milestone || el.dataset.from || ''),
                      points});
    }
  }
  const dated = /^\\d{4}-\\d{2}-\\d{2}(T[\\d:]+)?$/;
  for (const el of document.querySelectorAll('main td, main th, main time')) {
    const text = el.textContent.trim();
    if (!el.matches('.date, time') && !dated.test(text)) continue;
    const range = document.createRange();
    range.selectNodeContents(el);
    const rects = [...range.getClientRects()].filter(r => r.width > 0);
    out.dates.push({text, lines: new Set(rects.map(r => Math.round(r.top))).size});
  }
  const form = document.querySelector('main form.controls');
  if (form) out.controls = [...form.children]
    .filter(c => c.getClientRects().length && c.getBoundingClientRect().width > 0)
    .map(c => box(c));
  return out;
}"""


def overlap(a: dict, b: dict, slack: float = 1.0) -> bool:
    return (
        min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]) > slack
        and min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]) > slack
    )


def inside(point: list[float], b: dict, slack: float = 1.0) -> bool:
    x, y = point
    return b["x0"] + slack < x < b["x1"] - slack and b["y0"] + slack < y < b["y1"] - slack


def problems(name: str, m: dict) -> list[str]:
    """Everything wrong with a page's measurements, in words (empty when the layout holds)."""
    out = []
    if m["scrollWidth"] > m["width"]:
        out.append(f"{name}: the page scrolls sideways ({m['scrollWidth']} > {m['width']} px)")
    out += [f"{name}: date {d['text']!r} wraps" for d in m["dates"] if d["lines"] != 1]
    for c in m["charts"]:
        if c["x0"] < 0 or c["x1"] > m["width"]:
            out.append(
                f"{name}: the {c['chart']} chart spans {c['x0']:.0f}..{c['x1']:.0f} px, "
                "wider than the window"
            )
    out += chart_problems(name, m)
    return out


def chart_problems(name: str, m: dict) -> list[str]:
    charts = {c["chart"]: c for c in m["charts"]}
    out = []
    for w in m["words"]:
        if not _within(w, charts[w["chart"]]):
            out.append(f"{name}: {w['text']!r} is cut off by the {w['chart']} chart's edge")
    out += [
        f"{name}: a mark of the {k['chart']} chart lies outside it"
        for k in m["marks"]
        if not _within(k, charts[k["chart"]])
    ]
    words = m["words"]
    for i, a in enumerate(words):
        out += [
            f"{name}: {a['text']!r} overlaps {b['text']!r}"
            for b in words[i + 1 :]
            if a["chart"] == b["chart"] and overlap(a, b)
        ]
        out += [
            f"{name}: {line['what']} runs through {a['text']!r}"
            for line in m["lines"]
            if line["chart"] == a["chart"] and any(inside(p, a) for p in line["points"])
        ]
    return out


def _within(b: dict, frame: dict, slack: float = 1.0) -> bool:
    return (
        b["x0"] >= frame["x0"] - slack
        and b["x1"] <= frame["x1"] + slack
        and b["y0"] >= frame["y0"] - slack
        and b["y1"] <= frame["y1"] + slack
    )


def chart_page_problems(name: str, m: dict) -> list[str]:
    """A chart page: one chart, the controls on one line above it, the chart near the top."""
    if len(m["charts"]) != 1 or not m["controls"]:
        return [f"{name}: {len(m['charts'])} charts, controls {m['controls']}"]
    chart, controls = m["charts"][0], m["controls"]
    out = []
    tallest = max(c["y1"] - c["y0"] for c in controls)
    if max(c["y1"] for c in controls) - min(c["y0"] for c in controls) > tallest + 2:
        out.append(f"{name}: the controls take more than one line")
    if max(c["y1"] for c in controls) > chart["y0"]:
        out.append(f"{name}: the controls are not above the chart")
    if chart["y0"] > m["height"] / 2:
        out.append(f"{name}: the chart starts at {chart['y0']:.0f} px, below the window's middle")
    return out


@pytest.fixture
async def signed_in(chromium, site):
    """A signed-in session (an auditor: the audit page needs one), to open at any width."""
    context = await chromium.new_context()
    page = await test_browser.sign_in(context, site, TEST_TOKENS["auditor"])
    state = await context.storage_state()
    await page.close()
    await context.close()
    return state


async def open_at(chromium, state, width: int):
    context = await chromium.new_context(
        viewport={"width": width, "height": WIDTHS[width]}, storage_state=state
    )
    # the server renders "today" from its own pinned clock; the browser's is pinned as well
    noon = dt.datetime.combine(TODAY, dt.time(12), dt.UTC)
    await context.clock.set_fixed_time(noon)
    return context


async def measure(context, url: str, shot: Path | None = None) -> dict:
    page = await context.new_page()
    response = await page.goto(url)
    assert response is not None and response.status == 200, url
    await page.evaluate("document.fonts.ready")
    if shot:
        await page.screenshot(path=str(shot), full_page=True)
    found = await page.evaluate(MEASURE)
    await page.close()
    return found


@pytest.mark.parametrize("width", sorted(WIDTHS))
async def test_every_page_holds_its_layout(site, chromium, signed_in, width, tmp_path: Path):
    context = await open_at(chromium, signed_in, width)
    found: list[str] = []
    for name, path in PAGES.items():
        m = await measure(context, site + path, tmp_path / f"{width}-{name}.png")
        found += problems(name, m)
        if name in CHART_PAGES:
            found += chart_page_problems(name, m)
            assert m["words"] and m["lines"] and m["marks"], name  # the checks had work to do
        if name == "gantt":
            assert len(m["dates"]) >= 30  # the table's due, expected and achieved cells
    await context.close()
    assert found == []


GANTT, TREND = PAGES["gantt"], PAGES["trend"]
BREAKS = {  # what a layout break looks like, and the page it is tried on
    "a fixed 1,300 px chart": (GANTT, "svg.gantt{width:1300px!important;max-width:none}"),
    "dates that wrap": (
        GANTT,
        ".date{white-space:normal!important;width:3em;display:inline-block}",
    ),
    "controls on two lines": (GANTT, "form.controls{flex-direction:column}"),
    "the chart below the fold": (GANTT, "figure.chart{margin-top:600px}"),
    "names cut off": (TREND, "text.series-label{transform:translate(200px,0)}"),
    "labels on a line": (TREND, "text.series-label{transform:translate(-300px,0)}"),
}


@pytest.mark.parametrize("broken", sorted(BREAKS))
async def test_the_checks_catch_a_broken_layout(site, chromium, signed_in, broken):
    path, css = BREAKS[broken]
    context = await open_at(chromium, signed_in, 1024)
    page = await context.new_page()
    await page.goto(site + path)
    assert problems("page", await page.evaluate(MEASURE)) == []
    await page.add_style_tag(content=css)
    m = await page.evaluate(MEASURE)
    assert problems("page", m) + chart_page_problems("page", m) != []
    await context.close()


async def test_a_word_moved_onto_an_arrow_is_caught(site, chromium, signed_in):
    context = await open_at(chromium, signed_in, 1024)
    page = await context.new_page()
    await page.goto(f"{site}/ui/projects/{PROJECT}")
    assert chart_problems("gantt", await page.evaluate(MEASURE)) == []
    # the health word of an arrow's successor, put where the arrow enters its row
    await page.evaluate("""() => {
      const arrow = document.querySelector('svg.gantt path.arrow[data-to]');
      const row = document.querySelector(
        `g.milestone-row[data-milestone="${arrow.dataset.to}"] text.health-word`);
      const end = arrow.getPointAtLength(arrow.getTotalLength() - 12);
      row.setAttribute('x', end.x - 10);
    }""")
    assert any("runs through" in p for p in chart_problems("gantt", await page.evaluate(MEASURE)))
    await context.close()


async def test_the_docs_page_renders_with_nothing_from_another_host(site, chromium, signed_in):
    context = await open_at(chromium, signed_in, 1024)
    page = await context.new_page()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    await page.goto(f"{site}/schema")
    await page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)
    assert await page.locator(".swagger-ui .opblock").count() > 5
    assert asked and [u for u in asked if not u.startswith(site)] == []
    await context.close()
