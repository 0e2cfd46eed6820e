"""RFC 1982 serial-number arithmetic for the wrapping u32 counters.

Frame ids and datagram sequence numbers are unsigned 32-bit integers that wrap. Two
values compare by the sign of their difference modulo 2**32 (RFC 1982 §3.2); values
exactly 2**31 apart are incomparable and, by convention here, ``a`` is *not* newer.
"""

from __future__ import annotations

SERIAL_BITS = 32
SERIAL_MOD = 1 << SERIAL_BITS
_HALF = 1 << (SERIAL_BITS - 1)
_MASK = SERIAL_MOD - 1


def serial_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32. ``n`` may be negative."""
    return (a + n) & _MASK


def serial_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a``: in ``[-2**31, 2**31)``.

    ``serial_diff(a, b) > 0`` means ``a`` is newer than ``b`` (RFC 1982 §3.2).
    """
    d = (a - b) & _MASK
    return d - SERIAL_MOD if d >= _HALF else d


def serial_gt(a: int, b: int) -> bool:
    """True if ``a`` is newer than ``b`` (RFC 1982 ``s1 > s2``)."""
    return 0 < ((a - b) & _MASK) < _HALF


def serial_lt(a: int, b: int) -> bool:
    """True if ``a`` is older than ``b``."""
    return serial_gt(b, a)
