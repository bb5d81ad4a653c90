"""What every dashboard page shares: the page shell, health badges, the time-travel form, the
project tabs, and error pages."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import urlencode

from services.dashboard.assets import CSS, LIVE_JS
from services.dashboard.marks import HEALTH_COLOURS, HEALTH_WORDS


def health_badge(health: str) -> str:
    colour = HEALTH_COLOURS.get(health, "#424242")
    return (
        f'<span class="health health-{escape(health)}" style="background:{colour}">'
        f"{escape(HEALTH_WORDS.get(health, health))}</span>"
    )


def page(
    title: str,
    body: str,
    *,
    live: str | None = None,
    crumbs: Iterable[tuple[str, str]] = (),
    signed_in: bool = True,
) -> str:
    trail = " › ".join(f'<a href="{escape(href)}">{escape(text)}</a>' for text, href in crumbs)
    main_attrs = f' data-live="{escape(live)}"' if live else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · Milestones</title><style>{CSS}</style>"
        # no favicon request before sign-in (it needs a credential like everything else)
        + ("" if signed_in else '<link rel="icon" href="data:,">')
        + "</head><body>"
        '<header><strong>Milestones</strong><nav aria-label="main">'
        + (
            '<a href="/ui">Projects</a><a href="/ui/audit">Audit</a><a href="/schema">API</a>'
            '<a href="/ui/logout">Sign out</a>'
            if signed_in
            else ""
        )
        + "</nav>"
        f'<span id="live-status" role="status" aria-live="polite">{"live" if live else ""}</span>'
        "</header>"
        f'<main id="main"{main_attrs}>'
        + (f'<p class="muted">{trail}</p>' if trail else "")
        + body
        + "</main>"
        + (f"<script>{LIVE_JS}</script>" if live else "")
        + "</body></html>"
    )


def error_page(status: int, message: str) -> str:
    return page(
        "Error",
        f'<h1>{status}</h1><p role="alert">{escape(message)}</p><p>'
        '<a href="/ui">All projects</a></p>',
    )


def query_string(params: Mapping[str, Any]) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return ("?" + urlencode(clean)) if clean else ""


def as_of_form(
    action: str,
    as_of: dt.date | None,
    extra: str = "",
    hidden: Mapping[str, Any] | None = None,
    *,
    after: str = "",
) -> str:
    """The time-travel form: one line of controls (``extra`` before the button, ``after`` at
    the end)."""
    hidden_inputs = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(str(v))}">'
        for k, v in (hidden or {}).items()
        if v not in (None, "")
    )
    value = as_of.isoformat() if as_of else ""
    return (
        f'<form class="controls" method="get" action="{escape(action)}" '
        f'aria-label="time travel">{hidden_inputs}'
        '<label for="as_of">As of (time travel)'
        f'<input id="as_of" type="date" name="as_of" value="{value}"></label>'
        f'{extra}<button type="submit">Show</button>'
        + (f' <a href="{escape(action)}">Back to now</a>' if as_of else "")
        + after
        + "</form>"
    )


def baseline_picker(baselines: Iterable[str], chosen: str | None) -> str:
    """The baseline a project page compares with (nothing when the project has none)."""
    options = "".join(
        f'<option value="{escape(b)}"{" selected" if b == chosen else ""}>{escape(b)}</option>'
        for b in baselines
    )
    if not options:
        return ""
    return (
        '<label for="baseline">Baseline'
        f'<select id="baseline" name="baseline">{options}</select></label>'
    )


def project_tabs(pid: str, as_of: dt.date | None, current: str) -> str:
    q = query_string({"as_of": as_of})
    tabs = [
        ("Gantt", f"/ui/projects/{pid}{q}"),
        ("Trend (MTA)", f"/ui/projects/{pid}/trend"),
        ("Report", f"/ui/projects/{pid}/report{q}"),
        ("Audit", f"/ui/audit?project_id={pid}"),
    ]
    return (
        '<nav class="tabs" aria-label="project views">'
        + "".join(
            f'<a href="{escape(href)}"'
            + (' aria-current="page"' if text == current else "")
            + f">{escape(text)}</a>"
            for text, href in tabs
        )
        + "</nav>"
    )


def login_page(next_url: str, csrf: str, message: str | None = None) -> str:
    """The one place a browser gives its token: it is exchanged for a session cookie at once."""
    alert = f'<p role="alert">{escape(message)}</p>' if message else ""
    return page(
        "Sign in",
        "<h1>Sign in</h1>" + alert + '<form method="post" action="/ui/login" aria-label="sign in">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        '<p><label for="token">Access token (reader, auditor or admin)<br>'
        '<input id="token" name="token" type="password" autocomplete="off" required size="60">'
        "</label></p>"
        '<p><button type="submit">Sign in</button></p></form>'
        '<p class="muted">Run <code>milestones credentials create --role reader</code>, or see '
        "<code>http_token</code> in <code>dev.json</code>. The token is asked for once; the "
        "session lasts until you sign out, it expires, or the credential is revoked.</p>",
        signed_in=False,
    )


def logout_page(principal_id: str, csrf: str) -> str:
    return page(
        "Sign out",
        "<h1>Sign out</h1>"
        f"<p>Signed in as <code>{escape(principal_id)}</code>.</p>"
        '<form method="post" action="/ui/logout" aria-label="sign out">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<button type="submit">Sign out</button></form>',
    )


def date_or_dash(d: dt.date | None) -> str:
    return d.isoformat() if d else "—"


def date_cell(d: dt.date | None) -> str:
    """A table cell holding a date (it never wraps)."""
    return f'<td class="date">{date_or_dash(d)}</td>'


def date_class(text: str) -> str:
    return ' class="date"' if DATE.match(text) else ""


DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def date_text(value: object) -> str:
    """A date in running text (it never wraps)."""
    text = escape(str(value))
    return f'<time datetime="{text}">{text}</time>'


def words_with_dates(text: str) -> str:
    """Escaped text whose dates never break at their hyphens."""
    return DATE.sub(lambda m: date_text(m.group(0)), escape(text))


def wrap(table: str) -> str:
    """A wide table scrolls sideways in its own box, not the page."""
    return f'<div class="table-wrap">{table}</div>'
