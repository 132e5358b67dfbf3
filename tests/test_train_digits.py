"""examples/train_digits.py: short runs learn, a resumed run ends bit-identical, countdev matches cpu."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import candle

pytest.importorskip("sklearn", reason="scikit-learn (an example/test-only dependency) is not installed")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"


@pytest.fixture(scope="module")
def td() -> ModuleType:
    """The example, imported from its file (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _weights(result: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in result["model"].state_dict().items()}


def _assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def _tensors(path: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in candle.load_safetensors(path).items()}


def test_short_run_learns(td: ModuleType) -> None:
    res = td.main(["--model", "both", "--epochs", "2", "--max-batches", "20", "--no-progress", "--seed", "0"])
    for kind in ("mlp", "cnn"):
        r = res[kind]
        assert r["epochs_done"] == 2 and len(r["test_acc"]) == 2
        assert r["final_acc"] > 0.80, f"{kind}: accuracy {r['final_acc']:.3f} after 40 batches (chance is 0.10)"
        assert r["train_loss"][1] < r["train_loss"][0], f"{kind}: loss did not decrease: {r['train_loss']}"
        assert r["train_loss"][0] < np.log(10), f"{kind}: first-epoch loss {r['train_loss'][0]} is not below chance"


def test_resume_after_interruption_is_bit_identical(td: ModuleType, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--model", "both", "--epochs", "2", "--max-batches", "8", "--seed", "3", "--no-progress"]
    straight = td.main([*common, "--checkpoint", str(tmp_path / "a.safetensors")])

    ck = tmp_path / "b.safetensors"
    first = td.main([*common, "--checkpoint", str(ck), "--stop-after", "1"])
    assert all(r["epochs_done"] == 1 for r in first.values())
    for kind in ("mlp", "cnn"):  # one file per model with --model both
        extra = candle.load_checkpoint(tmp_path / f"b.{kind}.safetensors", td.make_model(kind))
        assert extra["epoch"] == 1 and extra["model_kind"] == kind
    resumed = td.main([*common, "--checkpoint", str(ck), "--resume"])
    assert "resumed from" in capsys.readouterr().out

    for kind in ("mlp", "cnn"):
        assert resumed[kind]["epochs_done"] == 2 and len(resumed[kind]["test_acc"]) == 1  # only epoch 2 ran here
        _assert_same_weights(straight[kind], resumed[kind])
        assert resumed[kind]["final_acc"] == straight[kind]["final_acc"]
        assert resumed[kind]["train_loss"][-1] == straight[kind]["train_loss"][-1]
        # the final checkpoints agree too: model, AdamW moments and step counts
        a, b = _tensors(tmp_path / f"a.{kind}.safetensors"), _tensors(tmp_path / f"b.{kind}.safetensors")
        assert a.keys() == b.keys() and any(k.startswith("optim.state.") for k in a)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_countdev_matches_cpu(td: ModuleType) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = {b.name: b for b in candle.backends()}.get("countdev")
    if info is None or info.state != "available":
        pytest.skip("the countdev test plugin (tests/plugins/candle-countdev) is not installed")
    import candle_countdev

    common = ["--model", "both", "--epochs", "1", "--max-batches", "6", "--seed", "1", "--no-progress"]
    cpu = td.main([*common, "--device", "cpu"])
    candle_countdev.reset()
    dev = td.main([*common, "--device", "countdev"])
    counts = candle_countdev.counts()
    assert counts.get("matmul", 0) > 0 and sum(counts.values()) > 100, counts  # it really ran on countdev
    for kind in ("mlp", "cnn"):
        assert str(dev[kind]["model"][0].weight.device).startswith("countdev")
        _assert_same_weights(cpu[kind], dev[kind])
        assert dev[kind]["final_acc"] == cpu[kind]["final_acc"]
