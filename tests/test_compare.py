"""compare(): the count of bad points a tolerance allows, rounded down or half to even."""
from __future__ import annotations

import torch

from builder.spec import Tolerance
from builder.verify import compare


def with_bad(count: int, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    golden = torch.zeros(points)
    actual = golden.clone()
    actual[:count] = 1.0
    return actual, golden


def test_round_half_even_allows_what_pypto_libs_ratio_allclose_allows():
    """57344 points at 0.005 is 286.72 points: pypto-lib allows round(286.72) = 287, the ratio 286."""
    tol = dict(rtol=1 / 128, atol=1e-4, max_error_ratio=0.005)
    floor, rounded = Tolerance(**tol), Tolerance(**tol, allowed_bad="round_half_even")
    assert compare(*with_bad(286, 57344), floor).ok and not compare(*with_bad(287, 57344), floor).ok
    assert compare(*with_bad(287, 57344), rounded).ok and not compare(*with_bad(288, 57344), rounded).ok
    # ties go to even: 0.005 * 300 = 1.5 -> 2 bad points, 0.005 * 100 = 0.5 -> 0
    assert compare(*with_bad(2, 300), rounded).ok and not compare(*with_bad(3, 300), rounded).ok
    assert not compare(*with_bad(1, 100), rounded).ok


def test_nonfinite_results_fail_whatever_the_count():
    actual, golden = with_bad(0, 1000)
    actual[0] = float("nan")
    assert not compare(actual, golden, Tolerance(max_error_ratio=0.5, allowed_bad="round_half_even")).ok
