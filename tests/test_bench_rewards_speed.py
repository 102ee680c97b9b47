"""benchmarks/rewards_speed.py: its --quick smoke variant runs and prints the JSON it promises."""

from __future__ import annotations


def test_rewards_speed_quick(bench_quick):
    results = bench_quick("rewards_speed")
    assert results["cider_d_max_abs_difference"]["vs_pycocoevalcap"] < 1e-6
