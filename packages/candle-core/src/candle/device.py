"""Devices: `Device("cpu")`, `Device("opencl:0")`, `Device("cuda:1")`; one instance per name."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .errors import DeviceError

if TYPE_CHECKING:
    from .backend import Backend


class Device:
    """A device: a backend type (`cpu`, `cuda`, `opencl`, a plugin's name) and an index.

    `Device("cuda")` means `cuda:0`. The backend behind a device is loaded on first use, so
    building a `Device` is cheap; `device.backend` raises `BackendUnavailableError` with the
    reason when the device cannot run here.
    """

    __slots__ = ("type", "index", "_backend")
    _interned: dict[tuple[str, int], Device] = {}

    type: str
    index: int
    _backend: Backend | None

    def __new__(cls, spec: Any = "cpu", index: int | None = None) -> Device:
        if isinstance(spec, Device):
            return spec
        if not isinstance(spec, str):
            spec = str(spec)  # torch.device and the like
        name, colon, idx = spec.strip().lower().partition(":")
        if colon:
            if index is not None:
                raise DeviceError(f"device {spec!r} already names an index; got index={index} too")
            if not (idx.isascii() and idx.isdigit()):
                raise DeviceError(f"bad device string {spec!r}: expected 'type' or 'type:N', e.g. 'cuda:0'")
            index = int(idx)
        elif index is not None and (type(index) is not int or index < 0):
            raise DeviceError(f"bad device index {index!r} for {spec!r}: expected a non-negative int")
        if not (name.isascii() and name[:1].isalpha() and name.replace("_", "").isalnum()):
            raise DeviceError(f"bad device string {spec!r}: expected 'type' or 'type:N', e.g. 'cuda:0'")
        if name == "auto":
            return default_device() if index is None else Device(_best_type(), index)
        key = (name, index or 0)
        dev = cls._interned.get(key)
        if dev is None:
            dev = object.__new__(cls)
            dev.type, dev.index, dev._backend = key[0], key[1], None
            cls._interned[key] = dev
        return dev

    @property
    def backend(self) -> Backend:
        """The backend instance that runs this device (loaded on first use)."""
        b = self._backend
        if b is None:
            from . import registry

            b = self._backend = registry.backend_for(self)
        return b

    def __repr__(self) -> str:
        return f"device(type='{self.type}', index={self.index})"

    def __str__(self) -> str:
        return self.type if self.type == "cpu" and self.index == 0 else f"{self.type}:{self.index}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except DeviceError:
                return False
        return self is other

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Device, (str(self),))


_default: Device | None = None


def _best_type() -> str:
    from . import registry

    return registry.best_available_type()


def default_device() -> Device:
    """The device of new tensors: `set_default_device`, else `$CANDLE_DEVICE`, else cpu.

    `CANDLE_DEVICE=auto` picks the available backend of highest priority.
    """
    global _default
    if _default is None:
        spec = os.environ.get("CANDLE_DEVICE", "").strip() or "cpu"
        _default = Device(_best_type()) if spec == "auto" else Device(spec)
    return _default


def set_default_device(device: Device | str | None) -> None:
    """Set the device of new tensors; `None` goes back to `$CANDLE_DEVICE` / cpu."""
    global _default
    _default = None if device is None else Device(device)


def as_device(device: Device | str | None) -> Device:
    """A `Device` from a device, a string, or None (the default device)."""
    if device is None:
        return default_device()
    if isinstance(device, Device):
        return device
    return Device(device)
