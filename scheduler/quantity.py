"""Kubernetes resource quantities ("500m", "16Gi", "20k", "1e3"), parsed in exactly one place.

The API server canonicalises quantities (`gpupack.io/gpu-memory: 20000` comes back as `20k`), so
nothing may parse them with int(). Values are exact Fractions; helpers round the way Kubernetes
does for requests (up).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SUFFIX = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")
MIB = 2**20


def parse_quantity(raw: object) -> Fraction:
    """The exact value of a quantity; ValueError naming the bad text."""
    if isinstance(raw, bool):
        raise ValueError(f"quantity: {raw!r} is not a quantity")
    if isinstance(raw, int):
        return Fraction(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ValueError(f"quantity: {raw!r} is not finite")
        return Fraction(raw)
    if not isinstance(raw, str):
        raise ValueError(f"quantity: {raw!r} is not a string or number")
    m = _RE.match(raw.strip())
    if not m:
        raise ValueError(f"quantity: {raw!r} is not a Kubernetes quantity (e.g. 500m, 16Gi, 2)")
    number = Fraction(m.group(1))
    if m.group(2):
        exp = int(m.group(2)[1:])
        if abs(exp) > 30:
            raise ValueError(f"quantity: {raw!r} exponent out of range")
        return number * Fraction(10) ** exp
    return number * _SUFFIX[m.group(3) or ""]


def to_milli(raw: object) -> int:
    """CPU-style milli units, rounded up ("100m" -> 100, "2" -> 2000)."""
    return math.ceil(parse_quantity(raw) * 1000)


def to_int(raw: object) -> int:
    """A count, rounded up ("2" -> 2, "20k" -> 20000)."""
    return math.ceil(parse_quantity(raw))


def bytes_to_mib(raw: object) -> int:
    """A memory size in bytes ("16Gi", "512M") as MiB, rounded up."""
    return math.ceil(parse_quantity(raw) / MIB)
