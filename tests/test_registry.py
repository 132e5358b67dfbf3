"""The plugin registry, devices and the `candle backends` command, with real installed plugin packages.

Needs the test plugins installed (nox installs them):
    pip install -e tests/plugins/candle-countdev -e tests/plugins/candle-brokenplugin -e packages/candle-models

Whatever depends on the environment ($CANDLE_DEVICE, $CANDLE_DISABLE_PLUGINS, what a fresh
`import candle` loads) runs in a subprocess with a clean environment.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import candle
from candle import BackendUnavailableError, Device, DeviceError

PLUGIN_DISTS = ("candle-countdev", "candle-brokenplugin")
PLUGIN_MODULES = ("candle_countdev", "candle_brokenplugin", "candle_cuda", "candle_opencl", "candle_models")
HEAVY_MODULES = ("cupy", "pyopencl", "torch", "tokenizers", "safetensors")

# the registry warns about the deliberately broken test plugins whenever a process discovers them
pytestmark = pytest.mark.filterwarnings("ignore:candle. skipping backend:RuntimeWarning")


@pytest.fixture(autouse=True, scope="module")
def _plugins_installed() -> None:
    missing = []
    for dist in PLUGIN_DISTS:
        try:
            md.distribution(dist)
        except md.PackageNotFoundError:
            missing.append(dist)
    if missing:
        pytest.fail(f"test plugin packages not installed: {', '.join(missing)}; "
                    "pip install -e tests/plugins/candle-countdev -e tests/plugins/candle-brokenplugin",
                    pytrace=False)


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLE_") and k != "PYTHONWARNINGS"}
    env.update(overrides)
    return env


def run_py(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter with a clean candle environment plus `env`."""
    return subprocess.run([sys.executable, *args, "-c", textwrap.dedent(code)], env=clean_env(**env),
                          capture_output=True, text=True, timeout=300)


def run_json(code: str, **env: str) -> dict:
    """Run `code`, which prints one JSON object as its last line, and return that object."""
    proc = run_py(code, **env)
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


BACKENDS_JSON = """
    import json, sys, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import candle
        rows = {b.name: dict(state=b.state, reason=b.reason, devices=b.devices, plugin=b.plugin)
                for b in candle.backends()}
    print(json.dumps(dict(rows=rows, warnings=[str(w.message) for w in caught], modules=sorted(sys.modules))))
"""


# --- candle.backends() -------------------------------------------------------------------------------------

def test_backends_lists_every_plugin_with_state_and_reason() -> None:
    from candle_brokenplugin import IMPORT_ERROR, PROBE_ERROR

    rows = run_json(BACKENDS_JSON)["rows"]
    assert rows["cpu"]["state"] == "available" and rows["cpu"]["devices"] == 1
    assert rows["countdev"]["state"] == "available" and rows["countdev"]["devices"] == 2
    assert rows["countdev"]["plugin"] == "countdev"

    broken = rows["broken_import"]
    assert broken["state"] == "failed"
    assert "ImportError" in broken["reason"] and IMPORT_ERROR in broken["reason"]
    assert "candle_brokenplugin.broken_import" in broken["reason"]

    probe = rows["broken_probe"]
    assert probe["state"] == "failed"
    assert "RuntimeError" in probe["reason"] and PROBE_ERROR in probe["reason"]


def test_one_warning_per_failing_plugin_and_none_for_the_others() -> None:
    out = run_json("""
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import candle
            candle.backends()
            candle.backends()
            (candle.ones(2, device="countdev") + candle.ones(2, device="countdev:1").to("countdev")).tolist()
            candle.ones(2).sum().item()
            for name in ("broken_import", "broken_probe", "nosuch"):
                try:
                    candle.Device(name).backend
                except candle.BackendUnavailableError:
                    pass
            candle.backends()
        print(json.dumps([str(w.message) for w in caught if "candle" in str(w.message)]))
    """)
    assert sum("broken_import" in m for m in out) == 1, out
    assert sum("broken_probe" in m for m in out) == 1, out
    assert len(out) == 2, out


def test_a_failing_plugin_breaks_neither_import_nor_other_backends() -> None:
    out = run_json("""
        import json
        import candle
        a = candle.tensor([1.0, 2.0], device="countdev")
        print(json.dumps(dict(countdev=(a * 2).tolist(), cpu=candle.arange(3).sum().item(),
                              dev=str(a.device))))
    """)
    assert out == {"countdev": [2.0, 4.0], "cpu": 3, "dev": "countdev:0"}


def test_backends_probe_without_building_a_backend() -> None:
    mods = run_json(BACKENDS_JSON)["modules"]
    assert "candle_countdev.plugin" in mods  # the hook ran...
    assert "candle_countdev.backend" not in mods  # ...but no backend was built
    assert "candle.cpu.backend" not in mods


# --- import candle stays light -----------------------------------------------------------------------------

def test_import_candle_imports_no_plugin_and_no_heavy_library() -> None:
    mods = set(run_json("import json, sys, candle; print(json.dumps(sorted(sys.modules)))"))
    assert "candle" in mods
    for name in PLUGIN_MODULES + HEAVY_MODULES + ("candle.cpu.plugin", "candle.cpu.backend"):
        assert name not in mods, f"`import candle` imported {name}"


def test_import_candle_importtime() -> None:
    proc = run_py("import candle", "-X", "importtime")
    assert proc.returncode == 0, proc.stderr
    names = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    names = [n for n in names if n and n != "imported package"]
    assert "candle" in names, proc.stderr[-2000:]
    tops = {n.split(".")[0] for n in names}
    for name in PLUGIN_MODULES + HEAVY_MODULES:
        assert name not in tops, f"`import candle` imported {name}"
    assert "candle.cpu.backend" not in names


# --- a third-party backend: countdev -----------------------------------------------------------------------

def test_countdev_runs_tensors_and_counts_kernel_calls() -> None:
    import candle_countdev

    a = candle.tensor([1.0, 2.0, 3.0], device="countdev")
    b = candle.ones(3, device="countdev")
    candle_countdev.reset()
    s = (a + b).sum()
    counts = candle_countdev.counts()
    assert counts.get("binary", 0) >= 1 and counts.get("reduce", 0) >= 1, counts
    detail = candle_countdev.counts(detail=True)
    assert detail.get("binary:add", 0) >= 1 and detail.get("reduce:sum", 0) >= 1, detail
    assert s.device == "countdev:0" and s.device.type == "countdev"
    assert s.item() == 9.0
    assert type(s.device.backend).__name__ == "CountingBackend"
    candle_countdev.reset()
    assert candle_countdev.counts() == {} and candle_countdev.total() == 0


def test_countdev_autograd_and_transfers() -> None:
    import candle_countdev

    x = candle.tensor([[1.0, 2.0], [3.0, 4.0]], device="countdev")
    w = candle.tensor([[0.5], [-1.0]], device="countdev", requires_grad=True)
    candle_countdev.reset()
    loss = (x @ w).sum()
    loss.backward()
    assert candle_countdev.counts().get("matmul", 0) >= 2  # forward and the gradient of w
    assert w.grad is not None and w.grad.device == "countdev:0"
    assert w.grad.tolist() == [[4.0], [6.0]]

    on_cpu = x.to("cpu")
    assert on_cpu.device == "cpu" and on_cpu.tolist() == x.tolist()
    on_other = x.to("countdev:1")
    assert on_other.device == Device("countdev", 1) and on_other.tolist() == x.tolist()
    on_cpu[0, 0] = 100.0  # a transfer copies, as from a real device
    assert x.tolist()[0][0] == 1.0


# --- asking for a device that cannot run -------------------------------------------------------------------

def test_unknown_device_raises_with_reason() -> None:
    dev = Device("nosuch:0")  # building a device is cheap and never fails for a well-formed name
    with pytest.raises(BackendUnavailableError, match=r"no backend named 'nosuch'"):
        candle.zeros(2, device=dev)


@pytest.mark.parametrize("name, text_from", [("broken_import", "IMPORT_ERROR"), ("broken_probe", "PROBE_ERROR")])
def test_failed_plugin_device_raises_with_its_reason(name: str, text_from: str) -> None:
    import candle_brokenplugin

    with pytest.raises(BackendUnavailableError) as info:
        candle.ones(1, device=name)
    assert getattr(candle_brokenplugin, text_from) in str(info.value)


def test_device_index_beyond_the_count_raises() -> None:
    with pytest.raises(BackendUnavailableError, match=r"2 device"):
        candle.zeros(1, device="countdev:2")


@pytest.mark.parametrize("spec", ["cuda:0", "opencl:0"])
def test_gpu_device_unavailable_says_why(spec: str) -> None:
    kind = spec.split(":")[0]
    info = {i.name: i for i in candle.backends()}.get(kind)
    if info is not None and info.state == "available":
        pytest.skip(f"{kind} is available here")
    with pytest.raises(BackendUnavailableError) as err:
        candle.zeros(2, device=spec)
    msg = str(err.value)
    assert spec in msg
    if info is None:
        assert f"no backend named {kind!r}" in msg and f"candle-{kind}" in msg
    else:
        assert info.reason and info.reason in msg


# --- the first-party skeleton plugins, without their libraries ---------------------------------------------

def _fake_module(name: str, **attrs: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def test_cuda_probe_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = pytest.importorskip("candle_cuda.plugin")
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"cupy is not installed: pip install .*candle-core\[cuda\]"):
        plugin._probe()

    def no_driver() -> int:
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    runtime = types.SimpleNamespace(getDeviceCount=no_driver)
    monkeypatch.setitem(sys.modules, "cupy", _fake_module("cupy", cuda=types.SimpleNamespace(runtime=runtime)))
    with pytest.raises(BackendUnavailableError, match=r"cudaErrorInsufficientDriver"):
        plugin._probe()
    runtime.getDeviceCount = lambda: 0
    with pytest.raises(BackendUnavailableError, match=r"no CUDA device"):
        plugin._probe()
    runtime.getDeviceCount = lambda: 2
    assert plugin._probe() == 2
    [spec] = plugin.candle_backends()
    assert spec.name == "cuda" and spec.priority > 10  # above opencl: CANDLE_DEVICE=auto picks a GPU


def test_opencl_probe_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = pytest.importorskip("candle_opencl.plugin")
    monkeypatch.delenv("CANDLE_OPENCL_PLATFORM", raising=False)
    monkeypatch.delenv("CANDLE_OPENCL_DEVICE", raising=False)
    monkeypatch.setitem(sys.modules, "pyopencl", None)
    with pytest.raises(BackendUnavailableError,
                       match=re.escape('pyopencl is not installed: pip install "candle-core[opencl]" '
                                       'pocl-binary-distribution')):
        plugin._probe()

    class Platform:
        def __init__(self, name: str, devices: list[str] | Exception) -> None:
            self.name, self._devices = name, devices

        def get_devices(self) -> list[str]:
            if isinstance(self._devices, Exception):
                raise self._devices
            return self._devices

    platforms: list[Platform] | Exception = RuntimeError("clGetPlatformIDs failed: PLATFORM_NOT_FOUND_KHR")

    def get_platforms() -> list[Platform]:
        if isinstance(platforms, Exception):
            raise platforms
        return platforms

    monkeypatch.setitem(sys.modules, "pyopencl", _fake_module("pyopencl", get_platforms=get_platforms))
    with pytest.raises(BackendUnavailableError, match=r"no OpenCL platform.*PLATFORM_NOT_FOUND_KHR"):
        plugin._probe()
    platforms = []
    with pytest.raises(BackendUnavailableError, match=r"no OpenCL platform"):
        plugin._probe()
    platforms = [Platform("Empty", RuntimeError("DEVICE_NOT_FOUND"))]
    with pytest.raises(BackendUnavailableError, match=r"no OpenCL device.*DEVICE_NOT_FOUND"):
        plugin._probe()
    platforms = [Platform("Portable Computing Language", ["cpu0"]), Platform("NVIDIA CUDA", ["gpu0", "gpu1"])]
    assert plugin._probe() == 3
    monkeypatch.setenv("CANDLE_OPENCL_PLATFORM", "nvidia")
    assert plugin._probe() == 2
    monkeypatch.setenv("CANDLE_OPENCL_PLATFORM", "0")
    assert plugin._probe() == 1
    monkeypatch.setenv("CANDLE_OPENCL_PLATFORM", "amd")
    with pytest.raises(BackendUnavailableError, match=r"CANDLE_OPENCL_PLATFORM='amd'"):
        plugin._probe()
    monkeypatch.delenv("CANDLE_OPENCL_PLATFORM")

    class Dev:
        def __init__(self, name: str) -> None:
            self.name = name

    platforms = [Platform("Portable Computing Language", [Dev("pthread-cpu")]),
                 Platform("NVIDIA CUDA", [Dev("NVIDIA H100"), Dev("NVIDIA A10")])]
    monkeypatch.setenv("CANDLE_OPENCL_DEVICE", "a10")
    assert [d.name for d in plugin.devices()] == ["NVIDIA A10"]
    monkeypatch.setenv("CANDLE_OPENCL_DEVICE", "1")
    assert [d.name for d in plugin.devices()] == ["NVIDIA H100"]
    monkeypatch.setenv("CANDLE_OPENCL_DEVICE", "tpu")
    with pytest.raises(BackendUnavailableError, match=r"CANDLE_OPENCL_DEVICE='tpu'"):
        plugin._probe()


def test_first_party_plugin_modules_are_light() -> None:
    mods = set(run_json("""
        import json, sys, importlib
        for name in ("candle_cuda.plugin", "candle_opencl.plugin", "candle_countdev.plugin"):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError:
                pass
        print(json.dumps(sorted(sys.modules)))
    """))
    for name in ("cupy", "pyopencl", "numpy", "candle_countdev.backend", "candle.cpu.backend"):
        assert name not in mods, f"a plugin module imported {name}"


# --- environment switches ----------------------------------------------------------------------------------

def test_disable_plugins_excludes_without_importing() -> None:
    out = run_json("""
        import json, sys, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import candle
            rows = {b.name: [b.state, b.reason] for b in candle.backends()}
            try:
                candle.zeros(1, device="countdev")
                err = None
            except candle.BackendUnavailableError as e:
                err = str(e)
        print(json.dumps(dict(rows=rows, err=err, imported="candle_countdev" in sys.modules,
                              warnings=[str(w.message) for w in caught if "candle" in str(w.message)])))
    """, CANDLE_DISABLE_PLUGINS=" CountDev , broken_import,broken_probe")
    assert out["rows"]["countdev"][0] == "excluded"
    assert "CANDLE_DISABLE_PLUGINS" in out["rows"]["countdev"][1]
    assert out["rows"]["broken_import"][0] == "excluded"
    assert out["rows"]["broken_probe"][0] == "excluded"
    assert out["rows"]["cpu"][0] == "available"
    assert out["imported"] is False
    assert out["err"] is not None and "CANDLE_DISABLE_PLUGINS" in out["err"]
    assert out["warnings"] == []  # a disabled broken plugin is silent


@pytest.mark.parametrize("env, expected", [("countdev", "countdev:0"), ("countdev:1", "countdev:1"),
                                           ("cpu", "cpu"), ("auto", "cpu")])
def test_candle_device_env_picks_the_device_of_new_tensors(env: str, expected: str) -> None:
    out = run_json("""
        import json, candle
        t = candle.zeros(2) + candle.tensor([1.0, 2.0])
        print(json.dumps(dict(default=str(candle.default_device()), zeros=str(t.device),
                              arange=str(candle.arange(3).device), randn=str(candle.randn(2, 2).device),
                              backend=type(t.device.backend).__name__, value=t.tolist())))
    """, CANDLE_DEVICE=env)
    if env == "auto":  # the available backend of highest priority: cpu, unless e.g. an OpenCL device is present
        infos = [i for i in candle.backends() if i.state == "available"]
        best = max(infos, key=lambda i: i.priority).name
        expected = "cpu" if best == "cpu" else f"{best}:0"
    assert out["default"] == out["zeros"] == out["arange"] == out["randn"] == expected
    if expected.startswith(("cpu", "countdev")):
        assert out["backend"] == ("CountingBackend" if expected.startswith("countdev") else "NumpyBackend")
    assert out["value"] == [1.0, 2.0]


def test_candle_device_env_unavailable_raises_on_use() -> None:
    proc = run_py("""
        import candle
        try:
            candle.zeros(2)
        except candle.BackendUnavailableError as e:
            print("raised:", e)
    """, CANDLE_DEVICE="nosuch")
    assert proc.returncode == 0, proc.stderr
    assert "raised:" in proc.stdout and "nosuch" in proc.stdout


# --- device strings ----------------------------------------------------------------------------------------

def test_device_strings_parse() -> None:
    assert Device("cuda") == Device("cuda:0")
    assert Device("cuda") == "cuda:0" and Device("cuda:0") == "cuda"
    assert Device("cuda") is Device("cuda:0") is Device("cuda", 0)
    assert Device("CUDA:1") is Device("cuda", 1) and Device("cuda:1").index == 1
    assert Device(" opencl:2 ").type == "opencl" and Device(" opencl:2 ").index == 2
    assert Device("cuda:1") != Device("cuda:0") and Device("cuda") != "cpu" and Device("cpu") != "not a device!"
    assert str(Device("cuda")) == "cuda:0" and str(Device("cpu")) == "cpu"
    assert repr(Device("cuda:1")) == "device(type='cuda', index=1)"
    assert Device(Device("opencl:1")) is Device("opencl:1")
    assert Device("my_plugin:3").type == "my_plugin"
    assert len({Device("cuda"), Device("cuda:0"), Device("cuda", 0)}) == 1
    import pickle

    assert pickle.loads(pickle.dumps(Device("cuda:3"))) is Device("cuda:3")


@pytest.mark.parametrize("spec", [
    "", " ", ":0", "cuda:x", "cuda:-1", "cuda:0:1", "cu da", "cuda 0", "cuda:1.5",
    "é:0", "cuda:", "42",
])
def test_bad_device_strings_raise(spec: str) -> None:
    with pytest.raises(DeviceError):
        Device(spec)


@pytest.mark.parametrize("index", [-1, 1.5, True])
def test_bad_device_index_raises(index: object) -> None:
    with pytest.raises(DeviceError):
        Device("cuda", index)  # type: ignore[arg-type]


def test_device_index_twice_raises() -> None:
    with pytest.raises(DeviceError, match="already names an index"):
        Device("cuda:0", 1)


# --- the `candle` command ----------------------------------------------------------------------------------

def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("candle_models")
    return subprocess.run([sys.executable, "-m", "candle_models", *args], env=clean_env(**env),
                          capture_output=True, text=True, timeout=300)


def test_cli_backends_lists_states() -> None:
    proc = _cli("backends")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert re.search(r"\bavailable\b.*1 device", lines["cpu"])
    assert re.search(r"\bavailable\b.*2 device", lines["countdev"])
    assert re.search(r"\bfailed\b.*ImportError", lines["broken_import"])
    assert re.search(r"\bfailed\b.*RuntimeError", lines["broken_probe"])
    assert "Warning" not in proc.stderr  # the table already tells about the broken plugins


def test_cli_backends_shows_excluded_and_default_device() -> None:
    proc = _cli("backends", CANDLE_DISABLE_PLUGINS="countdev", CANDLE_DEVICE="cpu")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^countdev\s+excluded\b", proc.stdout, re.M)
    assert "default device: cpu" in proc.stdout


def test_cli_console_script() -> None:
    pytest.importorskip("candle_models")
    script = Path(sys.executable).parent / ("candle.exe" if os.name == "nt" else "candle")
    if not script.exists():
        pytest.skip("the `candle` console script is not next to this interpreter")
    proc = subprocess.run([str(script), "backends"], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^cpu\s+available\b", proc.stdout, re.M)


@pytest.mark.parametrize("device", ["cpu", "countdev:1"])
def test_cli_demo_fits_and_loss_goes_down(device: str) -> None:
    proc = _cli("demo", "--device", device, "--steps", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"demo on {device}" in proc.stdout
    losses = [float(x) for x in re.findall(r"step\s+\d+\s+loss ([0-9.e+-]+)", proc.stdout)]
    assert len(losses) >= 3 and losses[-1] < losses[0] / 100, proc.stdout
    assert "softmax" in proc.stdout


def test_cli_demo_unavailable_device_fails_with_reason() -> None:
    proc = _cli("demo", "--device", "nosuch")
    assert proc.returncode == 1
    assert "no backend named 'nosuch'" in proc.stderr
