"""Statistics for the benchmark report: medians, percentiles, ratios (pure functions)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float | None:
    """The median, or None when nothing was measured."""
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` quantile (0..1) with linear interpolation between closest ranks.

    p50 of [1, 2, 3, 4] is 2.5; p95 of 1..100 is 95.05 (the same as numpy's default method).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"a percentile's fraction must be within 0..1, not {fraction}")
    if not values:
        return None
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def per(total: float | None, count: int) -> float | None:
    """total / count (per cluster), or None for nothing measured."""
    if total is None or count <= 0:
        return None
    return total / count
