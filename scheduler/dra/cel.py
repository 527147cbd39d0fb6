"""CEL device selectors (DeviceClass and request `selectors[].cel.expression`), evaluated with cel-python.

cel-python (module `celpy`, PyPI `cel-python`) is a maintained pure-Python implementation of Google's
Common Expression Language: the standard operators, macros (`has`, `all`, `exists`, `map`, `filter`),
`size`, `in`, string `contains` / `startsWith` / `endsWith` / `matches`, and runtime errors as values.
It does not ship Kubernetes' CEL libraries; this module adds what DRA selectors on NVIDIA's devices use:
`quantity()` with `compareTo`, `isGreaterThan`, `isLessThan`, `asInteger`, `isInteger`, and `semver()` (the
type of `version` attributes) with `compareTo`, `isGreaterThan`, `isLessThan`, `major`, `minor`, `patch`.
Not covered: Kubernetes' other extension libraries (`lowerAscii` and the other string extensions, `find`,
lists' `isSorted` / `sum` / `indexOf`, `url`, `ip`, `cidr`, `format`), cost limits, and type-checking at
compile time. Anything outside that set fails with an undeclared reference when evaluated, and every
failure (a parse error, an unknown function, a missing attribute, a result that is not a bool) is a
`CelRefused` with the message: the caller refuses the claim, never passes a device it could not check.

The device is what DRA's CEL environment calls `device`: `driver`, `attributes[domain][name]` and
`capacity[domain][name]`. A slice attribute written without a domain belongs to the driver's domain.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes

from scheduler.translate.quantity import to_int


class CelRefused(ValueError):
    """A selector gpupack cannot evaluate (or that errs on a device); the message says which and why."""


@dataclass(frozen=True, slots=True, order=True)
class Quantity:
    """A capacity, in its base unit (bytes, counts); integral values only (what the driver publishes)."""

    value: int


_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


@dataclass(frozen=True, slots=True, order=True)
class Semver:
    major: int
    minor: int
    patch: int


def _quantity(text: Any) -> Quantity:
    try:
        return Quantity(to_int(str(text)))
    except ValueError as e:
        raise CelRefused(f"quantity({text!r}): {e}") from None


def _semver(text: Any) -> Semver:
    m = _SEMVER.match(str(text))
    if m is None:
        raise CelRefused(f"semver({text!r}): not a semantic version")
    return Semver(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def _same(a: Any, b: Any) -> None:
    if type(a) is not type(b) or not isinstance(a, Quantity | Semver):
        raise CelRefused(f"cannot compare {type(a).__name__} with {type(b).__name__}")


def _compare(a: Any, b: Any) -> celtypes.IntType:
    _same(a, b)
    return celtypes.IntType((a > b) - (a < b))


def _greater(a: Any, b: Any) -> celtypes.BoolType:
    _same(a, b)
    return celtypes.BoolType(a > b)


def _less(a: Any, b: Any) -> celtypes.BoolType:
    _same(a, b)
    return celtypes.BoolType(a < b)


def _as_integer(a: Any) -> celtypes.IntType:
    if not isinstance(a, Quantity):
        raise CelRefused("asInteger: not a quantity")
    return celtypes.IntType(a.value)


def _part(name: str) -> Any:
    def get(a: Any) -> celtypes.IntType:
        if not isinstance(a, Semver):
            raise CelRefused(f"{name}: not a semver")
        return celtypes.IntType(getattr(a, name))
    return get


FUNCTIONS: dict[str, Any] = {
    "quantity": _quantity, "semver": _semver, "compareTo": _compare, "isGreaterThan": _greater,
    "isLessThan": _less, "asInteger": _as_integer, "isInteger": lambda a: celtypes.BoolType(isinstance(a, Quantity)),
    "major": _part("major"), "minor": _part("minor"), "patch": _part("patch"),
}
_ENV = celpy.Environment()


@functools.lru_cache(maxsize=1024)
def compile_selector(expression: str) -> Any:
    """The runnable program of one expression; CelRefused when it does not parse."""
    try:
        return _ENV.program(_ENV.compile(expression), functions=FUNCTIONS)
    except Exception as e:  # celpy raises its own parse errors (CELParseError, ...)
        raise CelRefused(f"CEL selector {expression!r} does not parse: {str(e).splitlines()[0]}") from None


def _value(v: Mapping[str, Any]) -> Any:
    if "string" in v:
        return celtypes.StringType(str(v["string"]))
    if "bool" in v:
        return celtypes.BoolType(bool(v["bool"]))
    if "int" in v:
        return celtypes.IntType(int(v["int"]))
    if "version" in v:
        return _semver(v["version"])
    raise CelRefused(f"attribute value {dict(v)} of an unknown type")


def device_env(driver: str, device: Mapping[str, Any]) -> celtypes.MapType:
    """A slice device (its JSON) as DRA's CEL `device`: attributes and capacities by domain."""
    attrs: dict[str, dict[str, Any]] = {}
    caps: dict[str, dict[str, Any]] = {}
    for src, dst, conv in ((device.get("attributes") or {}, attrs, _value),
                           (device.get("capacity") or {}, caps, lambda c: _quantity(c.get("value")))):
        for name, raw in src.items():
            domain, _, short = str(name).rpartition("/")
            try:
                dst.setdefault(domain or driver, {})[short] = conv(raw)
            except (CelRefused, TypeError, ValueError, AttributeError):
                continue  # an unreadable value: a selector that reads it errs (no such member), never passes
    s = celtypes.StringType

    def as_map(d: dict[str, dict[str, Any]]) -> celtypes.MapType:
        return celtypes.MapType({s(k): celtypes.MapType({s(n): v for n, v in vs.items()}) for k, vs in d.items()})

    return celtypes.MapType({s("driver"): s(driver), s("attributes"): as_map(attrs), s("capacity"): as_map(caps)})


def matches(expression: str, device: celtypes.MapType) -> bool:
    """Whether the selector holds for the device; CelRefused when it cannot be evaluated on it."""
    prog = compile_selector(expression)
    try:
        got = prog.evaluate({"device": device})
    except CelRefused:
        raise
    except Exception as e:  # celpy's CELEvalError (unknown function, no such key, bad types)
        msg = e.args[0] if isinstance(e.args, tuple) and e.args else e
        raise CelRefused(f"CEL selector {expression!r} cannot be evaluated: {msg}") from None
    if isinstance(got, CelRefused):
        raise got
    if not isinstance(got, celtypes.BoolType):
        raise CelRefused(f"CEL selector {expression!r} gives {type(got).__name__}, not a bool")
    return bool(got)
