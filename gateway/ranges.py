"""A regular expression matching exactly the decimal integers from `low` to `high`.

The proto3 JSON mapping writes 64-bit integers as strings, so a JSON Schema cannot give their
range as `minimum`/`maximum`; a `pattern` can. The range is cut into pieces that each fix a
prefix, vary one digit and leave the rest free (`1[0-4][0-9]{3}`), the way to-regex-range does.
Numbers are written as JSON writes them: no sign on positives, no leading zeros, `-0` never.
"""

from __future__ import annotations


def _stops(low: int, high: int) -> list[int]:
    """Where [low, high] (both >= 0) splits into pieces of one prefix each."""
    stops = {high}
    nines = 1
    while low <= (stop := int(str(low)[:-nines] + "9" * nines) if nines < len(str(low)) else int("9" * nines)) <= high:
        stops.add(stop)
        nines += 1
    zeros = 1
    while low < (stop := (high + 1) - (high + 1) % 10**zeros - 1) <= high:
        stops.add(stop)
        zeros += 1
    return sorted(stops)


def _piece(start: int, stop: int) -> str:
    """A pattern for [start, stop] of one length whose digits differ in one place, then are free."""
    pattern, free = "", 0
    for a, b in zip(str(start), str(stop), strict=True):
        if a == b:
            pattern += a
        elif a == "0" and b == "9":
            free += 1
        else:
            pattern += f"[{a}-{b}]"
    if free:
        pattern += "[0-9]" + (f"{{{free}}}" if free > 1 else "")
    return pattern


def _nonnegative(low: int, high: int) -> list[str]:
    pieces, start = [], low
    for stop in _stops(low, high):
        pieces.append(_piece(start, stop))
        start = stop + 1
    return pieces


def integer_pattern(low: int, high: int) -> str:
    """`^(?:...)$` matching the integers in [low, high] written as JSON writes them."""
    if low > high:
        raise ValueError(f"empty range {low}..{high}")
    alternatives = []
    if low < 0:
        negative = _nonnegative(max(1, -high) if high < 0 else 1, -low)
        alternatives.append("-(?:" + "|".join(negative) + ")" if len(negative) > 1 else "-" + negative[0])
    if high >= 0:
        alternatives += _nonnegative(max(low, 0), high)
    return "^(?:" + "|".join(alternatives) + ")$"
