"""Train an MLP and a small CNN on scikit-learn's handwritten digits (8x8 images, 10 classes) with candle.

    python examples/train_digits.py                         # both models, default settings
    python examples/train_digits.py --model cnn --device countdev
    python examples/train_digits.py --checkpoint ck.safetensors        # save after every epoch
    python examples/train_digits.py --checkpoint ck.safetensors --resume   # continue an interrupted run

The data set (1797 images) is split once into a stratified train/test split with a fixed seed. Training
uses AdamW with a per-step cosine learning-rate schedule; a tqdm bar on stderr shows each epoch's progress,
and one line per epoch on stdout gives the train loss and test accuracy.

Reproducibility: the weights are initialised from `--seed`; each epoch's shuffling and dropout masks are
drawn from generators seeded with (seed, epoch), so a run interrupted after epoch k and resumed from its
checkpoint ends with exactly the weights of an uninterrupted run. The checkpoint (written atomically by
`candle.save_checkpoint` after every epoch) holds the model, the AdamW state, the epoch, the scheduler
and the RNG state. scikit-learn is needed only by this example and its test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import candle
from candle import nn, optim
from candle.utils.data import DataLoader, TensorDataset

MODELS = ("mlp", "cnn")
SPLIT_SEED = 0  # the train/test split never changes, whatever --seed is
TEST_FRACTION = 0.25
EVAL_BATCH = 512
_MASK64 = (1 << 64) - 1


# --- data ------------------------------------------------------------------------------------------
@dataclass
class Digits:
    """The digits split into train and test sets: images [N, 64] float32 standardised with the training
    set's mean and standard deviation, labels [N] int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data() -> Digits:
    """Load `sklearn.datasets.load_digits` and split it (stratified, fixed seed)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise SystemExit(f"train_digits needs scikit-learn (pip install scikit-learn): {e}") from None
    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    mean, std = x_tr.mean(), x_tr.std()
    return Digits(((x_tr - mean) / std).astype(np.float32), y_tr, ((x_te - mean) / std).astype(np.float32), y_te)


# --- models ----------------------------------------------------------------------------------------
def make_mlp() -> nn.Module:
    """64 -> 256 -> 128 -> 10 with ReLU and dropout."""
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(128, 10),
    )


def make_cnn() -> nn.Module:
    """[N, 1, 8, 8] -> conv(32)+BN -> pool -> conv(64)+BN -> pool -> 64*2*2 -> 128 -> 10."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),                                    # 32 x 4 x 4
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(2),                                    # 64 x 2 x 2
        nn.Flatten(), nn.Dropout(0.25),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, 10),
    )


def make_model(kind: str) -> nn.Module:
    """The model called `kind` (`mlp` or `cnn`)."""
    return make_mlp() if kind == "mlp" else make_cnn()


def _inputs(kind: str, x: np.ndarray) -> np.ndarray:
    """The images as the model takes them: flat [N, 64] for the MLP, [N, 1, 8, 8] for the CNN."""
    return x if kind == "mlp" else x.reshape(-1, 1, 8, 8)


# --- reproducible randomness -----------------------------------------------------------------------
def derive_seed(seed: int, epoch: int, stream: int) -> int:
    """A 64-bit seed for `stream` (0: shuffling, 1: dropout) of `epoch`, a pure function of its arguments."""
    s = np.random.SeedSequence([seed & _MASK64, epoch, stream])
    return int(s.generate_state(1, dtype=np.uint64)[0])


# --- training --------------------------------------------------------------------------------------
@dataclass
class Result:
    """What one model's training gave."""

    model: nn.Module
    train_loss: list[float] = field(default_factory=list)  # mean loss of each epoch run here
    test_acc: list[float] = field(default_factory=list)    # test accuracy after each epoch run here
    epochs_done: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The result as `main` returns it (`final_acc`: the last test accuracy)."""
        return {"model": self.model, "train_loss": self.train_loss, "test_acc": self.test_acc,
                "final_acc": self.test_acc[-1] if self.test_acc else float("nan"),
                "epochs_done": self.epochs_done, "seconds": self.seconds}


def evaluate(model: nn.Module, x: candle.Tensor, y: np.ndarray) -> float:
    """Accuracy of `model` (in eval mode, no grad) on the images `x` with labels `y`."""
    model.eval()
    correct = 0
    with candle.no_grad():
        for start in range(0, x.shape[0], EVAL_BATCH):
            pred = model(x[start:start + EVAL_BATCH]).argmax(dim=1).numpy()
            correct += int((pred == y[start:start + EVAL_BATCH]).sum())
    return correct / len(y)


def checkpoint_path(path: str, kind: str, both: bool) -> str:
    """`path`, or with `--model both` one file per model: `ck.safetensors` -> `ck.cnn.safetensors`."""
    if not both:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.{kind}{ext or '.safetensors'}"


def train_model(kind: str, data: Digits, args: argparse.Namespace, device: candle.Device) -> Result:
    """Train one model for `args.epochs` epochs (resuming from its checkpoint with `--resume`)."""
    candle.manual_seed(args.seed)
    model = make_model(kind).to(device)  # the same initial weights on every device (drawn on the CPU)
    opt = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    train_ds = TensorDataset(candle.from_numpy(_inputs(kind, data.x_train), device=device),
                             candle.from_numpy(data.y_train, device=device))
    x_test = candle.from_numpy(_inputs(kind, data.x_test), device=device)
    steps_per_epoch = math.ceil(len(train_ds) / args.batch_size)
    if args.max_batches:
        steps_per_epoch = min(steps_per_epoch, args.max_batches)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.epochs * steps_per_epoch))
    loss_fn = nn.CrossEntropyLoss()
    result = Result(model)

    ck = checkpoint_path(args.checkpoint, kind, args.model == "both") if args.checkpoint else None
    start_epoch = 0
    run_config = {"model_kind": kind, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                  "weight_decay": args.weight_decay, "seed": args.seed, "max_batches": args.max_batches}
    if ck and args.resume and os.path.exists(ck):
        _check_resumable(ck, run_config)
        extra = candle.load_checkpoint(ck, model, opt)
        start_epoch = int(extra["epoch"])
        sched.load_state_dict(extra["scheduler"])
        candle.random.default_generator.set_state(tuple(extra["rng_state"]))
        print(f"{kind}: resumed from {ck} after epoch {start_epoch}", flush=True)
    elif args.resume and ck:
        print(f"{kind}: no checkpoint at {ck}, starting from scratch", flush=True)
    result.epochs_done = start_epoch

    stop = args.epochs if args.stop_after is None else min(args.epochs, args.stop_after)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, stop):
        model.train()
        candle.manual_seed(derive_seed(args.seed, epoch, 1))  # dropout masks of this epoch
        loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True,
                            generator=candle.Generator(derive_seed(args.seed, epoch, 0)))
        total, count = 0.0, 0
        bar = _progress(steps_per_epoch, f"{kind} {epoch + 1}/{args.epochs}", args.progress)
        for i, (xb, yb) in enumerate(loader):
            if i >= steps_per_epoch:
                break
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            value = loss.item()
            total += value * xb.shape[0]
            count += xb.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        if bar is not None:
            bar.close()
        acc = evaluate(model, x_test, data.y_test)
        result.train_loss.append(total / max(count, 1))
        result.test_acc.append(acc)
        result.epochs_done = epoch + 1
        print(f"{kind} epoch {epoch + 1:3d}/{args.epochs}  train loss {result.train_loss[-1]:.4f}  "
              f"test acc {100 * acc:6.2f}%  lr {sched.get_last_lr()[0]:.2e}", flush=True)
        if ck:
            candle.save_checkpoint(ck, model, opt, extra={
                **run_config, "epoch": epoch + 1, "scheduler": sched.state_dict(),
                "rng_state": list(candle.random.default_generator.get_state())})
    result.seconds = time.perf_counter() - t0
    if not result.test_acc:  # nothing left to train (a finished checkpoint): report its accuracy
        result.test_acc.append(evaluate(model, x_test, data.y_test))
    return result


def _check_resumable(path: str, run_config: dict[str, Any]) -> None:
    """Exit with a message unless the checkpoint at `path` was written by a run with these settings (the
    schedule and the shuffling depend on them, so a resume with others would not continue that run)."""
    try:
        with candle.safe_open(path) as f:
            saved = json.loads((f.metadata() or {}).get("extra", "{}"))
    except (candle.CandleError, OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot read the checkpoint ({e})") from None
    diff = [f"{k}: checkpoint {saved.get(k)!r}, now {v!r}" for k, v in run_config.items() if saved.get(k) != v]
    if diff:
        raise SystemExit(f"{path}: written by a run with other settings, cannot resume it ({'; '.join(diff)})")


def _progress(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr, or None when disabled or tqdm is missing."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, unit="batch", dynamic_ncols=True)


# --- command line ----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options (see `--help`)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=[*MODELS, "both"], default="both", help="which model(s) to train")
    p.add_argument("--epochs", type=int, default=15, help="epochs (default 15)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3, cosine decay)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default 1e-2)")
    p.add_argument("--device", default=os.environ.get("CANDLE_DEVICE", "").strip() or "cpu",
                   help="candle device, e.g. cpu, countdev, cuda:0, auto (default: $CANDLE_DEVICE or cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, shuffling and dropout")
    p.add_argument("--checkpoint", metavar="PATH", help="save model + optimizer here after every epoch (atomic)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--max-batches", type=int, default=None, help="at most this many batches per epoch (tests)")
    p.add_argument("--stop-after", type=int, default=None, metavar="EPOCH",
                   help="stop after this epoch as if interrupted (the schedule still spans --epochs)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = p.parse_args(argv)
    if args.resume and not args.checkpoint:
        p.error("--resume needs --checkpoint")
    if args.epochs < 1 or args.batch_size < 1 or (args.max_batches is not None and args.max_batches < 1):
        p.error("--epochs, --batch-size and --max-batches must be positive")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the example; returns `{model kind: {"model", "train_loss", "test_acc", "final_acc", ...}}`."""
    args = parse_args(argv)
    device = candle.Device(args.device)
    data = load_data()
    print(f"digits: {len(data.y_train)} train / {len(data.y_test)} test images, device {device}", flush=True)
    kinds = MODELS if args.model == "both" else (args.model,)
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        results[kind] = train_model(kind, data, args, device).as_dict()
    for kind, r in results.items():
        print(f"{kind}: final test accuracy {100 * r['final_acc']:.2f}% "
              f"({r['epochs_done']} epochs, {r['seconds']:.1f} s)", flush=True)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
