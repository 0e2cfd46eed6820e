from hypothesis import given
from hypothesis import strategies as st

from mcastcam.protocol.serial import serial_add, serial_diff, serial_gt, serial_lt

u32 = st.integers(0, 2**32 - 1)


def test_wrap_is_newer() -> None:
    assert serial_gt(0, 2**32 - 1)
    assert serial_lt(2**32 - 1, 0)
    assert serial_diff(0, 2**32 - 1) == 1
    assert serial_diff(2**32 - 1, 0) == -1
    assert serial_add(2**32 - 1, 1) == 0
    assert serial_add(0, -1) == 2**32 - 1


def test_half_way_is_not_newer() -> None:
    # RFC 1982 §3.2: a and a + 2**31 are incomparable; neither is greater.
    assert not serial_gt(2**31, 0)
    assert not serial_gt(0, 2**31)


@given(u32, st.integers(1, 2**31 - 1))
def test_adding_makes_newer(a: int, n: int) -> None:
    b = serial_add(a, n)
    assert serial_gt(b, a)
    assert serial_lt(a, b)
    assert serial_diff(b, a) == n
    assert serial_diff(a, b) == -n
