"""The plugin registry: finds backends through `candle.backends` entry points, lazily.

Policy (after JAX's): a plugin that fails to import, or whose hook or probe raises, is recorded
with its reason and skipped with one warning; a device asked for by name that is unavailable
raises `BackendUnavailableError` saying why. `$CANDLE_DISABLE_PLUGINS` (comma-separated entry
point or backend names) excludes plugins without importing them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import BackendUnavailableError, CandleError

if TYPE_CHECKING:
    from .backend import Backend
    from .device import Device
    from .plugin import BackendSpec


@dataclass
class BackendInfo:
    """One row of `candle.backends()`: a backend (or a plugin that yielded none) and its state.

    state is one of `available`, `unavailable`, `failed`, `excluded`.
    """

    name: str
    plugin: str
    state: str
    reason: str = ""
    devices: int = 0
    priority: int = 0
    spec: BackendSpec | None = field(default=None, repr=False)

    def __str__(self) -> str:
        detail = f"{self.devices} device(s)" if self.state == "available" else self.reason
        return f"{self.name:<12} {self.state:<12} plugin={self.plugin:<16} {detail}"


_infos: dict[str, BackendInfo] | None = None  # backend name -> info
_plugin_failures: list[BackendInfo] = []  # plugins that yielded no backend
_instances: dict[tuple[str, int], Backend] = {}
_manual: list[tuple[str, Any]] = []


def _disabled() -> set[str]:
    raw = os.environ.get("CANDLE_DISABLE_PLUGINS", "")
    return {p.strip().lower() for p in raw.split(",") if p.strip()}


_pending: list[str] = []


def _warn(msg: str) -> None:
    """Queue a warning; `_flush_warnings` emits it once the registry's state is consistent."""
    _pending.append(msg)


def _flush_warnings() -> None:
    """Emit queued warnings at the first frame outside candle (so they point at user code)."""
    import sys

    pkg = os.path.dirname(__file__) + os.sep
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(pkg):
        frame, level = frame.f_back, level + 1
    while _pending:
        warnings.warn(_pending.pop(0), RuntimeWarning, stacklevel=level)


def register_plugin(plugin: Any, name: str) -> None:
    """Register a plugin object (a module or object with `candle_backends`) without an entry point."""
    global _infos
    _manual.append((name, plugin))
    _infos = None  # rescan on next use
    _instances.clear()


def _discover() -> dict[str, BackendInfo]:
    global _infos
    if _infos is not None:
        return _infos
    from importlib.metadata import entry_points

    import pluggy

    from .plugin import ENTRY_POINT_GROUP, PROJECT, HookSpecs

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(HookSpecs)
    disabled = _disabled()
    infos: dict[str, BackendInfo] = {}
    _plugin_failures.clear()
    found: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen:
            continue  # the same distribution seen twice on sys.path
        seen.add(ep.name)
        if ep.name.lower() in disabled:
            _plugin_failures.append(BackendInfo(ep.name, ep.name, "excluded", "listed in $CANDLE_DISABLE_PLUGINS"))
            continue
        try:
            found.append((ep.name, ep.load()))
        except Exception as e:  # noqa: BLE001 - isolation is the point
            reason = f"import of {ep.value!r} failed: {type(e).__name__}: {e}"
            _plugin_failures.append(BackendInfo(ep.name, ep.name, "failed", reason))
            _warn(f"candle: skipping backend plugin {ep.name!r}: {reason}")
    found.extend(_manual)
    for plugin_name, module in found:
        try:
            pm.register(module, name=plugin_name)
            impls = [i for i in pm.hook.candle_backends.get_hookimpls() if i.plugin_name == plugin_name]
            specs = [s for impl in impls for s in impl.function()]
        except Exception as e:  # noqa: BLE001
            reason = f"its candle_backends hook raised {type(e).__name__}: {e}"
            _plugin_failures.append(BackendInfo(plugin_name, plugin_name, "failed", reason))
            _warn(f"candle: skipping backend plugin {plugin_name!r}: {reason}")
            continue
        for spec in specs:
            if spec.name.lower() in disabled:
                infos[spec.name] = BackendInfo(spec.name, plugin_name, "excluded", "listed in $CANDLE_DISABLE_PLUGINS")
                continue
            old = infos.get(spec.name)
            if old is not None and old.priority >= spec.priority:
                _warn(f"candle: backend {spec.name!r} from plugin {plugin_name!r} ignored: plugin {old.plugin!r} "
                      "already provides it")
                continue
            infos[spec.name] = BackendInfo(spec.name, plugin_name, "unprobed", priority=spec.priority, spec=spec)
    _infos = infos
    _flush_warnings()
    return infos


def _probe(info: BackendInfo, warn: bool) -> BackendInfo:
    if info.state != "unprobed" or info.spec is None:
        return info
    try:
        n = int(info.spec.probe())
        info.state, info.devices = ("available", n) if n > 0 else ("unavailable", 0)
        if n <= 0:
            info.reason = "the probe found no device"
    except BackendUnavailableError as e:
        info.state, info.reason = "unavailable", str(e)
    except Exception as e:  # noqa: BLE001
        info.state, info.reason = "failed", f"probe raised {type(e).__name__}: {e}"
        if warn:
            _warn(f"candle: skipping backend {info.name!r}: {info.reason}")
    return info


def backends() -> list[BackendInfo]:
    """Every backend plugin found, probed, with its state and the reason when it cannot run."""
    infos = [_probe(i, warn=True) for i in _discover().values()]
    _flush_warnings()
    return sorted(infos, key=lambda i: (-i.priority, i.name)) + list(_plugin_failures)


def best_available_type() -> str:
    """The available backend of highest priority (cpu when nothing else runs)."""
    ok = [i for i in backends() if i.state == "available"]
    return ok[0].name if ok else "cpu"


def backend_for(device: Device) -> Backend:
    """The backend instance for `device`, built on first use; raises with the reason if it cannot run."""
    key = (device.type, device.index)
    inst = _instances.get(key)
    if inst is not None:
        return inst
    infos = _discover()
    info = infos.get(device.type)
    if info is None:
        failed = [f for f in _plugin_failures if f.name == device.type or device.type in f.name]
        why = f": {failed[0].reason}" if failed else ""
        known = ", ".join(sorted(infos)) or "none"
        raise BackendUnavailableError(
            f"device {device} is unavailable: no backend named {device.type!r} is registered{why} "
            f"(registered: {known}; a backend package such as candle-{device.type} adds it)"
        )
    _probe(info, warn=False)
    if info.state != "available":
        raise BackendUnavailableError(f"device {device} is unavailable ({info.state}): {info.reason}")
    if device.index >= info.devices:
        raise BackendUnavailableError(
            f"device {device} is unavailable: backend {device.type!r} has {info.devices} device(s)"
        )
    assert info.spec is not None
    try:
        inst = info.spec.factory(device.index)
    except CandleError:
        raise
    except Exception as e:  # noqa: BLE001
        raise BackendUnavailableError(
            f"device {device} is unavailable: its backend failed to start: {type(e).__name__}: {e}"
        ) from e
    _instances[key] = inst
    return inst


def reset() -> None:
    """Forget discovered plugins and built backends (tests use it after changing the environment)."""
    global _infos
    _infos = None
    _instances.clear()
    _plugin_failures.clear()
    from .device import Device

    for dev in Device._interned.values():
        dev._backend = None
