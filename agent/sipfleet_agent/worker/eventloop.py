"""The worker's event loop bookkeeping: submitted calls, timers and tasks, as types. Pure: no pjsua2; the clock
is passed in, so it is tested with a fake one.

Promise: :meth:`EventLoop.turn` (called by the one event thread after each ``libHandleEvents``) runs submitted
calls in order (their :class:`~concurrent.futures.Future` gets the result or the exception), then every timer due
by ``clock()`` (earliest first, ties in the order they were made, cancelled ones skipped), then advances every
task whose :class:`Wait` predicate holds or whose timeout passed. An exception in a timer or a task is logged and
ends only that timer or task. After :meth:`close`, submitted calls fail with :class:`LoopClosed`.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import queue
import time
from concurrent.futures import Future
from typing import Any, Callable, Generator

LOG = logging.getLogger("sipfleet_agent")


class LoopClosed(Exception):
    pass


@dataclasses.dataclass
class Wait:
    """What a task generator yields: resume when ``pred()`` is true or after ``timeout`` seconds."""

    timeout: float
    pred: Callable[[], bool] | None = None


TaskGen = Generator[Wait, None, None]


@dataclasses.dataclass(order=True)
class Timer:
    due: float
    seq: int
    fn: Callable = dataclasses.field(compare=False)
    args: tuple = dataclasses.field(compare=False, default=())
    cancelled: bool = dataclasses.field(compare=False, default=False)

    def cancel(self) -> None:
        self.cancelled = True


@dataclasses.dataclass
class Task:
    gen: TaskGen
    on_error: Callable[[BaseException], None] | None = None
    wait: Wait | None = None
    deadline: float = 0.0
    done: bool = False


class EventLoop:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self.tasks: list[Task] = []
        self.closed = False

    # -------------------------------------------------------------- any thread
    def submit(self, fn: Callable, *args: Any) -> Future:
        fut: Future = Future()
        self._q.put((fn, args, fut))
        if self.closed:
            self.fail_pending()
        return fut

    # -------------------------------------------------------------- the event thread
    def call_later(self, delay: float, fn: Callable, *args: Any) -> Timer:
        t = Timer(self.clock() + max(0.0, delay), next(self._seq), fn, args)
        heapq.heappush(self._timers, t)
        return t

    @staticmethod
    def cancel(timer: Timer | None) -> None:
        if timer is not None:
            timer.cancel()

    def spawn(self, gen: TaskGen, on_error: Callable[[BaseException], None] | None = None) -> Task:
        task = Task(gen, on_error)
        self.tasks.append(task)
        self._advance(task)
        return task

    def poll_timeout(self, short_s: float, long_s: float) -> float:
        """How long the event thread may wait in ``libHandleEvents`` (pjsip events end the wait at once): ``short_s``
        while work is queued or a task waits on a condition, else until the next timer, at most ``long_s``. An idle
        worker then wakes a few times a second, not a hundred (work submitted from other threads waits for the
        next wake-up: at most ``long_s``)."""
        if not self._q.empty() or any(not t.done for t in self.tasks):
            return short_s
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return long_s
        return min(long_s, max(short_s, self._timers[0].due - self.clock()))

    def turn(self) -> None:
        self.drain()
        self.run_timers()
        self.step_tasks()

    def drain(self) -> None:
        while True:
            try:
                fn, args, fut = self._q.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001
                fut.set_exception(e)

    def run_timers(self) -> None:
        now = self.clock()
        while self._timers and self._timers[0].due <= now:
            t = heapq.heappop(self._timers)
            if t.cancelled:
                continue
            try:
                t.fn(*t.args)
            except Exception:
                LOG.exception("timer failed")

    def step_tasks(self) -> None:
        if not self.tasks:
            return
        now = self.clock()
        for task in list(self.tasks):
            if task.done or task.wait is None:
                continue
            if now >= task.deadline or (task.wait.pred is not None and task.wait.pred()):
                self._advance(task)
        self.tasks = [t for t in self.tasks if not t.done]

    def _advance(self, task: Task) -> None:
        try:
            task.wait = next(task.gen)
            task.deadline = self.clock() + task.wait.timeout
        except StopIteration:
            task.done = True
        except Exception as e:  # noqa: BLE001
            LOG.exception("task failed")
            task.done = True
            if task.on_error:
                task.on_error(e)

    def close(self) -> None:
        self.closed = True
        self.fail_pending()

    def fail_pending(self) -> None:
        while True:
            try:
                _, _, fut = self._q.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(LoopClosed("agent stopped"))
