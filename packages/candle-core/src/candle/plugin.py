"""What a backend plugin imports: the pluggy markers and `BackendSpec`.

A plugin is a module named by an entry point in the group `candle.backends`::

    # pyproject.toml
    [project.entry-points."candle.backends"]
    mydev = "candle_mydev.plugin"

    # candle_mydev/plugin.py  (keep it light: no heavy import at module level)
    from candle.plugin import BackendSpec, hookimpl

    @hookimpl
    def candle_backends():
        return [BackendSpec(name="mydev", factory=_make, probe=_probe)]

    def _probe() -> int:            # number of devices; raise BackendUnavailableError(reason)
        return 1

    def _make(index: int):          # called on first use of "mydev:<index>"
        from candle_mydev.backend import MyBackend   # the heavy import happens here
        return MyBackend(index)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .backend import Backend

PROJECT = "candle"
ENTRY_POINT_GROUP = "candle.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class BackendSpec:
    """A light description of a backend: nothing heavy is imported until `factory` runs.

    name: the device type users write (`"cuda"` in `"cuda:0"`).
    factory: builds the backend for one device index; may import the heavy library.
    probe: returns how many devices exist, or raises `BackendUnavailableError(reason)`.
        It may import the heavy library too; it runs only when the device is first used or
        `candle.backends()` is called.
    priority: larger wins when `CANDLE_DEVICE=auto` picks a device.
    """

    name: str
    factory: Callable[[int], Backend]
    probe: Callable[[], int] = lambda: 1
    priority: int = 0
    description: str = ""


class HookSpecs:
    """The hooks a `candle.backends` plugin may implement."""

    @hookspec
    def candle_backends(self) -> list[BackendSpec]:  # type: ignore[empty-body]
        """Return the backends this plugin provides."""
