"""One training step (forward + cross-entropy + backward + AdamW) of the digits MLP and CNN, candle beside PyTorch.

The models are those of `examples/train_digits.py` (imported from it); the PyTorch twins are built layer by
layer from them and start from the same weights. Both run in training mode (dropout, batch-norm statistics)
on the same batch of random 8x8 images. Reported: median ms per step, the ratio candle / torch with torch's
default intra-op threads and with one thread, and the split of candle's step into forward, backward and
optimizer. Run alone with `python bench/bench_train.py [--quick] [--no-torch]`, or through bench/run.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import candle
from _harness import GATE, Config, Goal, Table, fmt_ratio, machine_info, time_it

TITLE = "Training step: digits MLP and CNN (forward + backward + AdamW, f32)"
BATCH = 64
GOAL_RATIO = 2.0
_SETTLE_S = 0.2  # see _harness.time_it: lets the other library's thread pool stop spinning
_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"
_INPUT_SHAPES = {"mlp": (BATCH, 64), "cnn": (BATCH, 1, 8, 8)}


def _example() -> ModuleType:
    """examples/train_digits.py as a module (for `make_model`; it imports scikit-learn only to load data)."""
    name = "_train_digits_example"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def torch_twin(model: candle.nn.Module, torch: ModuleType) -> Any:
    """A `torch.nn.Sequential` with the layers of the candle `Sequential` `model` and a copy of its state."""
    tnn = torch.nn
    layers = []
    for m in model:
        kind = type(m).__name__
        if kind == "Linear":
            layers.append(tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None))
        elif kind == "Conv2d":
            layers.append(tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                     m.dilation, m.groups, m.bias is not None))
        elif kind == "BatchNorm2d":
            layers.append(tnn.BatchNorm2d(m.num_features, m.eps, m.momentum))
        elif kind == "MaxPool2d":
            layers.append(tnn.MaxPool2d(m.kernel_size, m.stride, m.padding))
        elif kind == "Dropout":
            layers.append(tnn.Dropout(m.p))
        elif kind in ("ReLU", "Flatten"):
            layers.append(getattr(tnn, kind)())
        else:
            raise TypeError(f"torch_twin: no PyTorch twin for {kind}")
    twin = tnn.Sequential(*layers)
    state = {k: torch.from_numpy(np.array(v.numpy())) for k, v in model.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    return twin


class _Step:
    """One model's training step and its phases, for candle or torch (`lib`)."""

    def __init__(self, lib: Any, model: Any, x: Any, y: Any) -> None:
        self.model, self.x, self.y = model, x, y
        self.opt = lib.optim.AdamW(model.parameters(), lr=1e-3)
        self.loss_fn = lib.nn.CrossEntropyLoss()
        model.train()

    def step(self) -> float:
        """zero_grad, forward, loss, backward, AdamW step; the loss read back (a sync point for both)."""
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss.item()

    def forward(self) -> float:
        """Forward and loss only (recording the graph, as in training)."""
        return self.loss_fn(self.model(self.x), self.y).item()

    def forward_backward(self) -> None:
        """Forward, loss and backward (no optimizer step)."""
        self.opt.zero_grad()
        self.loss_fn(self.model(self.x), self.y).backward()

    def optimizer_step(self) -> None:
        """The AdamW update alone (the gradients of the last backward stay in place)."""
        self.opt.step()


def _batch(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal(_INPUT_SHAPES[kind], dtype=np.float32), rng.integers(0, 10, BATCH, dtype=np.int64)


def _same_loss(cmodel: Any, tmodel: Any, x: np.ndarray, y: np.ndarray, torch: ModuleType) -> float:
    """|candle loss - torch loss| in eval mode (no dropout): the twins compute the same function."""
    cmodel.eval()
    tmodel.eval()
    with candle.no_grad(), torch.no_grad():
        a = candle.nn.functional.cross_entropy(cmodel(candle.from_numpy(x)), candle.from_numpy(y)).item()
        b = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y)).item()
    return abs(a - b)


def measure(cfg: Config | bool = False) -> list[dict[str, Any]]:
    """Time each model's step: one dict per model with `model`, `params`, `candle_ms`, `torch_ms`,
    `torch_threads`, `torch1_ms` (torch on one thread), `ratio`, `ratio1`, candle's `fwd_ms`, `bwd_ms`,
    `opt_ms` (and torch's `t_fwd_ms`, ...), `max_loss_diff`. `cfg` may be a bool (quick)."""
    if isinstance(cfg, bool):
        cfg = Config(quick=cfg, torch=_load_torch())
    torch = cfg.torch
    td = _example()
    kw = {"target_s": cfg.target_s, "repeat": cfg.repeat, "settle_s": _SETTLE_S}
    rows: list[dict[str, Any]] = []
    for kind in ("mlp", "cnn"):
        candle.manual_seed(0)
        cmodel = td.make_model(kind)
        x, y = _batch(kind)
        row: dict[str, Any] = {"model": kind, "batch": BATCH,
                               "params": sum(p.numel() for p in cmodel.parameters())}
        tmodel = torch_twin(cmodel, torch) if torch is not None else None
        if tmodel is not None:
            row["max_loss_diff"] = _same_loss(cmodel, tmodel, x, y, torch)
        cs = _Step(candle, cmodel, candle.from_numpy(x), candle.from_numpy(y))
        row["candle_ms"] = 1e3 * time_it(cs.step, **kw)
        row.update(_phases(cs, "", kw))
        if torch is not None:
            ts = _Step(torch, tmodel, torch.from_numpy(x), torch.from_numpy(y))
            row["torch_threads"] = torch.get_num_threads()
            row["torch_ms"] = 1e3 * time_it(ts.step, **kw)
            row.update(_phases(ts, "t_", kw))
            threads = torch.get_num_threads()
            try:
                torch.set_num_threads(1)
                row["torch1_ms"] = 1e3 * time_it(ts.step, **kw)
            finally:
                torch.set_num_threads(threads)
            row["ratio"] = row["candle_ms"] / row["torch_ms"]
            row["ratio1"] = row["candle_ms"] / row["torch1_ms"]
        rows.append(row)
    return rows


def _phases(s: _Step, prefix: str, kw: dict[str, Any]) -> dict[str, float]:
    """Forward, backward (forward+backward minus forward) and optimizer ms of one step."""
    fwd = time_it(s.forward, **kw)
    fwd_bwd = time_it(s.forward_backward, **kw)
    opt = time_it(s.optimizer_step, **kw)
    return {f"{prefix}fwd_ms": 1e3 * fwd, f"{prefix}bwd_ms": 1e3 * max(fwd_bwd - fwd, 0.0),
            f"{prefix}opt_ms": 1e3 * opt}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def tables(rows: list[dict[str, Any]], torch: ModuleType | None) -> list[Table]:
    """The measurements as two Markdown tables (step times and ratios; the phases of a step)."""
    threads = rows[0].get("torch_threads") if rows else None
    main = Table(f"One training step, batch {BATCH} (ms per step, median; lower is better)",
                 ["model", "params", "candle", f"torch ({threads} thr)" if threads else "torch",
                  "candle/torch", "torch (1 thr)", "candle/torch 1 thr"])
    phases = Table("Where a step goes (ms: forward+loss, backward, AdamW step)",
                   ["model", "candle fwd", "candle bwd", "candle AdamW", "torch fwd", "torch bwd", "torch AdamW"])
    for r in rows:
        main.rows.append([r["model"], f"{r['params']:,}", _ms(r["candle_ms"]), _ms(r.get("torch_ms")),
                          fmt_ratio(r.get("ratio")), _ms(r.get("torch1_ms")), fmt_ratio(r.get("ratio1"))])
        phases.rows.append([r["model"], _ms(r["fwd_ms"]), _ms(r["bwd_ms"]), _ms(r["opt_ms"]),
                            _ms(r.get("t_fwd_ms")), _ms(r.get("t_bwd_ms")), _ms(r.get("t_opt_ms"))])
        main.goals.append(Goal(f"train step {r['model']} (batch {BATCH}), candle/torch", fmt_ratio(r.get("ratio")),
                               f"<= {GOAL_RATIO:g}x", None if "ratio" not in r else r["ratio"] <= GOAL_RATIO))
    main.notes.append("Models of examples/train_digits.py in training mode (dropout, batch norm), AdamW lr 1e-3, "
                      "random inputs; a step is zero_grad, forward, cross-entropy, backward, AdamW step and "
                      "`loss.item()`. The PyTorch twins start from candle's weights. candle runs with numpy's "
                      "default BLAS threads in both columns; `torch (1 thr)` is torch with `set_num_threads(1)`.")
    if torch is None:
        main.notes.append("PyTorch is not installed (or disabled): candle's numbers only.")
    else:
        diffs = ", ".join(f"{r['model']} {r['max_loss_diff']:.1e}" for r in rows)
        main.notes.append(f"Same function check (eval-mode loss, candle vs torch, same weights): |diff| {diffs}.")
    phases.notes.append("bwd = (forward + backward) - forward; AdamW timed alone on the last gradients.")
    return [main, phases]


def run(cfg: Config | bool) -> Iterator[Table]:
    """bench/run.py's entry point: the step-time table and the phase table (`cfg` may be a bool: quick)."""
    if isinstance(cfg, bool):
        cfg = Config(quick=cfg, torch=_load_torch())
    yield from tables(measure(cfg), cfg.torch)


def _load_torch() -> ModuleType | None:
    try:
        import torch
    except ImportError:
        return None
    return torch


def main(argv: list[str] | None = None) -> int:
    """Print the machine and the tables (Markdown)."""
    p = argparse.ArgumentParser(description=TITLE)
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--no-torch", action="store_true", help="candle only")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="seconds the run may wait in all for other processes to leave the CPUs idle (default 0)")
    args = p.parse_args(argv)
    GATE.budget_s = args.wait_quiet
    cfg = Config(quick=args.quick, torch=None if args.no_torch else _load_torch())
    print(f"## {TITLE}\n\n| | |\n|:--|:--|")
    for k, v in machine_info(cfg.torch):
        print(f"| {k} | {v} |")
    print()
    for t in run(cfg):
        print(t.render())
    if args.wait_quiet:
        print(f"_{GATE.summary()}_")
    return 0


if __name__ == "__main__":
    sys.exit(main())
