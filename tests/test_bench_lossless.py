"""bench/lossless.py: how many timing rounds a row gets."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import lossless  # noqa: E402


class Clock:
    """A clock that moves by ``step`` seconds each time a round is timed."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        return self.now

    def round(self):
        self.now += self.step
        return (1.0, 0.9)


def test_short_rounds_repeat_until_the_minimum_time():
    clock = Clock(0.8)
    out = lossless.timed_rounds(clock.round, 3, 10.0, clock=clock)
    assert len(out) == 13  # 12 rounds reach 9.6 s, the 13th passes 10 s
    assert clock.now >= 10.0


def test_long_rounds_stop_at_the_fewest_asked_for():
    clock = Clock(30.0)
    assert len(lossless.timed_rounds(clock.round, 3, 10.0, clock=clock)) == 3


def test_tiny_rounds_stop_at_the_cap():
    clock = Clock(0.001)
    assert len(lossless.timed_rounds(clock.round, 3, 10.0, clock=clock)) == lossless.MAX_ROUNDS


def test_no_minimum_time_gives_exactly_the_rounds_asked_for():
    clock = Clock(0.8)
    assert len(lossless.timed_rounds(clock.round, 5, 0.0, clock=clock)) == 5


def test_fewer_than_one_round_is_refused():
    import subprocess

    done = subprocess.run([sys.executable, "-m", "bench.lossless", "--rounds", "0"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "--rounds must be at least 1" in done.stderr
