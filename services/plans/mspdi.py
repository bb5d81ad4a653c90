"""Read an MS Project XML plan (MSPDI) into a small typed model. Pure: bytes in, model out.

Parsed with ``defusedxml``: a DTD (and so any entity, the XML bomb's tool) or an external
reference is refused; so is a file over ``MAX_PLAN_BYTES``. Every problem is one ``PlanError``
with a message that says what to fix; nothing is guessed.
"""

from __future__ import annotations

import datetime as dt
import re
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree
import msgspec

NS = "http://schemas.microsoft.com/project"
MAX_PLAN_BYTES = 20 * 1024 * 1024  # MS Project files of ~10,000 tasks stay far below it
DEFAULT_MINUTES_PER_DAY = 480
# PredecessorLink Type
FF, FS, SF, SS = 0, 1, 2, 3
LINK_TYPES = {FF: "FF", FS: "FS", SF: "SF", SS: "SS"}
# LagFormat (MS Project's duration units): elapsed units count every minute of the calendar
ELAPSED_FORMATS = frozenset({4, 6, 8, 10, 12, 36, 38, 40, 42, 44})
PERCENT_FORMATS = frozenset({19, 20, 51, 52})
_DURATION = re.compile(
    r"^-?P(?:(\d+(?:\.\d+)?)Y)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


class PlanError(ValueError):
    """A file that cannot be imported: the message says why (one line)."""


class Link(msgspec.Struct, frozen=True, kw_only=True):
    predecessor_uid: int
    type: int = FS
    lag_tenths: int = 0  # LinkLag: tenths of a minute
    lag_format: int = 7  # days


class Baseline(msgspec.Struct, frozen=True, kw_only=True):
    number: int
    start: dt.datetime | None = None
    finish: dt.datetime | None = None


class Task(msgspec.Struct, frozen=True, kw_only=True):
    uid: int
    id: int | None = None
    name: str = ""
    outline_level: int = 0
    outline_number: str | None = None
    summary: bool = False
    milestone: bool = False
    start: dt.datetime | None = None
    finish: dt.datetime | None = None
    duration_minutes: float | None = None  # working minutes (Duration)
    actual_finish: dt.datetime | None = None
    links: tuple[Link, ...] = ()
    baselines: tuple[Baseline, ...] = ()
    extended: dict[int, str] = {}  # FieldID -> value


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    name: str | None = None
    minutes_per_day: int = DEFAULT_MINUTES_PER_DAY
    aliases: dict[int, str] = {}  # ExtendedAttribute FieldID -> Alias (custom field names)
    tasks: tuple[Task, ...] = ()

    def field_id(self, alias: str) -> int | None:
        wanted = alias.casefold()
        return next((f for f, a in self.aliases.items() if a.casefold() == wanted), None)


def parse(data: bytes) -> Plan:
    if len(data) > MAX_PLAN_BYTES:
        raise PlanError(
            f"the file is {len(data):,} bytes: plans up to {MAX_PLAN_BYTES:,} bytes are imported"
        )
    try:
        root = defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
    except defusedxml.DTDForbidden:
        raise PlanError(
            "the file declares a DTD (entities, possibly an XML bomb): MSPDI needs none; "
            "save it again from MS Project"
        ) from None
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden):
        raise PlanError("the file declares entities or external references: refused") from None
    except ParseError as exc:
        raise PlanError(f"not XML: {exc}") from None
    if root.tag != f"{{{NS}}}Project":
        raise PlanError(
            f"not an MS Project XML (MSPDI) file: the root element is {_local(root.tag)!r}, "
            f"expected Project in the namespace {NS}"
        )
    aliases: dict[int, str] = {}
    for attr in _all(root, "ExtendedAttributes", "ExtendedAttribute"):
        field, alias = _int(attr, "FieldID"), _text(attr, "Alias")
        if field is not None and alias:
            aliases[field] = alias
    minutes = _int(root, "MinutesPerDay") or DEFAULT_MINUTES_PER_DAY
    if minutes <= 0 or minutes > 1440:
        raise PlanError(f"MinutesPerDay is {minutes}: from 1 to 1440")
    tasks = tuple(_task(el) for el in _all(root, "Tasks", "Task"))
    uids = [t.uid for t in tasks]
    if len(set(uids)) != len(uids):
        dup = next(u for u in uids if uids.count(u) > 1)
        raise PlanError(f"task UID {dup} appears twice: UIDs identify tasks")
    return Plan(
        name=_text(root, "Title") or _text(root, "Name"),
        minutes_per_day=minutes,
        aliases=aliases,
        tasks=tasks,
    )


def _task(el: Element) -> Task:
    uid = _int(el, "UID")
    if uid is None:
        raise PlanError("a task has no UID")
    links = tuple(
        Link(
            predecessor_uid=_required_int(link, "PredecessorUID", uid),
            type=_int(link, "Type") if _int(link, "Type") is not None else FS,  # type: ignore[arg-type]
            lag_tenths=_int(link, "LinkLag") or 0,
            lag_format=_int(link, "LagFormat") or 7,
        )
        for link in el.findall(f"{{{NS}}}PredecessorLink")
    )
    for link in links:
        if link.type not in LINK_TYPES:
            raise PlanError(f"task UID {uid}: link Type {link.type} is not 0 (FF) to 3 (SS)")
    baselines = tuple(
        Baseline(
            number=_int(b, "Number") or 0,
            start=_time(b, "Start", uid),
            finish=_time(b, "Finish", uid),
        )
        for b in el.findall(f"{{{NS}}}Baseline")
    )
    extended = {
        field: _text(x, "Value") or ""
        for x in el.findall(f"{{{NS}}}ExtendedAttribute")
        if (field := _int(x, "FieldID")) is not None
    }
    return Task(
        uid=uid,
        id=_int(el, "ID"),
        name=_text(el, "Name") or "",
        outline_level=_int(el, "OutlineLevel") or 0,
        outline_number=_text(el, "OutlineNumber"),
        summary=_text(el, "Summary") == "1",
        milestone=_text(el, "Milestone") == "1",
        start=_time(el, "Start", uid),
        finish=_time(el, "Finish", uid),
        duration_minutes=_duration(el, "Duration", uid),
        actual_finish=_time(el, "ActualFinish", uid),
        links=links,
        baselines=baselines,
        extended=extended,
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _all(root: Element, parent: str, child: str) -> list[Element]:
    holder = root.find(f"{{{NS}}}{parent}")
    return [] if holder is None else holder.findall(f"{{{NS}}}{child}")


def _text(el: Element, name: str) -> str | None:
    child = el.find(f"{{{NS}}}{name}")
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _int(el: Element, name: str) -> int | None:
    text = _text(el, name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise PlanError(f"{name} is {text!r}: expected a whole number") from None


def _required_int(el: Element, name: str, uid: int) -> int:
    value = _int(el, name)
    if value is None:
        raise PlanError(f"task UID {uid}: a PredecessorLink has no {name}")
    return value


def _time(el: Element, name: str, uid: int) -> dt.datetime | None:
    text = _text(el, name)
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise PlanError(f"task UID {uid}: {name} is {text!r}, not a date and time") from None


def _duration(el: Element, name: str, uid: int) -> float | None:
    """An ISO 8601 duration (``PT16H0M0S``) in minutes; hours are working hours, as MSPDI
    writes them."""
    text = _text(el, name)
    if text is None:
        return None
    match = _DURATION.match(text)
    if match is None:
        raise PlanError(f"task UID {uid}: {name} is {text!r}, not an ISO 8601 duration")
    years, months, days, hours, minutes, seconds = (float(g or 0) for g in match.groups())
    if years or months or days:
        raise PlanError(f"task UID {uid}: {name} {text!r} counts days or more: write hours")
    total = hours * 60 + minutes + seconds / 60
    return -total if text.startswith("-") else total
