"""FEC schemes 1 and 2 of protocol version 2: systematic erasure codes, one block per frame (pure).

Thin adapters over two maintained libraries (docs/protocol.md §5, §5a and §12.1 say why and
what the bindings can do):

- scheme 1, RaptorQ (RFC 6330), ``raptorq`` (Apache-2.0): 2^24 − k repair symbols per frame;
  not MDS, a frame decodes from any k + 2 distinct symbols (from exactly k: 99.6 %).
- scheme 2, Reed–Solomon over GF(2^16) in the Leopard FFT form (``reed-solomon-leopard``,
  MIT, binding the ``reed-solomon-simd`` crate): MDS, a frame decodes from **any k**
  distinct symbols; m(k) = :func:`repair_capacity` repair symbols per frame; k ≤ 32,768.
  The default: encode + decode of a 1080×1920 frame in ≈ 0.8 ms instead of ≈ 2 ms.

One frame of F bytes is cut into k = ⌈F / T⌉ source symbols of T bytes (the last one 1 … T
bytes, zero-padded to T inside the codes); both codes are systematic, so source symbol i *is*
frame bytes ``[i·T, min((i+1)·T, F))`` and a receiver with no loss decodes nothing. Repair
symbols (ESI ≥ k) are exactly T bytes.

- :class:`FrameEncoder` (sender): the source symbols as ``memoryview`` slices of the frame
  (never copied), and repair symbols on demand (the code is built on the first repair
  symbol asked for, so a frame sent without repair costs nothing).
- :class:`FrameDecoder` (receiver): takes any mix of source and repair symbols and returns
  the frame once it decodes.

Limits enforced here (§4, §5, §5a): T a multiple of 8 with 64 ≤ T ≤ 65,000
(``bad_geometry``); 1 ≤ F; F ≤ 8 MiB for both schemes, k ≤ 56,403 (RFC 6330 K'max) for
scheme 1 and k ≤ 32,768 for scheme 2 (``bad_fec``); ESI < 2^24, and with scheme 2
ESI < k + m(k) (``bad_esi``). Geometry errors are :class:`~mcastcam.errors.DecodeError` at
the receiver (the network sent them) and :class:`~mcastcam.errors.LocalProtocolError` at the
sender (a caller's bug).

A decoded frame is not yet trusted: an erasure code rebuilds whatever the symbols imply, so a
forged or corrupt symbol gives a wrong frame of the right length. The frame's CRC-32C (§4.3)
gates publication; that check belongs to the reassembler, not to this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import raptorq
import reed_solomon_leopard

from mcastcam.errors import DecodeError, LocalProtocolError
from mcastcam.protocol.wire import FecScheme

__all__ = [
    "DECODE_OVERHEAD",
    "ESI_LIMIT",
    "MAX_FEC_FRAME_LEN",
    "MAX_RS_SOURCE_SYMBOLS",
    "MAX_SOURCE_SYMBOLS",
    "MAX_SYMBOL_SIZE",
    "MIN_SYMBOL_SIZE",
    "SYMBOL_ALIGNMENT",
    "FrameDecoder",
    "FrameEncoder",
    "decode_overhead",
    "fec_geometry_error",
    "repair_capacity",
    "source_symbol_count",
]

MAX_FEC_FRAME_LEN = 8 * 1024 * 1024
"""Largest frame, bytes, that FEC schemes 1 and 2 carry (8 MiB, §5)."""
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
"""Scheme 1 (RaptorQ): a frame counts as decodable from k + this many distinct symbols (§5)."""
MAX_RS_SOURCE_SYMBOLS = 32_768
"""Scheme 2 (Reed–Solomon): most source symbols of a frame (``reed-solomon-simd``'s limit)."""
RS_MIN_REPAIR = 32
"""Scheme 2: fewest repair symbols m(k) a frame's code has (§5a)."""

_RAPTORQ = int(FecScheme.RAPTORQ)
_REED_SOLOMON = int(FecScheme.REED_SOLOMON)

_PAYLOAD_ID_LEN = 4  # RFC 6330 §3.2: SBN (8 bits, always 0 here) ‖ ESI (24 bits)


def source_symbol_count(frame_len: int, symbol_size: int) -> int:
    """Source symbols of a frame: ⌈frame_len / symbol_size⌉ (both in bytes; no checks)."""
    return -(-frame_len // symbol_size)


def repair_capacity(scheme: int, k: int) -> int:
    """Most repair symbols a frame of ``k`` ≥ 1 source symbols has under FEC ``scheme``.

    Scheme 2 (§5a): m(k) = max(32, the smallest power of two ≥ ⌈k/3⌉), i.e. from a third
    to two thirds of k (32 for k ≤ 96: R plus a small frame's NACK budget of 16). The
    Leopard FFT works on power-of-two chunks of repair symbols, so any m up to that power
    of two costs the same; the next one doubles the decoder's transform (measured: k = 260,
    m = 128: decode 0.58 ms; m = 130: 0.75 ms).
    Scheme 1: 2^24 − k (every ESI up to 2^24 − 1). Other schemes: 0.
    """
    if scheme == _REED_SOLOMON:
        third = -(-k // 3)
        return max(RS_MIN_REPAIR, 1 << (third - 1).bit_length())
    if scheme == _RAPTORQ:
        return ESI_LIMIT - k
    return 0


def decode_overhead(scheme: int) -> int:
    """Symbols beyond k after which a frame counts as decodable: 2 (RaptorQ), 0 (RS, MDS)."""
    return DECODE_OVERHEAD if scheme == _RAPTORQ else 0


def fec_geometry_error(
    frame_len: int, symbol_size: int, scheme: int = _RAPTORQ
) -> tuple[str, str] | None:
    """Why (``frame_len`` bytes, ``symbol_size`` bytes) cannot use FEC ``scheme``, or ``None``.

    Returns ``(reason, message)``: reason ``"bad_geometry"`` (T not a multiple of 8 or outside
    64 … 65,000; F < 1) or ``"bad_fec"`` (F > 8 MiB; k > 56,403 with scheme 1, k > 32,768
    with scheme 2; a scheme other than 1 and 2).
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
            f"frame length {frame_len} is above {MAX_FEC_FRAME_LEN} bytes, the FEC schemes' limit",
        )
    k = source_symbol_count(frame_len, symbol_size)
    if scheme == _REED_SOLOMON:
        if k > MAX_RS_SOURCE_SYMBOLS:
            return (
                "bad_fec",
                f"{k} source symbols of {symbol_size} bytes is above FEC scheme 2's "
                f"{MAX_RS_SOURCE_SYMBOLS}",
            )
        return None
    if scheme != _RAPTORQ:
        return "bad_fec", f"FEC scheme {scheme} is not 1 or 2"
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
        scheme: FEC scheme 1 (RaptorQ, the default) or 2 (Reed–Solomon).
        max_repair: most repair symbols (ESIs k … k + max_repair − 1) this frame may ever
            give; default 2·k + 16 (§4: R ≤ k planned, plus ≤ max(2, ⌈k/2⌉) after NACKs),
            and never more than :func:`repair_capacity` (scheme 2: m(k)). Bounds the memory
            of :meth:`repair`.

    Raises:
        LocalProtocolError: the geometry does not fit the scheme (see
            :func:`fec_geometry_error`), or ``max_repair`` < 0.

    The code is built on the first :meth:`repair` call, so a frame sent without repair
    costs nothing. Scheme 1: the library's encoder (≈ 0.8 ms plan for k = 260) is kept for
    later fresh ESIs. Scheme 2: all m(k) repair symbols are computed at once (≈ 0.2 ms for
    k = 260, m = 128) and kept. Both libraries take only ``bytes``: one copy of the frame
    then.
    """

    def __init__(
        self,
        frame: bytes | memoryview,
        symbol_size: int,
        *,
        scheme: int = _RAPTORQ,
        max_repair: int | None = None,
    ) -> None:
        view = memoryview(frame)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        error = fec_geometry_error(len(view), symbol_size, scheme)
        if error is not None:
            raise LocalProtocolError(error[1])
        self._frame = frame
        self._view = view
        self.frame_len = len(view)
        self.symbol_size = symbol_size
        self.scheme = scheme
        self.k = source_symbol_count(self.frame_len, symbol_size)
        if max_repair is None:
            max_repair = 2 * self.k + 16
        if max_repair < 0:
            raise LocalProtocolError(f"max_repair {max_repair} is negative")
        self.max_repair = min(max_repair, repair_capacity(scheme, self.k))
        self._encoder: raptorq.Encoder | None = None
        self._rs_repair: list[bytes] | None = None

    @property
    def built(self) -> bool:
        """True once the code was built (by the first :meth:`repair` call asking for one)."""
        return self._encoder is not None or self._rs_repair is not None

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
        if self.scheme == _REED_SOLOMON:
            if self._rs_repair is None:
                self._rs_repair = reed_solomon_leopard.encode(
                    _padded_shards(self._view, self.symbol_size),
                    repair_capacity(_REED_SOLOMON, k),
                )
            return self._rs_repair[start_esi - k : start_esi - k + count]
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


def _padded_shards(view: memoryview, t: int) -> list[bytes]:
    """The k source symbols of a frame as ``bytes`` of T each (the last one zero-padded)."""
    shards = [view[i : i + t].tobytes() for i in range(0, len(view), t)]
    last = shards[-1]
    if len(last) < t:
        shards[-1] = last + bytes(t - len(last))
    return shards


class FrameDecoder:
    """Rebuilds one frame from enough distinct symbols: k + 2 (scheme 1, often k) or k (2).

    Args:
        frame_len: F, bytes (1 … 8 MiB).
        symbol_size: T, bytes (a multiple of 8 in 64 … 65,000).
        scheme: FEC scheme 1 (RaptorQ, the default) or 2 (Reed–Solomon).
        max_symbols: most distinct symbols kept (default 2·k + 16): bounds memory against a
            flood of valid-looking repair symbols; more are refused (``symbol_overflow``).
            Scheme 2 decodes at k, so it never gets there.

    Raises:
        DecodeError: the geometry does not fit the scheme (reason ``bad_geometry`` or
            ``bad_fec``, see :func:`fec_geometry_error`).

    Attributes: ``k`` source symbols; ``distinct`` symbols taken; ``duplicates`` symbols
    absorbed because their ESI was already held; ``frame`` the decoded frame (F bytes) or
    ``None``.

    Scheme 1 feeds each symbol to the library's incremental decoder (it tries from k on).
    Scheme 2 keeps the symbols (``bytes``, ≤ k·T) and calls the library once, at k distinct
    symbols: ``reed_solomon_leopard.decode(k, m(k), source, repair)`` returns the missing
    source symbols (≈ 0.2 ms fixed + ≈ 1.4 ns per byte of frame here, §12.1).
    """

    def __init__(
        self,
        frame_len: int,
        symbol_size: int,
        *,
        scheme: int = _RAPTORQ,
        max_symbols: int | None = None,
    ) -> None:
        error = fec_geometry_error(frame_len, symbol_size, scheme)
        if error is not None:
            raise DecodeError(*error)
        self.frame_len = frame_len
        self.symbol_size = symbol_size
        self.scheme = scheme
        self.k = source_symbol_count(frame_len, symbol_size)
        self.overhead = decode_overhead(scheme)
        self.esi_end = self.k + repair_capacity(scheme, self.k)
        self.max_symbols = 2 * self.k + 16 if max_symbols is None else max_symbols
        self._last_len = frame_len - (self.k - 1) * symbol_size
        self._esis: set[int] = set()
        self.duplicates = 0
        self.frame: bytes | None = None
        self._decoder: raptorq.Decoder | None = None
        self._source: dict[int, bytes] = {}
        self._repair: dict[int, bytes] = {}
        if scheme == _RAPTORQ:
            self._decoder = raptorq.Decoder.with_defaults(frame_len, symbol_size)

    @property
    def distinct(self) -> int:
        """Distinct symbols (source and repair) taken so far."""
        return len(self._esis)

    @property
    def needed(self) -> int:
        """More symbols to hold k + overhead (a NACK's ``needed``, §7); 0 once decoded."""
        if self.frame is not None:
            return 0
        return max(0, self.k + self.overhead - len(self._esis))

    def add(self, esi: int, payload: bytes | bytearray | memoryview) -> bytes | None:
        """Take symbol ``esi``; the frame (exactly F bytes) the first time it decodes, else None.

        ``payload`` is T bytes, except source symbol k − 1: F − (k − 1)·T bytes (§4.1).
        A symbol whose ESI is already held, or any symbol after the frame was returned, is
        absorbed (``duplicates`` counts the former) and gives ``None``.

        Raises:
            DecodeError: reason ``bad_esi`` (ESI outside 0 … 2^24 − 1, or with scheme 2
                outside 0 … k + m(k) − 1), ``length_mismatch`` (payload size is not the one
                its ESI implies) or ``symbol_overflow`` (already ``max_symbols`` distinct
                symbols and still not decoded). Nothing is kept then.
        """
        if not 0 <= esi < min(ESI_LIMIT, self.esi_end):
            raise DecodeError(
                "bad_esi", f"ESI {esi} is outside 0..{min(ESI_LIMIT, self.esi_end) - 1}"
            )
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
        padded = bytes(payload)
        if expected < self.symbol_size:  # the short last source symbol, zero-padded (§5)
            padded += bytes(self.symbol_size - expected)
        out = self._rs_add(esi, padded) if self._decoder is None else self._raptorq_add(esi, padded)
        if out is None:
            return None
        if len(out) != self.frame_len:
            raise LocalProtocolError(
                f"FEC scheme {self.scheme} returned {len(out)} bytes for a "
                f"{self.frame_len}-byte frame"
            )
        self.frame = out
        return out

    def _raptorq_add(self, esi: int, symbol: bytes) -> bytes | None:
        assert self._decoder is not None
        out: bytes | None = self._decoder.decode(esi.to_bytes(_PAYLOAD_ID_LEN, "big") + symbol)
        return out

    def _rs_add(self, esi: int, symbol: bytes) -> bytes | None:
        k = self.k
        if esi < k:
            self._source[esi] = symbol
        else:
            self._repair[esi - k] = symbol
        if len(self._esis) < k:
            return None
        source = self._source
        if len(source) < k:
            try:
                restored: dict[int, bytes] = reed_solomon_leopard.decode(
                    k, self.esi_end - k, source, self._repair
                )
            except ValueError as exc:  # the library's contract broken: never a crash
                raise LocalProtocolError(f"reed-solomon decode failed: {exc}") from exc
            source.update(restored)
            if len(source) != k or any(len(s) != self.symbol_size for s in restored.values()):
                raise LocalProtocolError(
                    f"reed-solomon gave {len(restored)} source symbols of a {k}-symbol frame"
                )
        source[k - 1] = source[k - 1][: self._last_len]  # unpadded, so one join is the frame
        out = b"".join([source[i] for i in range(k)])
        self._source, self._repair = {}, {}
        return out
