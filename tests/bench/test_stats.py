"""The benchmarks' percentile is the nearest-rank one, which their tables quote."""

from __future__ import annotations

import random

from bench.stats import percentile


def test_p99_of_a_hundred_samples_is_the_99th_not_the_maximum() -> None:
    samples = list(range(1, 101))
    random.Random(7).shuffle(samples)
    assert percentile(samples, 99) == 99
    assert percentile(samples, 50) == 50
    assert percentile(samples, 100) == 100


def test_nearest_rank_edges() -> None:
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3], 0) == 1
    assert percentile([1, 2, 3], 34) == 2
    assert percentile(list(range(1, 1001)), 99) == 990
