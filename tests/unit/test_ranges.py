"""The integer-range patterns the OpenAPI document gives 64-bit fields: exact, checked by brute force."""

from __future__ import annotations

import re

import pytest

from gateway.ranges import integer_pattern


@pytest.mark.parametrize(("low", "high"), [(0, 0), (1, 9), (0, 1000), (1, 1000), (7, 993), (-1000, 1000), (-993, -7),
                                           (-5, 0), (12, 12), (99, 101), (0, 10**4 - 1), (345, 34567)])
def test_the_pattern_matches_exactly_the_range(low: int, high: int) -> None:
    pattern = re.compile(integer_pattern(low, high))
    for n in range(min(low, 0) - 50, max(high, 0) + 2000):
        assert bool(pattern.fullmatch(str(n))) == (low <= n <= high), (n, pattern.pattern)


@pytest.mark.parametrize(("low", "high"), [(1, 1_000_000), (0, 10**12), (-(10**12), 10**12), (0, 2**63 - 1),
                                           (-(2**63), 2**63 - 1)])
def test_large_ranges_hold_at_their_edges_and_refuse_what_json_would_not_write(low: int, high: int) -> None:
    pattern = re.compile(integer_pattern(low, high))
    for n in (low, high, low + 1, high - 1, (low + high) // 2, 10, 99, 100, 12345):
        assert bool(pattern.fullmatch(str(n))) == (low <= n <= high), n
    for n in (low - 1, high + 1, high * 10):
        assert not pattern.fullmatch(str(n)), n
    for written in ("01", "+1", "-0", " 1", "1.0", "1e2", "", "-"):
        assert not pattern.fullmatch(written), written
