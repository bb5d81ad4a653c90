"""What the CLI writes: results on stdout, one-line errors and progress on stderr.

Tables and colour follow the terminal (``services.query.text.TERMINAL``): on a terminal its width
and colour (unless ``NO_COLOR``); piped or redirected, plain text (no escape codes) at the width
``COLUMNS`` says, else 100. Progress bars (rate and ETA) are drawn on stderr only when it is a
terminal; otherwise the command prints a one-line summary when it is done. ``COLUMNS``,
``NO_COLOR`` and ``TERM`` are the terminal's conventions, read here, not configuration.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from services.query.text import TERMINAL, Terminal

DEFAULT_WIDTH = 100
OnProgress = Callable[[int, int], None]


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def fail(message: str) -> None:
    """One line on stderr, always starting ``milestones:``."""
    sys.stderr.write(f"milestones: {' '.join(message.split())}\n")


def colour_terminal(stream: TextIO) -> bool:
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    return is_tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def terminal(stream: TextIO | None = None) -> Terminal:
    """How wide and whether in colour the text for ``stream`` (default stdout) is written."""
    stream = stream or sys.stdout
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        width = int(columns)
    elif hasattr(stream, "isatty") and stream.isatty():
        width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    else:
        width = DEFAULT_WIDTH
    return Terminal(width=width, color=colour_terminal(stream))


def use_terminal() -> None:
    """Tables from here on are made for stdout as it is."""
    TERMINAL.set(terminal())


@contextlib.contextmanager
def progress(label: str) -> Iterator[OnProgress | None]:
    """A progress bar with rate and ETA on stderr when it is a terminal, fed by the callback
    this yields (``on_progress(done_position, last_position)``); None when it is not a
    terminal, so the caller passes no callback and prints its summary line."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=sys.stderr, no_color="NO_COLOR" in os.environ)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = bar.add_task(label, total=None, rate="")

    def on_progress(done: int, last: int) -> None:
        speed = bar.tasks[0].speed
        bar.update(task, completed=done, total=max(last, 1), rate=rate_text(speed))

    with bar:
        yield on_progress


def rate_text(per_second: float | None) -> str:
    return "" if not per_second else f"{per_second:,.0f} events/s"
