"""Shared pieces of the benchmarks: the run configuration, timers, result tables and machine info.

Timings are medians of repeated `time.perf_counter` measurements after a warm-up; nothing here
asserts on a timing. Tables render as Markdown pipe tables, readable in a terminal and pasteable
into `docs/benchmarks.md`.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

Stmt = str | Callable[[], Any]


@dataclass
class Config:
    """What a bench module may look at: the mode and the optional PyTorch reference."""

    quick: bool = False
    full: bool = False
    torch: ModuleType | None = None  # None when PyTorch is missing or disabled
    select: list[str] = field(default_factory=list)  # `-k` substrings: run only the sections they match

    def wants(self, section: str) -> bool:
        """Whether the section named `section` should run (every section when nothing was selected)."""
        return not self.select or any(k.lower() in section.lower() for k in self.select)

    @property
    def target_s(self) -> float:
        """Seconds each timed repetition should last (the loop count is calibrated to reach it)."""
        return 0.01 if self.quick else 0.04

    @property
    def repeat(self) -> int:
        """Repetitions per measurement; the median is reported."""
        return 5 if self.quick else 9


@dataclass
class Goal:
    """A performance goal and whether this run met it (reported, never asserted)."""

    name: str
    value: str
    target: str
    met: bool | None  # None: could not be measured in this run


@dataclass
class Table:
    """One table of results; `notes` print under it, `goals` go to the summary."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)

    def render(self) -> str:
        """The table as Markdown: a `###` heading, a pipe table and its notes."""
        widths = [len(c) for c in self.columns]
        for r in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, r)]

        def line(cells: list[str]) -> str:
            out = []
            for i, (c, w) in enumerate(zip(cells, widths)):
                out.append(c.ljust(w) if i == 0 else c.rjust(w))
            return "| " + " | ".join(out) + " |"

        sep = "|" + "|".join(("-" * (w + 1) + ":") if i else (":" + "-" * (w + 1))
                             for i, w in enumerate(widths)) + "|"
        parts = [f"### {self.title}", "", line(self.columns), sep, *(line(r) for r in self.rows)]
        if self.notes:
            parts += ["", *self.notes]
        return "\n".join(parts) + "\n"


class QuietGate:
    """Waits, within a budget, until other processes leave the CPUs idle before a measurement starts.

    On a shared machine another busy process makes multi-threaded kernels (OpenBLAS, torch) collapse
    while their threads spin at barriers. The gate samples /proc/stat for `interval` seconds while
    this process sleeps: what was busy meanwhile belongs to others. Linux only; elsewhere a no-op.
    """

    def __init__(self, budget_s: float = 0.0, per_wait_s: float = 10.0, interval: float = 0.05):
        self.budget_s = budget_s
        self.per_wait_s = per_wait_s
        self.interval = interval
        self.waited_s = 0.0
        self.measurements = 0
        self.busy_starts = 0  # measurements that started with other processes busy (waited per_wait_s)
        self.unchecked = 0  # measurements after the budget was spent

    @staticmethod
    def _cpu_times() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)  # total, idle + iowait

    def others_busy(self) -> float | None:
        """CPU cores used by other processes over `interval` seconds, or None where unknown."""
        a = self._cpu_times()
        time.sleep(self.interval)
        b = self._cpu_times()
        if a is None or b is None or b[0] == a[0]:
            return None
        return (1.0 - (b[1] - a[1]) / (b[0] - a[0])) * (os.cpu_count() or 1)

    def wait(self, threaded: bool) -> None:
        """Wait until others use under 0.3 cores (0.6 for single-threaded work on 4+ cores: the vCPUs of a
        small VM are often SMT siblings, so any neighbour slows a single thread too)."""
        if self.budget_s <= 0:
            return
        self.measurements += 1
        if self.waited_s >= self.budget_s:
            self.unchecked += 1
            return
        limit = 0.3 if threaded or (os.cpu_count() or 1) < 4 else 0.6
        start = time.perf_counter()
        while True:
            busy = self.others_busy()
            spent = time.perf_counter() - start
            if busy is None or busy < limit:
                break
            if spent >= self.per_wait_s:
                self.busy_starts += 1
                break
            if self.waited_s + spent >= self.budget_s:
                self.unchecked += 1
                break
            time.sleep(0.2)
        self.waited_s += time.perf_counter() - start

    def summary(self) -> str:
        if self.budget_s <= 0:
            return "quiet gate off"
        return (f"quiet gate: waited {self.waited_s:.0f} s for idle CPUs; of {self.measurements} measurements "
                f"{self.busy_starts} started while other processes were busy and {self.unchecked} unchecked "
                "(wait budget spent)")


GATE = QuietGate()


def time_it(stmt: Stmt, ns: dict[str, Any] | None = None, *, target_s: float, repeat: int, settle_s: float = 0.0,
            max_number: int = 1_000_000, retries: int = 2) -> float:
    """Median seconds per execution of `stmt` (a source string run in `ns`, or a callable).

    The loop count is calibrated (which doubles as the warm-up) so one repetition lasts about
    `target_s`; the garbage collector stays on, as in real programs. `settle_s` runs the statement
    that long first: numpy's OpenBLAS threads and torch's OpenMP threads spin-wait after their last
    job (~0.1 s), and on a small machine a pool that is still spinning slows the other library's next
    multi-threaded kernel several-fold. When the repetitions disagree (interquartile range over 25%
    of the median: another process took a core) the measurement is retried up to `retries` times
    and the steadiest one is kept.
    """
    GATE.wait(threaded=settle_s > 0)
    timer = timeit.Timer(stmt, setup="import gc; gc.enable()", globals=ns)
    timer.timeit(1)  # warm-up: first-call costs (caches, lazy imports) stay out of the result
    end = time.perf_counter() + settle_s
    while time.perf_counter() < end:
        timer.timeit(1)
    number = 1
    while True:
        t = timer.timeit(number)
        if t >= target_s or number >= max_number:
            break
        number = min(max_number, max(number * 2, int(number * target_s / max(t, 1e-9) * 1.2)))
    best: tuple[float, float] | None = None  # (relative spread, median)
    for _ in range(retries + 1):
        times = sorted(timer.timeit(number) / number for _ in range(max(repeat, 3)))
        q1, med, q3 = statistics.quantiles(times, n=4) if len(times) > 3 else (times[0], times[1], times[2])
        spread = (q3 - q1) / med
        if best is None or spread < best[0]:
            best = (spread, statistics.median(times))
        if spread <= 0.25:
            break
        GATE.wait(threaded=settle_s > 0)
    assert best is not None
    return best[1]


def fmt_us(s: float) -> str:
    """Seconds as microseconds with 2 decimals (e.g. `1.23`)."""
    return f"{s * 1e6:.2f}"


def fmt_ms(s: float) -> str:
    """Seconds as milliseconds with 1 decimal."""
    return f"{s * 1e3:.1f}"


def fmt_rate(x: float) -> str:
    """A throughput (GB/s, GFLOP/s) with 3 significant digits."""
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def fmt_ratio(x: float | None) -> str:
    """A ratio like `1.23x`, or `-` when there is nothing to compare with."""
    return "-" if x is None else f"{x:.2f}x"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, with family/model numbers when the name is generic
    (virtual machines often report just "AMD EPYC"), or platform's guess elsewhere."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                k, _, v = ln.partition(":")
                info.setdefault(k.strip(), v.strip())
                if not ln.strip():
                    break  # the first processor is enough
    except OSError:
        return platform.processor() or platform.machine()
    name = info.get("model name", platform.processor() or platform.machine())
    if not any(c.isdigit() for c in name) and "cpu family" in info:
        name += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return name


def memory_total() -> str:
    """Total RAM from /proc/meminfo, or `?`."""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return f"{kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        return "? RAM"


def blas_info() -> str:
    """numpy's BLAS as numpy reports it (name and version)."""
    import numpy as np

    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]  # type: ignore[func-returns-value]
        return f"{cfg.get('name', '?')} {cfg.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 -- older numpy: no dict mode
        return "unknown"


def load_average() -> str:
    """The 1-minute load average (other processes on the machine skew every number), or `n/a`."""
    try:
        return f"{os.getloadavg()[0]:.2f} (1 min)"
    except (OSError, AttributeError):
        return "n/a"


def machine_info(torch: ModuleType | None) -> list[tuple[str, str]]:
    """(key, value) rows describing the machine and the software of this run."""
    import numpy as np

    import candle

    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
               if k in os.environ}
    rows = [
        ("date", _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("cpu", f"{cpu_model()}, {os.cpu_count()} logical cores ({platform.machine()}), {memory_total()}"),
        ("os", f"{platform.system()} {platform.release()}"),
        ("python", sys.version.split()[0]),
        ("candle", candle.__version__),
        ("numpy", f"{np.__version__} (BLAS: {blas_info()})"),
        ("torch", f"{torch.__version__} ({torch.get_num_threads()} intra-op threads)" if torch else "not installed"),
    ]
    rows.append(("load average", load_average()))
    if threads:
        rows.append(("thread env", ", ".join(f"{k}={v}" for k, v in threads.items())))
    return rows
