"""Supervision and bounded shutdown for every service process.

``Supervisor`` runs the long-lived tasks the wiring starts (inbox consumer, scheduler, checkpoint
writer, accounts sync, notifier, projection runners, the ops listener): an exception, or a return
nobody asked for, is logged with its cause, counted, and followed by a restart with exponential
backoff capped at 5 s; each task's ``TaskState`` feeds ``/ready``.

``Shutdown`` is one stop request with a deadline. SIGTERM or SIGINT sets ``stop``; each step of
the shutdown (HTTP, tasks, connections, embedded servers) gets ``bounded``: a share of the time
left, after which it is abandoned rather than awaited, because the libraries underneath can wait
much longer than any budget (nats-py drains and flushes, asyncpg's pool waits for every
connection, uvicorn for open streams). A watchdog thread ends the process at the deadline if the
event loop itself cannot finish. ``run`` is ``asyncio.run`` with the same bounds on the leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Counter, Gauge

log = structlog.get_logger("milestones.supervise")

TASK_FAILURES = Counter(
    "milestones_task_failures_total",
    "Failures of a supervised task (each one is followed by a restart with backoff)",
    ["task"],
)
TASK_UP = Gauge(
    "milestones_task_up", "1 while a supervised task runs, 0 while it waits to restart", ["task"]
)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
HEALTHY_RUN = 30.0  # a run this long resets the backoff: the next failure is a new incident
SETTLE = 2.0  # a restarted task counts as ready once it has run this long again
FORCED_EXIT = 1  # the watchdog's exit code: the shutdown did not finish in time
REPEAT_WINDOW = 1.0  # a signal this soon after the first is the same request, delivered twice


@dataclass
class TaskState:
    name: str
    running: bool = False
    stopped: bool = False
    restarts: int = 0
    last_error: str | None = None
    started_at: float = 0.0  # time.monotonic()
    failed_at: float | None = None

    def ready(self, now: float) -> tuple[bool, str]:
        if self.stopped:
            return False, "stopped"
        if not self.running:
            return False, f"waiting to restart after: {self.last_error}"
        if self.failed_at is not None and now - self.started_at < SETTLE:
            return False, f"restarted {now - self.started_at:.1f}s ago after: {self.last_error}"
        if self.restarts:
            return True, f"running ({self.restarts} restarts; last: {self.last_error})"
        return True, "running"


TaskFactory = Callable[[asyncio.Event], Awaitable[object]]


class Supervisor:
    """Restarts its tasks until ``stop`` is set; ``shutdown`` ends them within a bound."""

    def __init__(self, stop: asyncio.Event | None = None) -> None:
        self.stop = stop if stop is not None else asyncio.Event()
        self.states: dict[str, TaskState] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    def start(self, name: str, run: TaskFactory) -> TaskState:
        """Run ``run(stop)`` under supervision; ``name`` labels its logs and metrics."""
        if name in self._tasks:
            raise ValueError(f"a task named {name} is already supervised")
        state = self.states[name] = TaskState(name)
        self._tasks[name] = asyncio.create_task(self._supervise(state, run), name=name)
        return state

    async def _supervise(self, state: TaskState, run: TaskFactory) -> None:
        backoff = BACKOFF_FIRST
        bound = log.bind(task=state.name)
        while not self.stop.is_set():
            state.running, state.started_at = True, time.monotonic()
            TASK_UP.labels(state.name).set(1)
            error: Exception | None = None
            try:
                await run(self.stop)
            except Exception as exc:  # any failure: a restart, never a silent death
                error = exc
            finally:
                state.running = False
                TASK_UP.labels(state.name).set(0)
            if self.stop.is_set():
                if error is not None:
                    bound.warning("task failed while stopping", error=_describe(error))
                break
            now = time.monotonic()
            if now - state.started_at >= HEALTHY_RUN:
                backoff = BACKOFF_FIRST
            reason = _describe(error) if error is not None else "ended without being asked to stop"
            state.restarts += 1
            state.last_error, state.failed_at = reason, now
            TASK_FAILURES.labels(state.name).inc()
            bound.error(
                "task failed, restarting",
                error=reason,
                cause=_cause(error),
                restarts=state.restarts,
                restart_in_s=round(backoff, 2),
                exc_info=error,
            )
            await sleep_or_stop(self.stop, backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        state.stopped = True

    async def shutdown(self, grace: float, cancel_wait: float = 1.0) -> list[str]:
        """Set ``stop``; wait ``grace`` seconds for the tasks, then cancel the rest and wait
        ``cancel_wait`` more. Returns the names of the tasks that still did not end."""
        self.stop.set()
        pending = {t for t in self._tasks.values() if not t.done()}
        if pending and grace > 0:
            _, pending = await asyncio.wait(pending, timeout=grace)
        if pending:
            log.warning(
                "tasks did not stop in time: cancelled",
                tasks=sorted(t.get_name() for t in pending),
                after_s=round(grace, 2),
            )
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=max(cancel_wait, 0.01))
        for task in self._tasks.values():
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("supervisor failed", task=task.get_name(), error=repr(task.exception()))
        return sorted(t.get_name() for t in pending)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cause(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    cause = exc.__cause__ or exc.__context__
    return _describe(cause) if cause is not None else None


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# == shutdown =====================================================================================
class Shutdown:
    """The process's one stop request and its deadline (``timeout`` seconds after the signal).

    ``stop`` is set on the first SIGTERM/SIGINT (or ``begin``); a second signal ends the process
    at once. Before ``serving()`` is called a signal cancels the main task, since start-up steps
    (connecting, migrating) do not watch ``stop``."""

    RESERVE = 1.0  # seconds the steps leave for the interpreter's own exit

    def __init__(self, timeout: float, stop: asyncio.Event | None = None) -> None:
        self.timeout = float(timeout)
        self.stop = stop if stop is not None else asyncio.Event()
        self.deadline: float | None = None  # time.monotonic()
        self.reason: str | None = None
        self.signal: str | None = None  # the signal that asked for the stop, if one did
        self._signalled_at = 0.0
        self._serving = False
        self._main: asyncio.Task | None = None
        self._force: list[Callable[[], None]] = []
        self._owns_process = False  # set by ``install``: only then may the watchdog end it
        self.reserve = self.RESERVE  # ``milestones dev`` keeps more back for its own servers
        self.abandoned: list[str] = []  # steps that ran out of time: the stop was not clean

    # -- starting the stop ------------------------------------------------------------------------
    def install(self, main: asyncio.Task | None = None) -> None:
        """Handle SIGTERM and SIGINT on the running loop; ``main`` is cancelled when a signal
        arrives during start-up or the deadline passes."""
        self._main, self._owns_process = main, True
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.signal is not None:
            # the same stop delivered twice (``uv run`` forwards it, a supervisor signals the
            # whole group) is not a second request; Ctrl-C pressed again later is
            if time.monotonic() - self._signalled_at < REPEAT_WINDOW:
                return
            log.warning("second signal: exiting now", signal=sig.name)
            self._force_exit(128 + sig.value)
        self.signal, self._signalled_at = sig.name, time.monotonic()
        self.begin(sig.name)
        main = self._main
        if main is not None and not main.done():
            if not self._serving:
                main.cancel()  # start-up does not watch ``stop``
            # the steps are bounded; this is the backstop if one is not, or if a library
            # swallowed the cancellation above
            loop = asyncio.get_running_loop()
            loop.call_later(max(self.remaining(self.RESERVE / 2), 0), _cancel, main)

    def begin(self, reason: str = "requested") -> None:
        """Start stopping (idempotent): sets ``stop`` and the deadline, arms the watchdog."""
        if self.deadline is not None:
            return
        self.reason = reason
        self.deadline = time.monotonic() + self.timeout
        self.stop.set()
        log.info("stopping", reason=reason, within_s=self.timeout)
        if self._owns_process:
            # a daemon thread: it outlives a loop that cannot finish, and an interpreter that
            # waits at exit for a worker thread stuck in a blocking call
            threading.Thread(target=self._watch, name="shutdown-watchdog", daemon=True).start()

    def serving(self) -> None:
        """Start-up is over: from now on a signal lets the services stop in order."""
        self._serving = True

    @property
    def requested(self) -> bool:
        return self.deadline is not None

    def remaining(self, reserve: float = 0.0) -> float:
        if self.deadline is None:
            return self.timeout - reserve
        return self.deadline - reserve - time.monotonic()

    # -- the steps --------------------------------------------------------------------------------
    async def bounded(self, name: str, step: Coroutine[Any, Any, object], cap: float) -> bool:
        """Run one shutdown step for at most ``cap`` seconds and never past the deadline; a step
        that takes longer is cancelled and *not* awaited further (it may ignore cancellation).
        True when it finished without error."""
        self.begin("the services are stopping")  # a step means a stop, signal or not
        budget = min(cap, self.remaining(self.reserve))
        if budget <= 0:
            step.close()
            self.abandoned.append(name)
            log.warning("shutdown step skipped: no time left", step=name)
            return False
        task = asyncio.ensure_future(step)
        done, _ = await asyncio.wait({task}, timeout=budget)
        if not done:
            task.cancel()
            task.add_done_callback(_retrieve)  # it may yet end in an error nobody awaits
            self.abandoned.append(name)
            log.warning(
                "shutdown step abandoned: took too long", step=name, after_s=round(budget, 2)
            )
            return False
        error = task.exception()
        if error is not None:
            log.warning("shutdown step failed", step=name, error=_describe(error))
            return False
        return True

    # -- the last resort --------------------------------------------------------------------------
    def on_force(self, callback: Callable[[], None]) -> None:
        """``callback`` runs (from the watchdog thread) before a forced exit: e.g. kill the
        servers ``milestones dev`` started, which would otherwise outlive it."""
        self._force.append(callback)

    def _watch(self) -> None:
        time.sleep(max(self.remaining(), 0.0))
        log.error("shutdown did not finish in time: exiting now", within_s=self.timeout)
        self._force_exit(FORCED_EXIT)

    def _force_exit(self, code: int) -> None:
        for callback in self._force:
            with contextlib.suppress(Exception):
                callback()
        os._exit(code)


class Closer:
    """What to close when the services stop, closed last-in first-out, each step bounded by
    ``Shutdown.bounded``; a step that fails or runs out of time gets its ``fallback`` (e.g. an
    asyncpg pool's ``terminate``) and the next step runs regardless."""

    def __init__(self, shutdown: Shutdown) -> None:
        self.shutdown = shutdown
        self._steps: list[tuple[str, Callable[[], Awaitable[object]], float, Fallback]] = []

    def push(
        self,
        name: str,
        close: Callable[[], Awaitable[object]],
        cap: float = 2.0,
        fallback: Fallback = None,
    ) -> None:
        self._steps.append((name, close, cap, fallback))

    async def aclose(self) -> None:
        while self._steps:
            name, close, cap, fallback = self._steps.pop()
            if await self.shutdown.bounded(name, _awaited(close), cap) or fallback is None:
                continue
            try:
                result = fallback()
                if asyncio.iscoroutine(result):
                    await self.shutdown.bounded(f"{name} (fallback)", result, 1.0)
            except Exception as exc:  # noqa: BLE001 - closing only: say so, go on
                log.warning("shutdown fallback failed", step=name, error=_describe(exc))


Fallback = Callable[[], object] | None


async def _awaited(close: Callable[[], Awaitable[object]]) -> object:
    return await close()


def _retrieve(task: asyncio.Future) -> None:
    """Read the outcome of a task nobody awaits any more: an error it ended in is logged once,
    not left for asyncio's "Task exception was never retrieved" at exit."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
        log.info("abandoned task ended in an error", task=name, error=_describe(error))


def _cancel(task: asyncio.Task) -> None:
    if not task.done():
        log.warning("shutdown deadline: cancelling what is left")
        task.cancel()


def run(main: Callable[[Shutdown], Coroutine[Any, Any, int]], timeout: float) -> int:
    """``asyncio.run`` for a service: signals start ``Shutdown``; leftover tasks are cancelled
    and awaited for at most a second (``asyncio.run`` would wait for them without end)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    shutdown = Shutdown(timeout)
    try:

        async def guarded() -> int:
            task = asyncio.create_task(main(shutdown), name="main")
            shutdown.install(task)
            try:
                return await task
            except asyncio.CancelledError:
                if shutdown.signal is None:
                    raise
                return 0  # a signal during start-up, or a stop that reached its deadline

        return loop.run_until_complete(guarded())
    finally:
        try:
            _finish(loop, shutdown)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _finish(loop: asyncio.AbstractEventLoop, shutdown: Shutdown) -> None:
    leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in leftover:
        task.cancel()
    wait = max(min(1.0, shutdown.remaining(Shutdown.RESERVE / 2)), 0.05)
    if leftover:
        loop.run_until_complete(asyncio.wait(leftover, timeout=wait))
    for task in leftover:
        if task.done():
            _retrieve(task)
        else:
            task.add_done_callback(_retrieve)
    stuck = [t.get_name() for t in leftover if not t.done()]
    if stuck:
        log.warning("tasks left running at exit", tasks=stuck)
    with contextlib.suppress(Exception):
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), wait))
