"""Progress lines for long jobs: what is being done, its rate, and ETAs for the stage and job.

A job is a sequence of stages (which may nest: the innermost open one is reported, with the
nearest enclosing one that has an ETA while the innermost has none).
`stage(name, total, unit)` opens one in the active job (a context manager); its work
reports how far it got with `Stage.update(done)` from Python, or with `tick(done)` from
inside jitted code (a `jax.debug.callback`, so a `lax.scan` over
optimizer steps or a `lax.map` over objectives reports as it runs). While a job is active a
heartbeat thread logs the open stage every `interval` seconds (default 8, so that no 10 s
pass without a line): done/total, rate, the stage's ETA and the job's, also while XLA
compiles and nothing else can report.

Stages run in `scope(prefix)` are labelled `prefix / name`; plans use the labels.
The job's ETA comes from a plan, {stage label: weight}, given when the job starts: the
remaining planned weight times the seconds per unit of weight the finished stages took
(stages outside the plan add nothing). With no plan, or before any planned stage has
finished, only the stage's own ETA is given. `Job.summary()` is the time per stage, the
time XLA spent compiling and the process's peak memory.

Library code opens stages without knowing whether a job is active: with none, `stage`
runs its body with an inert Stage, and `tick` does nothing, so nothing is printed and no
thread runs unless a binary (or a user) opened a `job`.
"""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from collections.abc import Callable, Mapping

import jax
import numpy as np
from absl import logging

INTERVAL = 8.0
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Stage:
    """One stage of a job: `total` units of work (None: unknown), `done` so far."""

    def __init__(self, name: str, total: float | None, unit: str, clock: Callable[[], float]):
        self.name, self.total, self.unit = name, total, unit
        self.done = 0.0
        self._clock = clock
        self.started = clock()

    def update(self, done) -> None:
        """Records that `done` units are finished (the largest value reported counts). A
        callback's `done` is a jax.Array: read on the host, since `np.max` of it would
        dispatch a JAX reduction from the callback's thread."""
        self.done = max(self.done, float(np.max(np.asarray(done))))

    def elapsed(self) -> float:
        return self._clock() - self.started

    def remaining(self) -> float | None:
        """Seconds left at the rate so far (None before any unit is done or without total)."""
        if self.total is None or self.done <= 0:
            return None
        return self.elapsed() * max(self.total - self.done, 0.0) / self.done

    def describe(self) -> str:
        elapsed = self.elapsed()
        if self.total is None:
            return f"{self.name}: {_duration(elapsed)} so far"
        rate = self.done / elapsed if elapsed > 0 else 0.0
        remaining = self.remaining()
        eta = "ETA unknown" if remaining is None else f"ETA {_duration(remaining)}"
        return (f"{self.name}: {self.done:.0f}/{self.total:.0f} {self.unit} "
                f"({rate:.3g} {self.unit}/s), {eta}")


class Job:
    """Stages run one after another, with a plan for the job's ETA (module docstring)."""

    def __init__(self, name: str, plan: Mapping[str, float] | None = None, *,
                 interval: float = INTERVAL, log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.plan = dict(plan or {})
        self.interval = interval
        self._log = log or (lambda line: logging.info("%s", line))
        self._clock = clock
        self.started = clock()
        self.open_stages: list[Stage] = []  # outermost first
        self.times: dict[str, float] = {}
        self.compile_seconds, self.compiles = 0.0, 0
        self._lock = threading.Lock()

    def on_event(self, event: str, seconds: float, **kwargs) -> None:
        """A `jax.monitoring` duration listener: counts XLA compilations and their time."""
        del kwargs
        if event == COMPILE_EVENT:
            self.compile_seconds += seconds
            self.compiles += 1

    @property
    def current(self) -> Stage | None:
        """The innermost open stage."""
        return self.open_stages[-1] if self.open_stages else None

    def job_remaining(self) -> float | None:
        """Seconds left in the job (module docstring), or None when it cannot be estimated."""
        finished = [name for name in self.times if name in self.plan]
        if not finished:
            return None
        per_weight = sum(self.times[name] for name in finished) / max(
            sum(self.plan[name] for name in finished), 1e-12)
        running = [stage for stage in self.open_stages if stage.name in self.plan]
        names = {stage.name for stage in running}
        remaining = per_weight * sum(weight for name, weight in self.plan.items()
                                     if name not in self.times and name not in names)
        if running:  # the innermost planned stage stands for the open ones
            stage = running[-1]
            own = stage.remaining()
            remaining += own if own is not None else max(
                per_weight * self.plan[stage.name] - stage.elapsed(), 0.0)
        return remaining

    def line(self) -> str:
        """The progress line of the open stage and the job; when the open stage cannot yet
        estimate its ETA, also the nearest enclosing stage that can."""
        with self._lock:
            current = self.current
            stage = current.describe() if current is not None else "between stages"
            if current is not None and current.remaining() is None:
                enclosing = [outer for outer in self.open_stages[:-1]
                             if outer.remaining() is not None]
                if enclosing:
                    stage += f" (in {enclosing[-1].describe()})"
            remaining = self.job_remaining()
        job = "" if remaining is None else f"; job ETA {_duration(remaining)}"
        return (f"[{self.name} {_duration(self._clock() - self.started)}] {stage}{job}")

    def report(self) -> None:
        self._log(self.line())

    def open(self, name: str, total: float | None, unit: str) -> Stage:
        stage = Stage(name, total, unit, self._clock)
        with self._lock:
            self.open_stages.append(stage)
        self._log(f"[{self.name} {_duration(self._clock() - self.started)}] {name}: started")
        return stage

    def close(self, stage: Stage) -> None:
        seconds = stage.elapsed()
        with self._lock:
            self.times[stage.name] = self.times.get(stage.name, 0.0) + seconds
            self.open_stages.remove(stage)
            remaining = self.job_remaining()
        job = "" if remaining is None else f"; job ETA {_duration(remaining)}"
        self._log(f"[{self.name} {_duration(self._clock() - self.started)}] {stage.name}: "
                  f"done in {seconds:.1f}s{job}")

    def summary(self) -> str:
        """Time per stage, in the order they ran, the total, and the process's peak resident
        memory so far (`resource.getrusage`, kilobytes on Linux)."""
        lines = [f"{name}: {seconds:.1f}s" for name, seconds in self.times.items()]
        total = self._clock() - self.started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        return "\n".join([f"{self.name}: time per stage", *lines, f"total: {total:.1f}s, of "
                          f"which XLA compiled {self.compiles} programs in "
                          f"{self.compile_seconds:.1f}s; peak memory {peak:.1f} GB"])


_active: list[Job] = []
_scopes: list[str] = []


@contextlib.contextmanager
def scope(prefix: str):
    """Labels the stages opened in the body `PREFIX / NAME` (nested scopes join), so that the
    same stages run for several parts of a job (e.g. one GPS training per experiment) keep
    distinct names in the plan and the summary."""
    _scopes.append(prefix)
    try:
        yield
    finally:
        _scopes.pop()


def label_in(*parts: str) -> str:
    """The label of stage `parts[-1]` in scopes `parts[:-1]`."""
    return " / ".join(parts)


def label(name: str) -> str:
    """`name` as `stage` labels it in the current scopes."""
    return label_in(*_scopes, name)


@contextlib.contextmanager
def job(name: str, plan: Mapping[str, float] | None = None, *, interval: float = INTERVAL,
        log: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
    """Makes a Job the active one for the body and runs its heartbeat thread; on exit logs
    `Job.summary()`. Nested calls keep the outer job active."""
    if _active:
        yield _active[-1]
        return
    current = Job(name, plan, interval=interval, log=log, clock=clock)
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(current.interval):
            current.report()

    thread = threading.Thread(target=heartbeat, name="lopt-progress", daemon=True)
    _active.append(current)
    jax.monitoring.register_event_duration_secs_listener(current.on_event)
    thread.start()
    try:
        yield current
    finally:
        stop.set()
        thread.join()
        jax.monitoring.unregister_event_duration_listener(current.on_event)
        _active.pop()
        current._log(current.summary())


@contextlib.contextmanager
def stage(name: str, total: float | None = None, unit: str = "steps"):
    """A stage of the active job (module docstring); inert when no job is active."""
    if not _active:
        yield Stage(name, total, unit, time.monotonic)
        return
    owner = _active[-1]
    opened = owner.open(label(name), total, unit)
    try:
        yield opened
    finally:
        owner.close(opened)


def _record(done) -> None:
    if _active and _active[-1].current is not None:
        _active[-1].current.update(done)


def tick(done) -> None:
    """Reports `done` units of the open stage from inside traced code (module docstring)."""
    jax.debug.callback(_record, done)
