"""The parallel accuracy driver's scheduling maths (bench/accuracy_parallel.py): which jobs to stop so the
important runs finish before a lease ends."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from accuracy_parallel import epoch_rate, finish_time, parse_job, stops_needed, steps_per_epoch  # noqa: E402


def test_finish_time_shares_the_device_equally():
    # two jobs of 100 and 300 steps at 10 steps/s in all: 5 steps/s each until the first ends at 20 s,
    # then the second gets all 10 steps/s for its last 200 steps
    assert finish_time([100, 300], capacity=10) == pytest.approx(40)
    assert finish_time([400], capacity=10) == pytest.approx(40)       # same work, same total: work-conserving


def test_finish_time_respects_one_process_cap():
    # alone, a job cannot use more than its own cap, however idle the device
    assert finish_time([600], capacity=120, cap=60) == pytest.approx(10)
    assert finish_time([100, 300], capacity=10, cap=4) == pytest.approx(75)   # 4 each for 25 s, then 200 at 4
    assert finish_time([], capacity=10) == 0


def test_stops_needed_drops_lowest_priority_first_and_never_the_first():
    work = [1000, 1000, 1000, 1000]                  # steps left, highest priority first
    assert stops_needed(work, capacity=100, time_left=41) == 0     # 4000 steps at 100/s: 40 s
    assert stops_needed(work, capacity=100, time_left=31) == 1
    assert stops_needed(work, capacity=100, time_left=10) == 3     # even the first alone is late: keep it
    # a cap makes one long job the limit even when the total fits
    assert stops_needed([3000, 100], capacity=100, time_left=35) == 0
    assert stops_needed([3000, 100], capacity=100, time_left=35, cap=50) == 1


def test_epoch_rate_skips_start_up_and_uses_the_recent_window():
    samples = [(0, 0), (20, 1), (30, 2), (40, 4), (50, 6), (100, 16)]
    assert epoch_rate(samples, now=100, window=60) == pytest.approx((16 - 4) / 60)
    assert epoch_rate(samples[:3], now=30) is None                 # one usable sample
    assert epoch_rate([(0, 2), (10, 2)], now=10) is None           # no progress yet


def test_steps_per_epoch_and_job_parsing(tmp_path):
    (tmp_path / "log.txt").write_text("2026-01-01 start epoch 1: cifar10_lt resnet32 causal_norm on cuda x1, 48 steps/epoch\n")
    assert steps_per_epoch(tmp_path) == 48
    assert steps_per_epoch(tmp_path / "missing") is None
    assert parse_job("100:causal_norm:1") == {"ratio": 100.0, "head": "causal_norm", "seed": 1, "tag": "r100_causal_norm_s1"}
    with pytest.raises(SystemExit, match="RATIO:HEAD:SEED"):
        parse_job("100-causal")
