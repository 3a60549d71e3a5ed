"""The statistics of compare: exact McNemar, Holm's correction, the paired bootstrap."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from components.compare.stats import (
    bootstrap_difference,
    compare_pairs,
    holm,
    mcnemar_exact,
)


def binomial_two_sided(b: int, c: int) -> float:
    """Reference: the exact two-sided binomial test summed in floating point."""
    n = b + c
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (10, 2, 0.0386),  # textbook example: 2 * 79 / 4096
        (2, 10, 0.0386),  # symmetric
        (5, 5, 1.0),
        (0, 0, 1.0),
        (0, 6, 0.03125),  # 2 / 64
        (0, 5, 0.0625),  # 2 / 32
        (1, 7, 0.0703),  # 2 * 9 / 256
    ],
)
def test_mcnemar_exact_matches_known_values(b, c, expected):
    assert mcnemar_exact(b, c) == pytest.approx(expected, abs=5e-5)


def test_mcnemar_exact_is_exact_for_large_counts():
    # Thousands of discordant images: the integer sum must neither overflow nor underflow.
    assert mcnemar_exact(1000, 1100) == pytest.approx(binomial_two_sided(1000, 1100), rel=1e-12)
    assert 0.0 < mcnemar_exact(4000, 4400) < 1e-4
    assert mcnemar_exact(3000, 3001) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 3)


def test_holm_adjusts_in_the_order_given_and_stays_monotone():
    assert holm([0.01]) == [0.01]
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_bootstrap_interval_brackets_the_difference_and_is_seeded():
    rng = np.random.default_rng(1)
    first = rng.random(2000) < 0.80
    second = rng.random(2000) < 0.85
    low, high = bootstrap_difference(first, second)
    observed = second.mean() - first.mean()
    assert low < observed < high
    # Normal approximation of the paired difference's standard error.
    d = second.astype(int) - first.astype(int)
    se = d.std() / math.sqrt(len(d))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_difference(first, second) == (low, high)


def test_bootstrap_is_fast_on_ten_thousand_images():
    rng = np.random.default_rng(2)
    first, second = rng.random(10_000) < 0.9, rng.random(10_000) < 0.9
    start = time.perf_counter()
    bootstrap_difference(first, second)
    assert time.perf_counter() - start < 0.5


def test_identical_predictions_give_a_zero_interval_and_no_significance():
    labels = np.arange(100) % 4
    (test,) = compare_pairs({"a": labels, "b": labels}, labels)
    assert test.p_value == 1.0 and test.ci_low == test.ci_high == 0.0
    assert not test.significant


def test_compare_pairs_counts_discordant_images_and_corrects_for_several_pairs():
    labels = np.zeros(200, int)
    a = np.zeros(200, int)
    a[:40] = 1  # a: 160 right
    b = np.zeros(200, int)
    b[:10] = 1  # b: 190 right; right where a is wrong on 30 images
    c = a.copy()  # c: the same as a
    tests = compare_pairs({"a": a, "b": b, "c": c}, labels)
    assert [(t.first, t.second) for t in tests] == [("a", "b"), ("a", "c"), ("b", "c")]
    ab, ac, bc = tests
    assert (ab.first_only_right, ab.second_only_right) == (0, 30)
    assert ab.accuracy_difference == pytest.approx(0.15)
    assert ab.p_value == pytest.approx(binomial_two_sided(0, 30))
    assert ab.p_value_holm == pytest.approx(3 * ab.p_value)  # the smallest of three
    assert ab.significant and bc.significant and not ac.significant
    assert ab.ci_low > 0 and bc.ci_high < 0
