"""candle-countdev: a test backend plugin that runs candle's numpy kernels on the device `countdev`
and counts every kernel call. Importing this package is light: numpy loads on first use of the device.

    import candle, candle_countdev
    x = candle.ones(3, device="countdev")
    candle_countdev.reset(); (x + x).sum()
    candle_countdev.counts()   # {'binary': 1, 'reduce': 1}
"""

from __future__ import annotations

from ._counter import counts, reset, total

__all__ = ["counts", "reset", "total", "DEVICES"]
__version__ = "0.1.0"

DEVICES = 2  # countdev:0 and countdev:1, so that tests can move tensors between two devices of one type
