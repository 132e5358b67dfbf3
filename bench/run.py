"""Run candle's benchmarks and print one report (Markdown), comparing with PyTorch in the same run.

    python bench/run.py                 # the default set (a few minutes)
    python bench/run.py --quick         # smaller sizes, fewer repetitions (about a minute)
    python bench/run.py --full          # adds the largest sizes (e.g. 4096 matmul)
    python bench/run.py --only core --out report.md
    python bench/run.py -k matmul -k softmax   # only the sections whose names contain these

PyTorch is optional: without it (or with --no-torch) only candle's numbers are printed.
Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from typing import Protocol

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import GATE, Config, Goal, Table, load_average, machine_info

# The bench modules, in report order: (short name for --only, module in bench/). Adding one is one line.
# A module defines TITLE and `run(cfg: Config) -> Iterator[Table]`, and skips itself (one table with a
# note) when its backend is not installed.
BENCHES: list[tuple[str, str]] = [
    ("core", "bench_core"),
    ("train", "bench_train"),
    ("generate", "bench_generate"),
    ("opencl", "bench_opencl"),
    ("cuda", "bench_cuda"),
]


class BenchModule(Protocol):
    TITLE: str

    def run(self, cfg: Config) -> Iterator[Table]: ...


def _load_torch(disabled: bool) -> object | None:
    if disabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def _load1() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _backends() -> str:
    """`candle.backends()` in one line; loading them here keeps plugin warnings out of the tables."""
    import candle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ", ".join(f"{b.name} ({b.state})" for b in candle.backends())


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the selected bench modules, print (and optionally save) the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, few repetitions (~1 minute)")
    mode.add_argument("--full", action="store_true", help="add the largest sizes (slow)")
    p.add_argument("--only", action="append", choices=[n for n, _ in BENCHES], help="run only these modules")
    p.add_argument("-k", dest="select", action="append", default=[], metavar="SUBSTRING",
                   help="run only the sections whose name contains SUBSTRING (e.g. -k matmul -k import)")
    p.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    p.add_argument("--out", metavar="FILE", help="also write the report to FILE")
    p.add_argument("--wait-quiet", type=float, metavar="S", default=None,
                   help="total seconds the run may wait for other processes to leave the CPUs idle before "
                        "measurements (default: 10 quick, 60 otherwise; 0: never wait)")
    args = p.parse_args(argv)

    torch = _load_torch(args.no_torch)
    cfg = Config(quick=args.quick, full=args.full, torch=torch, select=args.select)  # type: ignore[arg-type]
    GATE.budget_s = args.wait_quiet if args.wait_quiet is not None else 10.0 if args.quick else 60.0
    GATE.per_wait_s = max(10.0, GATE.budget_s / 20)
    lines: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    mode_name = "quick" if args.quick else "full" if args.full else "default"
    emit(f"# candle benchmarks ({mode_name})\n")
    emit("| | |\n|:--|:--|")
    for k, v in machine_info(cfg.torch):  # type: ignore[arg-type]
        emit(f"| {k} | {v} |")
    emit(f"| candle backends | {_backends()} |")
    command = " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    emit(f"| command | `{command}` |\n")
    busy = _load1()
    if busy is not None and busy > 0.5 * (os.cpu_count() or 1):
        emit(f"**Warning: the machine is busy (load average {busy:.2f} on {os.cpu_count()} cores): other processes "
             "skew these numbers, multi-threaded kernels (BLAS, torch) most of all.**\n")

    goals: list[Goal] = []
    failed = 0
    t_start = time.perf_counter()
    for name, modname in BENCHES:
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            mod: BenchModule = importlib.import_module(modname)  # type: ignore[assignment]
            emit(f"## {mod.TITLE}\n")
            for table in mod.run(cfg):
                emit(table.render())
                goals.extend(table.goals)
        except Exception:  # noqa: BLE001 -- one broken module must not hide the others' results
            failed += 1
            emit(f"**bench module `{modname}` failed:**\n\n```\n{traceback.format_exc()}```\n")
        emit(f"_{name}: {time.perf_counter() - t0:.0f} s_\n")

    if goals:
        emit("## Goals\n")
        emit("| goal | this run | target | met |\n|:--|--:|--:|:--|")
        for g in goals:
            met = "n/a" if g.met is None else "yes" if g.met else "**no**"
            emit(f"| {g.name} | {g.value} | {g.target} | {met} |")
        emit("")
    emit(f"_total: {time.perf_counter() - t_start:.0f} s; load average at the end: {load_average()}; "
         f"{GATE.summary()}_")

    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
