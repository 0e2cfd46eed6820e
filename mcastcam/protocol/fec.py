"""FEC scheme 1 of protocol version 2: RaptorQ (RFC 6330), one source block (pure).

A thin adapter over the ``raptorq`` package (Apache-2.0; docs/protocol-v2.md §5 and §12.1
say why RaptorQ and what the binding can do). One frame of F bytes is cut into k = ⌈F / T⌉
source symbols of T bytes (the last one 1 … T bytes); RaptorQ is systematic, so source
symbol i *is* frame bytes ``[i·T, min((i+1)·T, F))`` and a receiver with no loss decodes
nothing. Repair symbols (ESI ≥ k) are exactly T bytes; a frame decodes from any k + 2
distinct symbols (from exactly k: 99.6 % of the time, §5).

- :class:`FrameEncoder` (sender): the source symbols as ``memoryview`` slices of the frame
  (never copied), and repair symbols on demand: fresh ESIs for NACK repair come from the
  tail of the library's ``get_encoded_packets(n)`` (the Python binding has no
  ``repair_packets(start, n)``; the expensive plan is made once per frame and kept).
- :class:`FrameDecoder` (receiver): feeds any mix of source and repair symbols to the
  library's decoder and returns the frame once it decodes.

Limits enforced here (§4, §5): T a multiple of 8 with 64 ≤ T ≤ 65,000 (``bad_geometry``);
1 ≤ F; F ≤ 8 MiB and k ≤ 56,403 (RFC 6330 K'max) for scheme 1 (``bad_fec``): above 8 MiB the
library's defaults switch to sub-blocks and source symbols would no longer be the frame's
bytes; ESI < 2^24 (``bad_esi``). Geometry errors are :class:`~mcastcam.errors.DecodeError`
at the receiver (the network sent them) and :class:`~mcastcam.errors.LocalProtocolError` at
the sender (a caller's bug).

A decoded frame is not yet trusted: RaptorQ rebuilds whatever the symbols imply, so a
forged or corrupt symbol gives a wrong frame of the right length. The frame's CRC-32C (§4.3)
gates publication; that check belongs to the reassembler, not to this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import raptorq

from mcastcam.errors import DecodeError, LocalProtocolError

__all__ = [
    "DECODE_OVERHEAD",
    "ESI_LIMIT",
    "MAX_FEC_FRAME_LEN",
    "MAX_SOURCE_SYMBOLS",
    "MAX_SYMBOL_SIZE",
    "MIN_SYMBOL_SIZE",
    "SYMBOL_ALIGNMENT",
    "FrameDecoder",
    "FrameEncoder",
    "fec_geometry_error",
    "source_symbol_count",
]

MAX_FEC_FRAME_LEN = 8 * 1024 * 1024
"""Largest frame, bytes, that FEC scheme 1 carries (8 MiB, §5)."""
MAX_SOURCE_SYMBOLS = 56_403
"""RFC 6330 K'max: most source symbols in one source block."""
MIN_SYMBOL_SIZE = 64
"""Smallest symbol size T, bytes (§4)."""
MAX_SYMBOL_SIZE = 65_000
"""Largest symbol size T, bytes (§4)."""
SYMBOL_ALIGNMENT = 8
"""T is a multiple of this (RaptorQ's Al; the library rounds T down to it otherwise)."""
ESI_LIMIT = 1 << 24
"""ESIs are 24 bits (RFC 6330 §3.2): valid ESIs are 0 … 2^24 − 1."""
DECODE_OVERHEAD = 2
"""A frame counts as decodable from k + this many distinct symbols (§5)."""

_PAYLOAD_ID_LEN = 4  # RFC 6330 §3.2: SBN (8 bits, always 0 here) ‖ ESI (24 bits)


def source_symbol_count(frame_len: int, symbol_size: int) -> int:
    """Source symbols of a frame: ⌈frame_len / symbol_size⌉ (both in bytes; no checks)."""
    return -(-frame_len // symbol_size)


def fec_geometry_error(frame_len: int, symbol_size: int) -> tuple[str, str] | None:
    """Why (``frame_len`` bytes, ``symbol_size`` bytes) cannot use FEC scheme 1, or ``None``.

    Returns ``(reason, message)``: reason ``"bad_geometry"`` (T not a multiple of 8 or outside
    64 … 65,000; F < 1) or ``"bad_fec"`` (F > 8 MiB, or k > 56,403).
    """
    if not MIN_SYMBOL_SIZE <= symbol_size <= MAX_SYMBOL_SIZE or symbol_size % SYMBOL_ALIGNMENT:
        return (
            "bad_geometry",
            f"symbol size {symbol_size} is not a multiple of {SYMBOL_ALIGNMENT} in "
            f"{MIN_SYMBOL_SIZE}..{MAX_SYMBOL_SIZE} bytes",
        )
    if frame_len < 1:
        return "bad_geometry", f"frame length {frame_len} is below 1 byte"
    if frame_len > MAX_FEC_FRAME_LEN:
        return (
            "bad_fec",
            f"frame length {frame_len} is above {MAX_FEC_FRAME_LEN} bytes, FEC scheme 1's limit",
        )
    k = source_symbol_count(frame_len, symbol_size)
    if k > MAX_SOURCE_SYMBOLS:
        return (
            "bad_fec",
            f"{k} source symbols of {symbol_size} bytes is above RFC 6330's {MAX_SOURCE_SYMBOLS}",
        )
    return None


class FrameEncoder:
    """Source and repair symbols of one frame.

    Args:
        frame: the frame's bytes (F ≥ 1 bytes); a ``memoryview`` is kept as is (cast to
            bytes ``"B"``), ``bytes`` too: the source symbols are slices of it, never copies.
        symbol_size: T in bytes, a multiple of 8 in 64 … 65,000.
        max_repair: most repair symbols (ESIs k … k + max_repair − 1) this frame may ever
            give; default 2·k + 16 (§4: R ≤ k planned, plus ≤ max(2, ⌈k/2⌉) after NACKs).
            Bounds the memory of :meth:`repair`, which materializes every packet up to the
            last ESI asked for.

    Raises:
        LocalProtocolError: the geometry does not fit FEC scheme 1 (see
            :func:`fec_geometry_error`), or ``max_repair`` < 0.

    The library's encoder (≈ 0.8 ms plan for k = 260) is built on the first :meth:`repair`
    call, so a frame sent without repair costs nothing; from a ``memoryview`` the library
    needs one ``bytes`` copy of the frame at that point (its API takes only ``bytes``).
    """

    def __init__(
        self, frame: bytes | memoryview, symbol_size: int, *, max_repair: int | None = None
    ) -> None:
        view = memoryview(frame)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        error = fec_geometry_error(len(view), symbol_size)
        if error is not None:
            raise LocalProtocolError(error[1])
        self._frame = frame
        self._view = view
        self.frame_len = len(view)
        self.symbol_size = symbol_size
        self.k = source_symbol_count(self.frame_len, symbol_size)
        if max_repair is None:
            max_repair = 2 * self.k + 16
        if max_repair < 0:
            raise LocalProtocolError(f"max_repair {max_repair} is negative")
        self.max_repair = min(max_repair, ESI_LIMIT - self.k)
        self._encoder: raptorq.Encoder | None = None

    def source_symbol(self, esi: int) -> memoryview:
        """Source symbol ``esi`` (0 ≤ esi < k): frame bytes ``[esi·T, min((esi+1)·T, F))``.

        Raises:
            LocalProtocolError: ``esi`` is not a source ESI.
        """
        if not 0 <= esi < self.k:
            raise LocalProtocolError(f"source ESI {esi} is outside 0..{self.k - 1}")
        start = esi * self.symbol_size
        return self._view[start : start + self.symbol_size]

    def source_symbols(self) -> list[memoryview]:
        """All k source symbols in ESI order (``memoryview`` slices of the frame)."""
        t = self.symbol_size
        return [self._view[i : i + t] for i in range(0, self.frame_len, t)]

    def repair(self, start_esi: int, count: int) -> list[bytes]:
        """Repair symbols ESI ``start_esi`` … ``start_esi + count − 1``, T bytes each.

        The same ESI always gives the same symbol; the caller keeps ESIs fresh (never sends
        one twice for a frame, §5) by advancing ``start_esi``.

        Raises:
            LocalProtocolError: ``start_esi`` < k, ``count`` < 0, or the last ESI is at or
                beyond k + ``max_repair``.
        """
        k = self.k
        if start_esi < k or count < 0 or start_esi + count > k + self.max_repair:
            raise LocalProtocolError(
                f"repair ESIs {start_esi}..{start_esi + count - 1} are outside "
                f"{k}..{k + self.max_repair - 1}"
            )
        if count == 0:
            return []
        if self._encoder is None:
            data = self._frame if isinstance(self._frame, bytes) else self._view.tobytes()
            self._encoder = raptorq.Encoder.with_defaults(data, self.symbol_size)
        packets: Sequence[bytes] = self._encoder.get_encoded_packets(start_esi + count - k)
        tail = packets[start_esi:]
        first = int.from_bytes(tail[0][:_PAYLOAD_ID_LEN], "big") if tail else -1
        if len(tail) != count or first != start_esi:  # the library's contract, checked
            raise LocalProtocolError(
                f"raptorq gave {len(tail)} packets from ESI {first}, not {count} from {start_esi}"
            )
        return [p[_PAYLOAD_ID_LEN:] for p in tail]


class FrameDecoder:
    """Rebuilds one frame from any k + 2 distinct symbols (often from k).

    Args:
        frame_len: F, bytes (1 … 8 MiB).
        symbol_size: T, bytes (a multiple of 8 in 64 … 65,000).
        max_symbols: most distinct symbols kept (default 2·k + 16): bounds memory against a
            flood of valid-looking repair symbols; more are refused (``symbol_overflow``).

    Raises:
        DecodeError: the geometry does not fit FEC scheme 1 (reason ``bad_geometry`` or
            ``bad_fec``, see :func:`fec_geometry_error`).

    Attributes: ``k`` source symbols; ``distinct`` symbols fed to the library;
    ``duplicates`` symbols absorbed because their ESI was already held; ``frame`` the decoded
    frame (F bytes) or ``None``.
    """

    def __init__(self, frame_len: int, symbol_size: int, *, max_symbols: int | None = None) -> None:
        error = fec_geometry_error(frame_len, symbol_size)
        if error is not None:
            raise DecodeError(*error)
        self.frame_len = frame_len
        self.symbol_size = symbol_size
        self.k = source_symbol_count(frame_len, symbol_size)
        self.max_symbols = 2 * self.k + 16 if max_symbols is None else max_symbols
        self._last_len = frame_len - (self.k - 1) * symbol_size
        self._esis: set[int] = set()
        self.duplicates = 0
        self.frame: bytes | None = None
        self._decoder = raptorq.Decoder.with_defaults(frame_len, symbol_size)

    @property
    def distinct(self) -> int:
        """Distinct symbols (source and repair) fed so far."""
        return len(self._esis)

    @property
    def needed(self) -> int:
        """More symbols to hold k + 2 (a NACK's ``needed``, §7); 0 once decoded or enough."""
        if self.frame is not None:
            return 0
        return max(0, self.k + DECODE_OVERHEAD - len(self._esis))

    def add(self, esi: int, payload: bytes | bytearray | memoryview) -> bytes | None:
        """Feed symbol ``esi``; the frame (exactly F bytes) the first time it decodes, else None.

        ``payload`` is T bytes, except source symbol k − 1: F − (k − 1)·T bytes (§4.1).
        A symbol whose ESI is already held, or any symbol after the frame was returned, is
        absorbed (``duplicates`` counts the former) and gives ``None``.

        Raises:
            DecodeError: reason ``bad_esi`` (ESI outside 0 … 2^24 − 1), ``length_mismatch``
                (payload size is not the one its ESI implies) or ``symbol_overflow`` (already
                ``max_symbols`` distinct symbols and still not decoded). Nothing is kept then.
        """
        if not 0 <= esi < ESI_LIMIT:
            raise DecodeError("bad_esi", f"ESI {esi} is outside 0..{ESI_LIMIT - 1}")
        expected = self._last_len if esi == self.k - 1 else self.symbol_size
        if len(payload) != expected:
            raise DecodeError(
                "length_mismatch",
                f"symbol {esi} has {len(payload)} payload bytes, not {expected}",
            )
        if esi in self._esis:
            self.duplicates += 1
            return None
        if self.frame is not None:
            return None
        if len(self._esis) >= self.max_symbols:
            raise DecodeError(
                "symbol_overflow",
                f"{self.max_symbols} distinct symbols of a {self.k}-symbol frame and no frame",
            )
        self._esis.add(esi)
        packet = bytearray(esi.to_bytes(_PAYLOAD_ID_LEN, "big"))
        packet += payload
        if expected < self.symbol_size:  # the short last source symbol, zero-padded (§5)
            packet += bytes(self.symbol_size - expected)
        out: bytes | None = self._decoder.decode(bytes(packet))
        if out is None:
            return None
        if len(out) != self.frame_len:
            raise LocalProtocolError(
                f"raptorq returned {len(out)} bytes for a {self.frame_len}-byte frame"
            )
        self.frame = out
        return out
