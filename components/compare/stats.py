"""Statistics on a shared test set: is one accuracy really different from another one.

Two models predicted the same test images, so their results are paired image by image:

- `mcnemar_exact(b, c)`: the exact McNemar test. Only the discordant images count: `b` where the
  first model is right and the second wrong, `c` the other way round. Under the null hypothesis
  (equal accuracy) each discordant image is a fair coin, so the two-sided p-value is
  min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)]), computed exactly in integer arithmetic.
- `holm(p_values)`: Holm's step-down correction for testing several pairs of models at once.
- `bootstrap_difference(first, second)`: a paired bootstrap confidence interval of the accuracy
  difference (second - first), resampling test images with replacement.
- `compare_pairs(...)`: all three for every pair of models.

Pure Python and NumPy, no SciPy.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05  # the significance level of the report and the champion gate
CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 20240601  # the bootstrap is seeded: the same predictions give the same interval
TEST_NAME = "exact McNemar test (two-sided binomial on the discordant images)"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for `b` and `c` discordant images (1.0 when b == c)."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if b == c:
        return 1.0
    tail, term = 0, 1  # sum of C(n, i) for i <= min(b, c), exactly
    for i in range(min(b, c) + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, (2 * tail) / (1 << n))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given (each compared with ALPHA directly)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted


def bootstrap_difference(
    first_correct: np.ndarray,
    second_correct: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile interval of accuracy(second) - accuracy(first) by the paired bootstrap.

    Resampling n images with replacement only matters through how many of them are "second
    right, first wrong" (+1), "first right, second wrong" (-1) or neither (0), so each
    resample draws those three counts from a multinomial: the same distribution as resampling
    indices, in O(resamples) time and memory whatever the test-set size.
    """
    first = np.asarray(first_correct, bool)
    second = np.asarray(second_correct, bool)
    n = len(first)
    if n == 0 or len(second) != n:
        raise ValueError(f"need two equal, non-empty series, got {n} and {len(second)}")
    gains = int(np.sum(second & ~first))
    losses = int(np.sum(first & ~second))
    probabilities = np.array([gains, losses, n - gains - losses], float) / n
    counts = np.random.default_rng(seed).multinomial(n, probabilities, size=resamples)
    differences = (counts[:, 0] - counts[:, 1]) / n
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairTest:
    """One pair of models on the same test images; the difference is second - first."""

    first: str
    second: str
    images: int
    first_only_right: int  # McNemar's b
    second_only_right: int  # McNemar's c
    accuracy_difference: float
    p_value: float  # exact McNemar, uncorrected
    p_value_holm: float  # Holm-adjusted across every pair compared together
    ci_low: float
    ci_high: float
    significant: bool  # p_value_holm < ALPHA

    def to_dict(self) -> dict:
        """JSON-ready values."""
        return asdict(self)


def compare_pairs(
    predictions: Mapping[str, np.ndarray], labels: np.ndarray, *, seed: int = SEED
) -> list[PairTest]:
    """McNemar, Holm and bootstrap for every pair of `predictions` (name -> predicted labels)."""
    truth = np.asarray(labels)
    correct = {name: np.asarray(value) == truth for name, value in predictions.items()}
    pairs = list(itertools.combinations(correct, 2))
    raw = []
    for first, second in pairs:
        b = int(np.sum(correct[first] & ~correct[second]))
        c = int(np.sum(correct[second] & ~correct[first]))
        raw.append((b, c, mcnemar_exact(b, c)))
    adjusted = holm([p for _, _, p in raw])
    tests = []
    for (first, second), (b, c, p), p_holm in zip(pairs, raw, adjusted, strict=True):
        low, high = bootstrap_difference(correct[first], correct[second], seed=seed)
        tests.append(
            PairTest(
                first=first,
                second=second,
                images=len(truth),
                first_only_right=b,
                second_only_right=c,
                accuracy_difference=(c - b) / len(truth),
                p_value=p,
                p_value_holm=p_holm,
                ci_low=low,
                ci_high=high,
                significant=p_holm < ALPHA,
            )
        )
    return tests


def bootstrap_mean_difference(
    differences: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
    chunk: int = 100,
) -> tuple[float, float]:
    """Percentile interval of the mean of per-image `differences` by the bootstrap over images.

    With several seeds each image's difference is the share of one arm's seeds that got it
    right minus the other's, so the mean is the seed-averaged accuracy difference; resampling
    images keeps the pairing of every seed's predictions on the same image.
    """
    values = np.asarray(differences, float)
    n = len(values)
    if n == 0:
        raise ValueError("need a non-empty series of differences")
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        means.append(values[rng.integers(0, n, (size, n))].mean(axis=1))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(np.concatenate(means), [tail, 100 - tail])
    return float(low), float(high)
