"""Slow analyses computed once, in the background, shared by every session.

A page asks :meth:`TaskStore.get` for a result by key; the first ask starts the
computation on the store's worker thread (one at a time, so two analyses never
fight over the two cores with each other), later asks get the same :class:`Task`.
The page draws what is ready and shows the task's progress for the rest, so a
control never waits on a solve. Finished results are kept up to ``max_entries``
(least recently asked for evicted first). A task nobody has asked about for
:data:`ABANDON_AFTER` seconds (its tabs closed, their viewers moved on) is dropped: at
its turn if it is still queued, at its next progress report if it runs; the next ask
starts it again. This module knows nothing of Streamlit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
import queue
from typing import Any, Callable

from core.runs import log

#: Seconds without an ask after which a task is left to nobody. Pages ask at least once
#: a second while they show a task's progress (ui.draw.background).
ABANDON_AFTER = 10.0


class TaskAbandoned(Exception):
    """Raised inside a task's computation when nobody waits for its result any more."""


class Task:
    """One background computation: its progress, then its result or its error."""

    def __init__(self, key: str, label: str):
        self.key, self.label = key, label
        self.done, self.total = 0, 0
        self.result: Any = None
        self.partial: dict = {}  # what a computation publishes before it finishes
        self.error: str = ""
        self.started = time.perf_counter()
        self.seconds: float | None = None  # set when finished
        self.dropped = False  # abandoned before it finished: asked again, it starts again
        self.seen = time.monotonic()  # last time someone asked for it
        self._finished = threading.Event()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def elapsed(self) -> float:
        return self.seconds if self.seconds is not None else time.perf_counter() - self.started

    def touch(self) -> None:
        """Someone still wants the result."""
        self.seen = time.monotonic()

    @property
    def abandoned(self) -> bool:
        return not self.finished and time.monotonic() - self.seen > ABANDON_AFTER

    def progress(self, done: int, total: int) -> None:
        """Called by the computation as it goes; raises :class:`TaskAbandoned` when
        nobody waits for the result any more."""
        self.done, self.total = done, total
        self.check()

    def check(self) -> None:
        """Raise :class:`TaskAbandoned` when nobody waits for the result any more (for
        computations that wait on something else, a child process say)."""
        if self.abandoned:
            raise TaskAbandoned(self.label)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until finished (tests and the benchmark; pages never wait). Waiting
        counts as asking."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.touch()
            step = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if self._finished.wait(max(step, 0.0)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _run(self, fn: Callable[["Task"], Any]) -> None:
        self.started = time.perf_counter()
        try:
            self.check()
            self.result = fn(self)
        except TaskAbandoned:
            self.dropped = True
        except Exception as exc:  # noqa: BLE001 - shown on the page, logged for the operator
            log.exception("analysis %s failed", self.label)
            self.error = f"{type(exc).__name__}: {exc}"
        self.seconds = time.perf_counter() - self.started
        outcome = "dropped (no viewers) after" if self.dropped else \
            "failed" if self.error else "finished"
        log.info("analysis %s %s in %.1f s", self.label, outcome, self.seconds)
        self._finished.set()


class TaskStore:
    """Background tasks by key, run one at a time on a worker thread."""

    def __init__(self, max_entries: int = 32):
        self.max_entries = max_entries
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # A daemon thread: a server that is stopped does not wait for an analysis to end
        # (a ThreadPoolExecutor's workers are joined at exit, which held Ctrl+C for minutes).
        threading.Thread(target=self._work, name="weightscope-analysis", daemon=True).start()

    def _work(self) -> None:
        while True:
            task, fn = self._queue.get()
            task._run(fn)

    def get(self, key: str, fn: Callable[[Task], Any], label: str = "") -> Task:
        """The task for ``key``, started now with ``fn(task)`` if there is none.

        A task that failed or was dropped is started again on the next ask (the cause
        may be gone). Every ask counts as someone waiting (see :data:`ABANDON_AFTER`).
        """
        with self._lock:
            task = self._tasks.get(key)
            if task is not None and not (task.finished and (task.error or task.dropped)):
                self._tasks.move_to_end(key)
                task.touch()
                return task
            task = Task(key, label or key)
            self._tasks[key] = task
            while len(self._tasks) > self.max_entries:
                old_key = next(iter(self._tasks))
                if not self._tasks[old_key].finished:
                    break  # never forget a task still running or queued
                self._tasks.pop(old_key)
        self._queue.put((task, fn))
        return task

    def peek(self, key: str):
        """The finished result for ``key``, or None (starts nothing)."""
        task = self._tasks.get(key)
        ok = task is not None and task.finished and not task.error and not task.dropped
        return task.result if ok else None

    def wait_all(self, timeout: float | None = None) -> bool:
        """Block until every task asked for so far has finished (tests, the benchmark)."""
        with self._lock:
            tasks = list(self._tasks.values())
        return all(task.wait(timeout) for task in tasks)

    def __len__(self) -> int:
        return len(self._tasks)
