"""Kubernetes resource quantities ("500m", "16Gi", "20k", "1e3"), parsed in exactly one place.

The API server canonicalises quantities (`gpupack.io/gpu-memory: 20000` comes back as `20k`), so
nothing may parse them with int(). Values are exact Fractions; helpers round the way Kubernetes
does for requests (up) and refuse a result outside 0..binpack.types.MAX_AMOUNT with a ValueError: this is
the edge every amount crosses into binpack, so an absurd request (`cpu: "99999999999999999999999"`) is a
reason given for one pod, never an overflow inside the solver or the learned mix.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache

from binpack.types import MAX_AMOUNT

_SUFFIX = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")
MIB = 2**20
MAX_TEXT = 64  # Kubernetes' own quantities are far shorter; a long one is refused before any arithmetic


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
        raise ValueError(f"quantity: {_short(raw)} is not a string or number")
    if len(raw) > MAX_TEXT:
        raise ValueError(f"quantity: {_short(raw)} is longer than {MAX_TEXT} characters")
    return _text(raw)


@lru_cache(maxsize=4096)  # a cluster's pods repeat a few quantity texts ("100m", "128Mi", "1"): parse each once
def _text(raw: str) -> Fraction:  # (at most 4096 texts of at most MAX_TEXT characters kept; errors are not)
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


def _short(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= MAX_TEXT + 2 else text[:MAX_TEXT] + "..."


def _in_range(raw: object, value: Fraction, unit: str) -> int:
    """The value rounded up, or ValueError when it is negative or past MAX_AMOUNT (in `unit`)."""
    n = math.ceil(value)
    if value < 0:
        raise ValueError(f"quantity: {_short(raw)} is negative")
    if n > MAX_AMOUNT:
        raise ValueError(f"quantity: {_short(raw)} is out of range (at most {MAX_AMOUNT} {unit})")
    return n


def to_milli(raw: object) -> int:
    """CPU-style milli units, rounded up ("100m" -> 100, "2" -> 2000)."""
    return _in_range(raw, parse_quantity(raw) * 1000, "milli")


def to_int(raw: object) -> int:
    """A count, rounded up ("2" -> 2, "20k" -> 20000)."""
    return _in_range(raw, parse_quantity(raw), "")


def bytes_to_mib(raw: object) -> int:
    """A memory size in bytes ("16Gi", "512M") as MiB, rounded up."""
    return _in_range(raw, parse_quantity(raw) / MIB, "MiB")
