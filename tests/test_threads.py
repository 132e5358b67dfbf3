"""The BLAS thread count: `candle.get_num_threads` / `set_num_threads` and the decode-time `ThreadTuner`."""

from __future__ import annotations

import pytest

import candle
from candle_models.threads import ThreadTuner


class FakeMachine:
    """A clock whose steps last `cost[threads]` seconds, and the thread setting the tuner changes."""

    def __init__(self, cost: dict[int, float], threads: int) -> None:
        self.cost, self.threads, self.now, self.sets = dict(cost), threads, 0.0, 0

    def set(self, n: int) -> None:
        self.threads = n
        self.sets += 1

    def clock(self) -> float:
        return self.now

    def run(self, tuner: ThreadTuner, steps: int) -> list[int]:
        """`steps` decode steps; the thread count of each."""
        seen = []
        for _ in range(steps):
            self.now += self.cost[self.threads]
            seen.append(self.threads)
            tuner.step()
        return seen


def test_tuner_keeps_the_faster_count_and_follows_the_load() -> None:
    m = FakeMachine({2: 0.020, 1: 0.026}, threads=2)  # an idle machine: 2 threads win
    t = ThreadTuner([2, 1], m.set, window=3, period=8, max_period=32, clock=m.clock)
    m.run(t, 40)
    assert t.chosen == 2 and t.estimate[2] == pytest.approx(0.020) and t.estimate[1] == pytest.approx(0.026)
    assert t.period > 8  # the choice held: checks become rarer
    m.cost[2] = 0.200  # another process takes a core: 2 threads collapse
    seen = m.run(t, 120)
    assert t.chosen == 1 and t.switches == 1 and seen[-40:].count(1) >= 30  # probes of 2 threads are short
    m.cost[2] = 0.020  # it leaves again
    m.run(t, 200)
    assert t.chosen == 2 and t.switches == 2
    t.close()
    assert m.threads == 2


def test_tuner_drops_a_hopeless_count_early_and_carries_over_between_runs() -> None:
    m = FakeMachine({2: 0.200, 1: 0.030}, threads=2)  # a busy machine: 2 threads collapse
    t = ThreadTuner([2, 1], m.set, window=4, clock=m.clock)
    t.begin()
    seen = m.run(t, 60)
    t.close()
    assert t.chosen == 1 and seen.count(2) <= 6 and m.threads == 2  # the start, a settling step, a window
    assert t.period >= 100  # probing a 7x slower count must stay a small share of the time
    t.begin()  # the next generation starts on the choice, not on the original count
    assert m.threads == 1
    m.now += 5.0  # time between generations is not a step
    assert m.run(t, 20) == [1] * 20
    t.close()


def test_tuner_time_spent_on_the_slower_count_is_small() -> None:
    m = FakeMachine({2: 0.020, 1: 0.026}, threads=2)
    t = ThreadTuner([2, 1], m.set, clock=m.clock)
    seen = m.run(t, 1000)
    assert seen.count(1) < 0.05 * len(seen)


def test_tuner_margin_and_close_restores() -> None:
    m = FakeMachine({2: 0.020, 1: 0.0195}, threads=2)  # 1 thread barely faster: not worth a switch
    t = ThreadTuner([2, 1], m.set, window=3, period=8, clock=m.clock)
    m.run(t, 50)
    assert t.chosen == 2
    m.cost[1] = 0.010
    m.run(t, 100)
    assert t.chosen == 1 and m.threads == 1
    t.close()
    assert m.threads == 2 and t.current == 2


def test_tuner_rejects_duplicate_counts_and_skips_other_devices() -> None:
    with pytest.raises(ValueError, match="distinct"):
        ThreadTuner([1, 1], lambda n: None)
    assert ThreadTuner.for_device(candle.Device("countdev")) is None


def test_num_threads_round_trip() -> None:
    pytest.importorskip("threadpoolctl")
    n = candle.get_num_threads()
    assert n >= 1
    try:
        candle.set_num_threads(1)
        assert candle.get_num_threads() == 1
        x = candle.randn(64, 64)
        assert (x @ x).shape == (64, 64)
    finally:
        candle.set_num_threads(n)
    assert candle.get_num_threads() == n
    with pytest.raises(ValueError):
        candle.set_num_threads(0)
