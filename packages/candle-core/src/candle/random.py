"""Seedable random streams. A `Generator` hands each random op a fresh 64-bit seed; backends turn
that seed into numbers with their own generator, so a seed reproduces results on one backend."""

from __future__ import annotations

import os

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class Generator:
    """A random stream: `candle.randn(3, generator=candle.Generator(seed=0))`."""

    def __init__(self, seed: int | None = None):
        self.manual_seed(int.from_bytes(os.urandom(8), "little") if seed is None else seed)

    def manual_seed(self, seed: int) -> Generator:
        self._seed = int(seed) & _MASK
        self._counter = 0
        return self

    def initial_seed(self) -> int:
        return self._seed

    def next_seed(self) -> int:
        """The seed for the next random op (advances the stream)."""
        self._counter += 1
        return _splitmix64(self._seed ^ _splitmix64(self._counter))

    def get_state(self) -> tuple[int, int]:
        return (self._seed, self._counter)

    def set_state(self, state: tuple[int, int]) -> None:
        self._seed, self._counter = int(state[0]) & _MASK, int(state[1])


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed the default generator (like `torch.manual_seed`)."""
    return default_generator.manual_seed(seed)


def seed() -> int:
    """Re-seed the default generator from the OS and return the seed."""
    s = int.from_bytes(os.urandom(8), "little")
    default_generator.manual_seed(s)
    return s
