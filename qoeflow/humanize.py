"""Numbers formatted for people: `38.9 M`, `0.09 ms`, `151 kB`, `2 min 05 s`.

Plain functions from a number to a short string, no I/O. A missing or non-finite value is shown as an
en dash (`MISSING`), so a table never prints `nan`. Scientific notation is never used: a reader compares
columns of numbers at a glance, and `8.978e-05` hides its magnitude in the exponent.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

MISSING = "–"
_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _finite(value: Any) -> float | None:
    """The value as a float, or None when it is missing, not a number, or infinite."""
    if value is None or isinstance(value, bool) or not isinstance(value, Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _trim(text: str) -> str:
    """`1.50` -> `1.5`, `2.00` -> `2` (only after a decimal point)."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def number(value: Any, digits: int = 3) -> str:
    """A plain number with about `digits` significant digits and no exponent: 1.3181 -> `1.32`,
    116.70 -> `117`, 0.000467 -> `0.000467`, 38932480 -> `38.9 M` (large values take an SI prefix),
    1234 -> `1,234`; integers below a million are shown whole."""
    x = _finite(value)
    if x is None:
        return MISSING
    if abs(x) >= 1e6:
        return si(x, digits=digits)
    if isinstance(value, Integral) or (x == int(x) and abs(x) >= 10 ** (digits - 1)):
        return f"{int(round(x)):,}"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:,.{decimals}f}"
    return _trim(text) if "." in text else text


def _prefixed(x: float, digits: int) -> tuple[str, str]:
    """(the number scaled to its SI prefix, the prefix): 38932480 -> ("38.9", "M"); below 1000 no prefix."""
    for scale, prefix in _SI:
        if abs(x) >= scale * (1 - 0.5 * 10 ** -digits):  # 999,960 is `1 M`, not `1000 k`
            scaled = x / scale
            decimals = max(0, digits - 1 - math.floor(math.log10(abs(scaled))))
            return _trim(f"{scaled:.{decimals}f}"), prefix
    return number(x, digits), ""


def fixed(value: Any, places: int = 3) -> str:
    """A number with a fixed count of decimals, for a column of values on one scale (QoE in (0, 1]):
    0.8 -> `0.800`, 0.82429 -> `0.824`."""
    x = _finite(value)
    return MISSING if x is None else f"{x:,.{places}f}"


def si(value: Any, unit: str = "", digits: int = 3) -> str:
    """A count with an SI prefix and about `digits` significant digits: 38932480 -> `38.9 M`,
    35659 -> `35.7 k`, 512 -> `512`; a `unit` follows after a space (`si(38932480, "MACs")` -> `38.9 M MACs`)."""
    x = _finite(value)
    if x is None:
        return MISSING
    text, prefix = _prefixed(x, digits)
    return " ".join(part for part in (text, prefix, unit) if part)


def size(num_bytes: Any) -> str:
    """A file size in decimal units: 150997 -> `151 kB`, 2_500_000 -> `2.5 MB`, 812 -> `812 B`."""
    x = _finite(num_bytes)
    if x is None:
        return MISSING
    if abs(x) < 1000:
        return f"{int(round(x))} B"
    text, prefix = _prefixed(x, 3)
    return f"{text} {prefix}B"


def milliseconds(seconds: Any) -> str:
    """Seconds shown in milliseconds, for short timings (loading a model, one test image): 8.978e-05 ->
    `0.09 ms`, 0.00743 -> `7.43 ms`, 0.0468 -> `46.8 ms`, 1.25 -> `1,250 ms`. Two decimals below 10 ms
    keep a column of timings aligned and comparable; below 0.005 ms it says `< 0.01 ms` rather than 0."""
    x = _finite(seconds)
    if x is None:
        return MISSING
    ms = x * 1e3
    if 0 < abs(ms) < 0.005:
        return "< 0.01 ms"
    if abs(ms) < 10:
        return f"{ms:.2f} ms"
    if abs(ms) < 100:
        return f"{ms:.1f} ms"
    return f"{ms:,.0f} ms"


def duration(seconds: Any) -> str:
    """A duration whose unit follows its size: 4.67e-05 -> `47 µs`, 0.0069 -> `6.9 ms`, 0.78 -> `0.78 s`,
    18.68 -> `18.7 s`, 125 -> `2 min 05 s`, 7384 -> `2 h 03 min`."""
    x = _finite(seconds)
    if x is None:
        return MISSING
    sign, x = ("-" if x < 0 else ""), abs(x)
    if x == 0:
        return "0 s"
    if x < 1e-3:
        return f"{sign}{number(x * 1e6, 2)} µs"
    if x < 0.1:
        return f"{sign}{number(x * 1e3, 2)} ms"
    if x < 60:
        return f"{sign}{number(x, 3)} s"
    whole = int(round(x))
    if whole < 3600:
        return f"{sign}{whole // 60} min {whole % 60:02d} s"
    return f"{sign}{whole // 3600} h {whole % 3600 // 60:02d} min"


def seconds(value: Any) -> str:
    """Seconds for a column of durations on one unit: 0.0996 -> `0.0996 s`, 2.2913 -> `2.29 s`,
    18.68 -> `18.7 s`; a minute or more as `duration` writes it (`2 min 05 s`)."""
    x = _finite(value)
    if x is None:
        return MISSING
    return duration(x) if abs(x) >= 59.95 else f"{number(x, 3)} s"


def percent(fraction: Any, digits: int = 2) -> str:
    """A fraction as a percentage with about `digits` significant digits: 0.5 -> `50 %`, 0.8342 -> `83 %`,
    0.0123 -> `1.2 %`, 1.0 -> `100 %`."""
    x = _finite(fraction)
    return MISSING if x is None else f"{number(x * 100, digits)} %"


def ratio(value: Any) -> str:
    """A ratio as a multiplier: 0.42 -> `×0.42`, 1.0 -> `×1`, 12.5 -> `×12.5`."""
    x = _finite(value)
    return MISSING if x is None else f"×{number(x, 3)}"
