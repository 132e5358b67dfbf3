"""Choosing the CPU backend's BLAS thread count while decoding, by timing the decode steps.

A decode step of an LLM on the CPU is mostly matrix-vector products that stream the weights from memory:
on an idle machine numpy's OpenBLAS is fastest with every core (two cores read memory faster than one).
But when other processes keep a core busy, a multi-threaded BLAS call waits at every barrier for its thread
that the OS descheduled, and decoding collapses. Measured on a shared 2-vCPU VM with SmolLM2-135M (f32):
3.5 tokens/s with 2 BLAS threads against 17.6 with 1 while other processes used both cores; about 20%
faster with 2 threads when the machine was idle. No fixed count is right on a shared machine, so
`ThreadTuner` treats it as a two-armed bandit: it times a short window of steps with each count, keeps the
faster, and tries the others again after a period that doubles while the choice holds (a probe of the
slower count costs a few slower steps) and resets when the choice changes.

    tuner = ThreadTuner.for_device(model_device)   # None where it does not apply; else the process's tuner
    tuner.begin()
    for step in ...:
        run_one_decode_step()
        if tuner: tuner.step()
    if tuner: tuner.close()                         # back to the original count
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ThreadTuner"]


class ThreadTuner:
    """Times decode steps and switches the BLAS thread count to the fastest of `counts` (see the module docs).

    `counts[0]` is the count in use when the tuner is made (restored by `close`). A check measures each count
    over up to `window` steps after one settling step (the first step after a switch wakes or parks
    threads); a count whose fastest step is already `abort` times slower than the current choice is dropped
    early. A count replaces the choice when its median step is more than `margin` faster. The choice then
    runs `period` steps until the next check: the period doubles (up to `max_period`) while the choice
    holds, and is never so short that probing the slower count takes more than `probe_share` of the time.
    The state survives `close`/`begin`, so consecutive generations go on where the last one stopped.
    """

    def __init__(self, counts: Sequence[int], set_threads: Callable[[int], Any], *, window: int = 4,
                 period: int = 32, max_period: int = 1024, margin: float = 0.05, abort: float = 1.25,
                 probe_share: float = 0.05, clock: Callable[[], float] = time.perf_counter) -> None:
        if len(counts) < 1 or len(set(counts)) != len(counts):
            raise ValueError(f"ThreadTuner: counts must be distinct, got {list(counts)}")
        self.counts = list(counts)
        self._set = set_threads
        self.window, self.base_period, self.max_period = window, period, max_period
        self.margin, self.abort, self.probe_share = margin, abort, probe_share
        self._clock = clock
        self.original = self.current = self.counts[0]
        self.period = period
        self.estimate: dict[int, float] = {}  # median step seconds of each count's latest measurement
        self.switches = 0
        self._queue: list[int] = list(self.counts)  # counts still to measure in this check
        self._times: list[float] = []
        self._skip = 1  # settling steps left before timing
        self._run_left = 0  # steps left of the choice's run before the next check
        self._last: float | None = None
        self._chosen: int | None = None  # the count chosen at the last check

    @classmethod
    def for_device(cls, device: Any, **kw: Any) -> ThreadTuner | None:
        """The process's tuner for a model on `device` when it runs on the numpy CPU backend with a BLAS whose
        thread count can be changed and is above 1 (counts: that one and 1); else None. One tuner is kept per
        starting count (the thread count is a process-wide setting), so what it learnt carries over."""
        if getattr(device, "type", None) != "cpu":
            return None
        from candle.cpu.threads import blas_threads, set_blas_threads

        n = blas_threads()
        if n <= 1 or not set_blas_threads(n):
            return None
        tuner = _SHARED.get(n)
        if tuner is None or kw:
            tuner = cls([n, 1], set_blas_threads, **kw)
            if not kw:
                _SHARED[n] = tuner
        return tuner

    @property
    def chosen(self) -> int:
        """The count chosen at the last check (the starting count before the first check ends)."""
        return self._chosen if self._chosen is not None else self.original

    def begin(self) -> None:
        """Start timing a new run of decode steps (the time since the last `step` is not a step)."""
        self._last = None
        target = self._queue[0] if self._run_left == 0 and self._queue else self.chosen
        if target != self.current:
            self._set(target)
            self.current = target

    def _switch(self, n: int) -> None:
        if n != self.current:
            self._set(n)
            self.current = n
        self._times, self._skip = [], 1

    def step(self) -> None:
        """Call once after every decode step."""
        now = self._clock()
        dt, self._last = (None if self._last is None else now - self._last), now
        if dt is None:
            return
        if self._run_left > 0:  # running the choice; its last `window` steps refresh its estimate
            self._run_left -= 1
            self._times = (self._times + [dt])[-self.window:]
            if self._run_left == 0:
                if len(self._times) == self.window:
                    self.estimate[self.current] = statistics.median(self._times)
                self._queue = [c for c in self.counts if c != self.current]
                self._switch(self._queue[0])
            return
        if self._skip:
            self._skip -= 1
            return
        self._times.append(dt)
        ref = self.estimate.get(self.chosen) if self.current != self.chosen else None
        hopeless = ref is not None and min(self._times) > self.abort * ref
        if len(self._times) < self.window and not hopeless:
            return
        self.estimate[self.current] = statistics.median(self._times)
        self._queue.pop(0)
        if self._queue:  # measure the next count of this check
            self._switch(self._queue[0])
            return
        self._decide()

    def _decide(self) -> None:
        prev = self._chosen
        ref = prev if prev is not None else self.original
        best = min(self.estimate, key=self.estimate.__getitem__)
        if best != ref and self.estimate[best] > (1.0 - self.margin) * self.estimate.get(ref, float("inf")):
            best = ref  # not clearly faster: keep the current choice
        if prev is not None and best == prev:
            self.period = min(self.max_period, 2 * self.period)
        else:
            self.period = self.base_period
            self.switches += prev is not None
        slowest = max(self.estimate[c] for c in self.counts if c in self.estimate)
        probe_steps = (len(self.counts) - 1) * (self.window + 1) * slowest / self.estimate[best]
        self.period = max(self.period, min(self.max_period, math.ceil(probe_steps / self.probe_share)))
        self._chosen = best
        self._switch(best)
        self._run_left = self.period

    def close(self) -> None:
        """The end of a run of decode steps: restore the thread count the tuner started with."""
        if self.current != self.original:
            self._set(self.original)
            self.current = self.original


_SHARED: dict[int, ThreadTuner] = {}


def tuning_disabled() -> bool:
    """True when `CANDLE_TUNE_THREADS=0` switches the tuner off (e.g. for benchmarks that pin the count)."""
    return os.environ.get("CANDLE_TUNE_THREADS", "1").strip() in ("0", "false", "no", "off")
