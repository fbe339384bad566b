"""Comparisons of conversion rates: a difference of two proportions with its 95% confidence
interval (Newcombe's hybrid score interval) and a p-value (score test), from statsmodels; the
verdict in words says when the difference may be chance."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

ALPHA = 0.05


def load_library() -> tuple[Any, Any]:
    """statsmodels' two functions. Imported on demand: statsmodels (with pandas and scipy)
    takes seconds to import, which the migrate command need not pay; the server imports it
    in a thread at start (`server`), and the metrics compare in a thread."""
    from statsmodels.stats.proportion import (  # noqa: PLC0415
        confint_proportions_2indep,
        test_proportions_2indep,
    )

    return confint_proportions_2indep, test_proportions_2indep


@dataclass(frozen=True)
class Comparison:
    label: str
    difference: float
    low: float
    high: float
    p_value: float
    significant: bool
    verdict: str


def rate(count: int, total: int) -> float:
    return count / total if total else 0.0


def _points(value: float) -> str:
    return f"{value * 100:+.1f} points"


def compare(
    label: str, *, converted_a: int, total_a: int, converted_b: int, total_b: int
) -> Comparison | None:
    """Conversion of group a minus group b; None while either group is empty."""
    if total_a == 0 or total_b == 0:
        return None
    confint_proportions_2indep, test_proportions_2indep = load_library()
    difference = rate(converted_a, total_a) - rate(converted_b, total_b)
    low, high = confint_proportions_2indep(
        converted_a, total_a, converted_b, total_b, compare="diff", method="newcomb", alpha=ALPHA
    )
    if converted_a + converted_b in (0, total_a + total_b):
        p_value = 1.0  # both groups identical (none or all converted): nothing to tell apart
    else:
        with warnings.catch_warnings():
            # The test also computes ratios, which divide by zero when a group never converted.
            warnings.simplefilter("ignore", RuntimeWarning)
            p_value = float(
                test_proportions_2indep(
                    converted_a, total_a, converted_b, total_b, compare="diff", method="score"
                ).pvalue
            )
    low, high = float(low), float(high)
    if math.isnan(low) or math.isnan(high):
        low, high = -1.0, 1.0
    significant = low > 0 or high < 0
    interval = f"95% interval {_points(low)} to {_points(high)}"
    if significant:
        verdict = f"Significant: {_points(difference)} ({interval})."
    else:
        verdict = (
            f"Not significant: {_points(difference)}, but the {interval} includes 0, "
            "so the difference may be chance."
        )
    return Comparison(label, difference, low, high, p_value, significant, verdict)
