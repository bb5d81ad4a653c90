"""Spreadsheets: the CSV exports (a project's milestones, the report's milestone lines, the audit
trail). One row a record, a header of the JSON's field names, each cell as the JSON answer
writes it, and no cell a spreadsheet would run as a formula.

Formula injection (CSV injection): a spreadsheet runs a cell that starts with ``=``, ``+``,
``-`` or ``@`` as a formula (``=HYPERLINK(...)``, ``=cmd|...``), and one that starts with a
tab or a carriage return after it strips them. OWASP's recommendation
(owasp.org/www-community/attacks/CSV_Injection) is followed: such a text cell gets a single quote
first, which spreadsheets show as text and do not evaluate. Numbers are written as numbers (a
slip of ``-3`` stays ``-3``): they cannot hold a formula. Every text cell is also quoted
(``QUOTE_NONNUMERIC``), so a cell stays one cell when a spreadsheet splits on another separator
(``;`` in many locales) than the comma.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from events import ENCODER
from services.domain.reporting import MilestoneLine
from services.query import answers as a
from services.query import requests as q
from services.query.queries import Queries

# What a spreadsheet may run as a formula when a cell starts with it
FORMULA_FIRST = ("=", "+", "-", "@", "\t", "\r")

# The JSON item's fields, in the order the answer types declare them
MILESTONE_COLUMNS = tuple(a.Milestone.__struct_fields__)
REPORT_COLUMNS = tuple(MilestoneLine.__struct_fields__)


def neutralised(text: str) -> str:
    """``text``, with a single quote first when a spreadsheet would run it as a formula."""
    return "'" + text if text.startswith(FORMULA_FIRST) else text


def cell(value: Any) -> str | int | float:
    """One value as a CSV cell: empty for null, ``true``/``false``, a number as is, text
    neutralised; a date, time or nested value (object, list) as the JSON answer writes it
    (ISO 8601; compact JSON in one cell)."""
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: a bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else ""  # the JSON answer has null there
    if isinstance(value, str):
        return neutralised(value)
    encoded = ENCODER.encode(value)
    # a date or time encodes as a JSON string (shown without its quotes); an object or list as
    # JSON, which starts with { or [ (neutralised all the same: one rule for all text)
    quoted = encoded.startswith(b'"')
    return neutralised(msgspec.json.decode(encoded, type=str) if quoted else encoded.decode())


def writer_on(buffer: io.StringIO) -> Any:
    return csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n")


def as_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A whole table at once (tests, small answers)."""
    buffer = io.StringIO()
    writer = writer_on(buffer)
    writer.writerow(columns)
    writer.writerows([cell(row.get(c)) for c in columns] for row in rows)
    return buffer.getvalue()


async def csv_lines(
    rows: AsyncIterator[Mapping[str, Any]], columns: Sequence[str], every: int = 500
) -> AsyncIterator[bytes]:
    """A header, then the rows, sent ``every`` rows at a time."""
    buffer = io.StringIO()
    writer = writer_on(buffer)
    writer.writerow(columns)
    n = 0
    async for row in rows:
        writer.writerow([cell(row.get(c)) for c in columns])
        n += 1
        if n % every == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


async def each(rows: Iterable[Mapping[str, Any]]) -> AsyncIterator[Mapping[str, Any]]:
    for row in rows:
        yield row


# -- the exports (``Query.export``): every row, not a page ---------------------------------------
async def milestones_export(
    queries: Queries, p: q.MilestonesParams
) -> tuple[int, bool, AsyncIterator[Mapping[str, Any]]]:
    """Every milestone the filters match, in the page's order (a project's are bounded)."""
    position, stale, rows = await queries.matching_milestones(p)
    return position, stale, each(rows)


async def report_export(
    queries: Queries, p: q.ReportParams
) -> tuple[int, bool, AsyncIterator[Mapping[str, Any]]]:
    """The report's milestone lines (the project's figures are in the JSON answer). Compared
    with another point (compare_as_of, compare_position): the lines of now, as the JSON's
    ``now`` (a refusal would be a cross-parameter rule OpenAPI cannot state)."""
    answer = await queries.report(p)
    report = answer.data["now"] if isinstance(answer.data, dict) else answer.data
    lines = report.milestones
    return answer.position, answer.stale, each(msgspec.structs.asdict(line) for line in lines)
