"""Shared checks of user-given settings (docs/design.md#configs-and-the-command-line: errors
name the bad value and what would be valid).

One integer rule for the whole package: a ``bool`` is never an integer (``True`` is not a
node count), Python and NumPy integers are, and nothing else is (not ``2.0``, not
``"2"``). :func:`check_int` raises the caller's error class with a message naming the
setting, the valid range and the bad value, e.g. ``"steps must be a positive integer,
got 0"`` or ``"k must be an integer in 1..10, got 12"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_int", "check_int", "int_range_text"]


def is_int(value: Any, *, allow_numpy: bool = True) -> bool:
    """True for a Python or (with ``allow_numpy``) NumPy integer; never for a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, np.integer) if allow_numpy else int)


def int_range_text(minimum: int | None = None, maximum: int | None = None) -> str:
    """The valid integers in words: "a positive integer", "an integer in 1..10", ..."""
    if minimum is not None and maximum is not None:
        return f"an integer in {minimum}..{maximum}"
    if minimum is not None:
        return {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    error: type[Exception] = ValueError,
    allow_none: bool = False,
    allow_numpy: bool = True,
    note: str = "",
) -> int | None:
    """Return ``value`` as a Python int after checking it is an integer in [minimum, maximum].

    ``None`` passes (and is returned) with ``allow_none``. ``allow_numpy=False`` also
    refuses NumPy integers (for values that must serialise to JSON). Otherwise raises
    ``error`` (``ValueError``, ``ConfigError``, ``DataError``, ``TopologyError``, ...) with
    ``f"{name} must be {range}[ or None][ ({note})], got {value!r}"``.
    """
    if value is None and allow_none:
        return None
    ok = is_int(value, allow_numpy=allow_numpy)
    if ok and minimum is not None and value < minimum:
        ok = False
    if ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        valid = int_range_text(minimum, maximum) + (" or None" if allow_none else "") + (f" ({note})" if note else "")
        raise error(f"{name} must be {valid}, got {value!r}")
    return int(value)
