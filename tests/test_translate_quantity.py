"""Quantities are parsed in one place, exactly, with clear errors."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.translate.quantity import bytes_to_mib, parse_quantity, to_int, to_milli


@pytest.mark.parametrize(
    ("raw", "value"),
    [("500m", Fraction(1, 2)), ("2", 2), ("20k", 20000), ("16Gi", 16 * 2**30), ("1e3", 1000), (".5", Fraction(1, 2)),
     ("128Mi", 128 * 2**20), ("1.5", Fraction(3, 2)), (3, 3), ("100n", Fraction(1, 10**7))],
)
def test_parse(raw: object, value: Fraction) -> None:
    assert parse_quantity(raw) == value


@pytest.mark.parametrize("raw", ["", "abc", "1Qi", "--1", None, True, [], "1e99", float("nan")])
def test_bad_quantity_names_the_text(raw: object) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(raw)


def test_helpers_round_up() -> None:
    assert to_milli("100m") == 100 and to_milli("2") == 2000 and to_milli("0.0001") == 1
    assert to_int("20k") == 20000
    assert bytes_to_mib("512Gi") == 512 * 1024 and bytes_to_mib("1") == 1


@given(st.integers(min_value=0, max_value=10**9))
def test_canonical_forms_agree(n: int) -> None:
    # the API server may store 20000 as "20k": both parse the same
    canon = f"{n // 1000}k" if n % 1000 == 0 and n else str(n)
    assert to_int(canon) == n
