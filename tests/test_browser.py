"""End to end in a real headless browser (Debian's chromium through Playwright): the dashboard
asks for a token once (the sign-in form) and keeps a session, every dashboard page loads the demo
project with no console errors, a screenshot of each is written to a temporary folder, keyboard
focus works, the SVG downloads are SVG, and an open page follows new events without a reload."""

from __future__ import annotations

import asyncio
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from services.app.demo import PROJECT, demo_events, submit
from services.app.embedded import free_port
from services.app.http import build_http_app
from services.app.wiring import serve_http
from tests.conftest import TEST_TOKENS, TODAY, MemoryAuthenticator, caught_up, cloudevent, request


def browser_path() -> str | None:
    return (
        os.environ.get("MILESTONES_BROWSER")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


pytestmark = pytest.mark.skipif(
    browser_path() is None,
    reason=(
        "no browser: install Debian's chromium (apt-get install chromium; .ci/run does) "
        "or set MILESTONES_BROWSER"
    ),
)


@pytest.fixture
async def site(system, db_url):
    last = 0
    for body in demo_events(TODAY):
        reply = await submit(system.intake, body)  # a sign-off as its approver
        assert reply.accepted, reply
        last = max([last, *(e.position for e in reply.events)])
    await caught_up(db_url, last)
    port = free_port()
    stop = asyncio.Event()
    app = build_http_app(
        system.intake,
        max_body=256 * 1024,
        authenticator=MemoryAuthenticator(),
        extra_handlers=system.http_handlers,
    )
    server = asyncio.create_task(serve_http(app, "127.0.0.1", port, stop, system.closing))
    yield f"http://127.0.0.1:{port}"
    stop.set()
    await server


@pytest.fixture
async def chromium():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=browser_path(), args=["--no-sandbox"])
        yield b
        await b.close()


async def sign_in(context, site: str, token: str, path: str = "/ui"):
    """Open ``path`` as a browser does: sent to the sign-in form, type the token, sent back."""
    page = await context.new_page()
    await page.goto(site + path)
    assert "/ui/login?next=" in page.url
    await page.fill("#token", token)
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    return page


@pytest.fixture
async def browser(chromium, site):
    """A browser signed in to the dashboard as an auditor (the audit page needs one)."""
    context = await chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = await sign_in(context, site, TEST_TOKENS["auditor"])
    assert page.url == f"{site}/ui"
    await page.close()
    yield context
    await context.close()


async def test_the_dashboard_asks_for_a_token_once_and_signs_out(site, chromium):
    context = await chromium.new_context()
    wrong = await sign_in(context, site, "not-a-token", f"/ui/projects/{PROJECT}")
    assert "unknown, revoked or expired" in await wrong.inner_text("[role=alert]")
    await wrong.fill("#token", TEST_TOKENS["reader"])
    async with wrong.expect_navigation():
        await wrong.click("button[type=submit]")
    assert wrong.url == f"{site}/ui/projects/{PROJECT}"  # back where it was going
    cookie = next(c for c in await context.cookies() if c["name"] == "milestones_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TEST_TOKENS["reader"] not in cookie["value"]
    assert await wrong.evaluate("document.cookie") == ""  # no script can read the session
    await wrong.click("text=Sign out")
    async with wrong.expect_navigation():
        await wrong.click("button[type=submit]")
    assert "/ui/login" in wrong.url
    await wrong.goto(f"{site}/ui")
    assert "/ui/login?next=" in wrong.url
    await context.close()


async def open_page(browser, url: str, problems: list[str]):
    page = await browser.new_page()
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    response = await page.goto(url)
    assert response is not None and response.status == 200, url
    return page


async def test_every_page_loads_the_demo_project_without_console_errors(
    site, browser, tmp_path: Path
):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    pages = {
        "projects": ("/ui", "Atlas 2.0 release"),
        "gantt": (f"/ui/projects/{PROJECT}", "Design frozen"),
        "gantt-as-of": (
            f"/ui/projects/{PROJECT}?as_of={TODAY.replace(day=1).isoformat()}",
            "Design frozen",
        ),
        "trend": (f"/ui/projects/{PROJECT}/trend", "milestone trend analysis"),
        "report": (f"/ui/projects/{PROJECT}/report", "On-time rate"),
        "milestone": (
            f"/ui/projects/{PROJECT}/milestones/design",
            "UX review found accessibility gaps",
        ),
        "audit": (f"/ui/audit?project_id={PROJECT}", "Audit trail"),
    }
    problems: list[str] = []
    for name, (path, text) in pages.items():
        page = await open_page(browser, site + path, problems)
        assert text in await page.inner_text("main"), f"{name}: {text!r} not shown"
        await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        await page.close()
    assert problems == []
    assert sorted(p.name for p in shots.iterdir()) == sorted(f"{n}.png" for n in pages)
    assert all(p.stat().st_size > 10_000 for p in shots.iterdir())


async def test_charts_are_drawn_keyboard_works_and_svgs_download(site, browser):
    problems: list[str] = []
    page = await open_page(browser, f"{site}/ui/projects/{PROJECT}", problems)
    # the demo's ten milestones and its Go/No-Go gate
    assert await page.locator("svg.gantt rect.bar[data-milestone]").count() == 11
    assert await page.locator("svg.gantt path.arrow[data-from]").count() == 9
    assert await page.locator("svg.gantt g.today-mark").count() == 1
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Projects"
    gantt = await page.request.get(f"{site}/ui/projects/{PROJECT}/gantt.svg")
    assert gantt.headers["content-type"].startswith("image/svg+xml")
    assert "attachment" in gantt.headers["content-disposition"]
    assert ET.fromstring(await gantt.text()).tag == "{http://www.w3.org/2000/svg}svg"
    trend = await page.request.get(f"{site}/ui/projects/{PROJECT}/trend.svg")
    assert ET.fromstring(await trend.text()).findall(".//{http://www.w3.org/2000/svg}polyline")
    assert problems == []


async def test_an_open_page_follows_new_events_without_a_reload(site, browser, nc):
    problems: list[str] = []
    page = await open_page(browser, f"{site}/ui/projects/{PROJECT}", problems)
    await page.wait_for_function(
        "document.getElementById('live-status').textContent === 'live'", timeout=10_000
    )
    assert "16%" in await page.inner_text("#m-build")  # 1 of its 6 tasks
    await page.evaluate("window.__marker = 'same page'")  # gone if the page reloaded
    reply = await request(
        nc,
        cloudevent(
            "TaskCompleted", {"project_id": PROJECT, "milestone_id": "build", "task_id": "billing"}
        ),
    )
    assert reply.accepted
    await page.wait_for_function(
        "document.querySelector('#m-build').innerText.includes('33%')", timeout=15_000
    )
    assert await page.evaluate("window.__marker") == "same page"
    assert (await page.inner_text("#live-status")).startswith("updated")
    assert problems == []
