"""Shared checks of user-given settings (docs/design.md#configs-and-the-command-line: errors
name the bad value and what would be valid).

One integer rule for the whole package: a ``bool`` is never an integer (``True`` is not a
node count), Python and NumPy integers are, and nothing else is (not ``2.0``, not
``"2"``). :func:`check_int` raises the caller's error class with a message naming the
setting, the valid range and the bad value, e.g. ``"steps must be a positive integer,
got 0"`` or ``"k must be an integer in 1..10, got 12"``.

One number rule likewise: a real number is a Python or NumPy int or float, finite, and
never a ``bool`` (``alpha=True`` is not alpha = 1); :func:`check_number` checks one
against a range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_int", "check_int", "int_range_text", "is_number", "check_number", "is_array_value"]


def is_array_value(value: Any) -> bool:
    """True for a JAX array, traced or not: a hyperparameter the program reads as data (a
    swept value, :mod:`ecl_jax.algorithms.hyperparams`), checked where it was still a
    number, so a builder skips its value checks for it."""
    import jax

    return isinstance(value, jax.Array)


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


def is_number(value: Any) -> bool:
    """True for a finite Python or NumPy int or float; never for a bool, NaN or inf."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return bool(np.isfinite(value))


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    minimum_open: bool = False,
    maximum: float | None = None,
    maximum_open: bool = False,
    error: type[Exception] = ValueError,
    note: str = "",
) -> float:
    """Return ``value`` as a Python float after checking it is a number (:func:`is_number`)
    in the range the bounds give (open where ``*_open``); otherwise raise ``error`` with
    ``f"{name} must be a finite number [> or >= minimum][ and < or <= maximum][ ({note})], got {value!r}"``."""
    ok = is_number(value)
    if ok and minimum is not None:
        ok = value > minimum if minimum_open else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if maximum_open else value <= maximum
    if not ok:
        words = {(0, True): "a positive finite number", (0, False): "a non-negative finite number"}
        valid = words.get((minimum, minimum_open)) if maximum is None else None
        if valid is None:
            valid = "a finite number"
            if minimum is not None:
                valid += f" {'>' if minimum_open else '>='} {minimum:g}"
            if maximum is not None:
                valid += f"{' and' if minimum is not None else ''} {'<' if maximum_open else '<='} {maximum:g}"
        kind = " (a bool is not a number)" if isinstance(value, (bool, np.bool_)) else ""
        raise error(f"{name} must be {valid}{f' ({note})' if note else ''}, got {value!r}{kind}")
    return float(value)
