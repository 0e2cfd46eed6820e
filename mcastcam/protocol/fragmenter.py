"""Cut one JPEG frame into protocol v2 symbol datagrams (pure; docs/protocol.md §4, §5, §10).

A frame of F bytes becomes k = ⌈F / T⌉ source symbols (kind 1): symbol i carries frame bytes
``[i·T, min((i+1)·T, F))`` as a ``memoryview`` slice of the frame (never copied), so every
datagram but the frame's last source symbol is exactly 48 + T bytes (GSO-friendly). With
FEC (scheme 1, RaptorQ, or 2, Reed–Solomon) R repair symbols (kind 16, ESIs k … k + R − 1)
follow, from :class:`~mcastcam.protocol.fec.FrameEncoder`; frames above 8 MiB (or above the
scheme's k: 56,403 or 32,768) go with ``fec_scheme`` 0 and no repair. Every header carries
the frame's CRC-32C (:mod:`.integrity`).

Each datagram is ``(header, payload)``: the 48-byte header built with the struct fast path
and the payload buffer; the shell sends both pieces with one ``sendmsg`` call.
"""

from __future__ import annotations

from typing import Any

from mcastcam.errors import LocalProtocolError
from mcastcam.protocol.codec import (
    ESI_LIMIT,
    MAX_FRAME_LEN,
    MAX_SYMBOL_SIZE,
    MIN_SYMBOL_SIZE,
    SYMBOL_ALIGNMENT,
    SYMBOL_HEADER,
)
from mcastcam.protocol.fec import FrameEncoder, fec_geometry_error, repair_capacity
from mcastcam.protocol.integrity import crc32c
from mcastcam.protocol.repair import nack_repair_budget
from mcastcam.protocol.serial import serial_add
from mcastcam.protocol.wire import (
    MAGIC,
    SYMBOL_HEADER_SIZE,
    TAG_SIZE,
    VERSION,
    FecScheme,
    Kind,
)

__all__ = [
    "IPV4_HEADER",
    "MIN_MTU",
    "UDP_HEADER",
    "Datagram",
    "SymbolFrame",
    "fragment_frame",
    "symbol_size_for_mtu",
]

IPV4_HEADER = 20
"""Bytes of an IPv4 header without options."""
UDP_HEADER = 8
"""Bytes of a UDP header."""
MIN_MTU = 576
"""The smallest MTU every IPv4 host must accept (RFC 791)."""

Datagram = tuple[bytes, bytes | memoryview]
"""One datagram as the shell sends it: header bytes and a payload buffer."""

_SOURCE = int(Kind.SOURCE)
_REPAIR = int(Kind.REPAIR)


def symbol_size_for_mtu(mtu: int, auth: bool = False) -> int:
    """Symbol size T, bytes, for a path MTU of ``mtu`` bytes (§10).

    T = ⌊(MTU − 28 − 48 − tag) / 8⌋ · 8 with tag = 16 when datagrams are authenticated,
    at most 65,000: 1,424 for Ethernet's 1,500 (1,408 with a key), 8,920 for 9,000.

    Raises:
        LocalProtocolError: ``mtu`` is below 576 (RFC 791) or above 65535.
    """
    if not MIN_MTU <= mtu <= 0xFFFF:
        raise LocalProtocolError(f"MTU {mtu} is outside {MIN_MTU}..65535 bytes")
    room = mtu - IPV4_HEADER - UDP_HEADER - SYMBOL_HEADER_SIZE - (TAG_SIZE if auth else 0)
    return min(MAX_SYMBOL_SIZE, room // SYMBOL_ALIGNMENT * SYMBOL_ALIGNMENT)


def frame_symbol_size(frame_len: int, max_symbol_size: int) -> int:
    """The symbol size T for one frame, bytes.

    ``max_symbol_size`` (the MTU's, a multiple of 8), except for a frame that fits in one
    symbol: it gets the smallest multiple of 8 (≥ 64) that holds it, because its repair symbol
    is T bytes too — on loopback (64 kB MTU) a 7 kB frame would otherwise get a 64 kB repair
    symbol, ten times the frame. Larger frames keep the MTU's T (all symbols full but the last).
    """
    if frame_len >= max_symbol_size:
        return max_symbol_size
    return max(MIN_SYMBOL_SIZE, (frame_len + 7) // 8 * 8)


class SymbolFrame:
    """One frame cut into symbols: its source symbols, its repair symbols, their headers.

    Args:
        jpeg: the whole frame (any bytes; sent byte for byte). ``bytes`` is kept as is, any
            other buffer as a ``memoryview``: payloads are slices of it, never copies.
        stream_id: u32 stream id of this sender run.
        run_nonce: u32 ≠ 0, this sender run's nonce.
        frame_id: u32 frame id.
        capture_ts_ns: capture time, wall clock ns (u64).
        symbol_size: T, bytes (a multiple of 8 in 64 … 65,000; see :func:`symbol_size_for_mtu`
            and :func:`frame_symbol_size`).
        repair: R wanted, proactive repair symbols (≥ 0; capped at k and at the scheme's
            repair capacity, 0 without FEC).
        fec: use FEC when the frame allows it (F ≤ 8 MiB, k within the scheme's limit);
            ``False`` (``--fec off``) sends ``fec_scheme`` 0.
        scheme: the FEC scheme, 1 (RaptorQ, the default here) or 2 (Reed–Solomon).
        flags: u16 prefix flags; key_id: u8 (0 iff ``AUTH`` is clear).
        frame_crc32c: the header's CRC-32C when ``jpeg`` is not the published frame itself
            (with a key, ``jpeg`` is the sealed frame object and the CRC is the JPEG's,
            §8.3a); ``None``: CRC-32C of ``jpeg``.

    Attributes: ``k`` source symbols, ``repair_planned`` R, ``fec_scheme``, ``frame_crc32c``,
    ``encoder`` (a :class:`~mcastcam.protocol.fec.FrameEncoder` with FEC, else ``None``:
    its code is built only when a repair symbol is first asked for).

    Raises:
        LocalProtocolError: the frame is empty or too large for the format (F > 2^32 − 1,
            or k ≥ 2^24 without FEC), ``symbol_size`` or ``run_nonce`` is invalid.
    """

    __slots__ = (
        "_pack_args",
        "_view",
        "encoder",
        "fec_scheme",
        "frame_crc32c",
        "frame_id",
        "frame_len",
        "k",
        "repair_planned",
        "symbol_size",
    )

    def __init__(
        self,
        jpeg: bytes | bytearray | memoryview,
        *,
        stream_id: int,
        run_nonce: int,
        frame_id: int,
        capture_ts_ns: int,
        symbol_size: int,
        repair: int = 0,
        fec: bool = True,
        scheme: int = FecScheme.RAPTORQ,
        flags: int = 0,
        key_id: int = 0,
        frame_crc32c: int | None = None,
    ) -> None:
        view = memoryview(jpeg)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        frame_len = len(view)
        if frame_len <= 0:
            raise LocalProtocolError("cannot send an empty frame")
        if not MIN_SYMBOL_SIZE <= symbol_size <= MAX_SYMBOL_SIZE or symbol_size % 8:
            raise LocalProtocolError(
                f"symbol size {symbol_size} is not a multiple of 8 in "
                f"{MIN_SYMBOL_SIZE}..{MAX_SYMBOL_SIZE} bytes"
            )
        if not 0 < run_nonce <= 0xFFFFFFFF:
            raise LocalProtocolError(f"run_nonce {run_nonce} is not a non-zero u32")
        k = -(-frame_len // symbol_size)
        uses_fec = fec and fec_geometry_error(frame_len, symbol_size, scheme) is None
        if frame_len > MAX_FRAME_LEN or (not uses_fec and k >= ESI_LIMIT):
            raise LocalProtocolError(
                f"frame of {frame_len} bytes needs {k} symbols of {symbol_size} bytes; the "
                f"format carries at most {MAX_FRAME_LEN} bytes and {ESI_LIMIT - 1} symbols"
            )
        self._view = view
        self.frame_len = frame_len
        self.frame_id = frame_id
        self.symbol_size = symbol_size
        self.k = k
        data = jpeg if isinstance(jpeg, bytes) else view
        self.frame_crc32c = crc32c(data) if frame_crc32c is None else frame_crc32c
        self.encoder: FrameEncoder | None = None
        if uses_fec:
            self.fec_scheme = int(scheme)
            self.repair_planned = max(0, min(repair, k, repair_capacity(scheme, k)))
            self.encoder = FrameEncoder(
                data,
                symbol_size,
                scheme=scheme,
                max_repair=self.repair_planned + nack_repair_budget(k),
            )
        else:
            self.fec_scheme = int(FecScheme.NONE)
            self.repair_planned = 0
        self._pack_args = (
            flags,
            stream_id,
            frame_id,
            symbol_size,
            frame_len,
            self.frame_crc32c,
            capture_ts_ns,
            self.fec_scheme,
            key_id,
            self.repair_planned,
            run_nonce,
        )

    def header(self, esi: int, seq: int) -> bytes:
        """The 48-byte header of symbol ``esi`` (source if < k, else repair), ``seq`` u32."""
        fl, sid, fid, t, f, crc, ts, fec, key, r, run = self._pack_args
        kind = _SOURCE if esi < self.k else _REPAIR
        return SYMBOL_HEADER.pack(
            MAGIC, VERSION, kind, fl, sid, seq, fid, esi, t, f, crc, ts, fec, key, r, run
        )

    def source_payload(self, esi: int) -> memoryview:
        """Source symbol ``esi``'s payload: a view of frame bytes ``[esi·T, (esi+1)·T)``."""
        start = esi * self.symbol_size
        return self._view[start : start + self.symbol_size]

    def source_payloads(self) -> list[memoryview]:
        """All k source payloads in ESI order (views of the frame)."""
        t, view = self.symbol_size, self._view
        return [view[i : i + t] for i in range(0, self.frame_len, t)]

    def repair_payloads(self, start_esi: int, count: int) -> list[bytes]:
        """Repair symbols ESI ``start_esi`` … + ``count`` − 1, T bytes each.

        Raises:
            LocalProtocolError: no FEC for this frame, or ESIs outside what the encoder
                gives (k … k + R + ⌈k/2⌉ − 1).
        """
        if self.encoder is None:
            raise LocalProtocolError(f"frame {self.frame_id} is sent without FEC: no repair")
        return self.encoder.repair(start_esi, count)

    def source_datagrams(self, first_seq: int) -> list[Datagram]:
        """The k source symbol datagrams, ``seq`` from ``first_seq`` (u32, wrapping)."""
        header = self.header
        return [
            (header(i, serial_add(first_seq, i)), payload)
            for i, payload in enumerate(self.source_payloads())
        ]

    def datagrams(self, first_seq: int) -> list[Datagram]:
        """Source symbols in ESI order, then ESIs k … k + R − 1; ``seq`` from ``first_seq``.

        Source payloads are views of the frame (all T bytes but the last, 1 … T); the caller
        advances its counter by ``len(result)``.
        """
        out = self.source_datagrams(first_seq)
        if self.repair_planned:
            out += self.repair_datagrams(self.k, self.repair_planned, serial_add(first_seq, self.k))
        return out

    def repair_datagrams(self, start_esi: int, count: int, first_seq: int) -> list[Datagram]:
        """Repair datagrams of ESIs ``start_esi`` … + ``count`` − 1, ``seq`` from ``first_seq``.

        Raises:
            LocalProtocolError: as :meth:`repair_payloads`.
        """
        payloads = self.repair_payloads(start_esi, count)
        return [
            (self.header(start_esi + j, serial_add(first_seq, j)), payload)
            for j, payload in enumerate(payloads)
        ]


def fragment_frame(
    jpeg: bytes | bytearray | memoryview, *, first_seq: int, **frame: Any
) -> list[Datagram]:
    """Cut ``jpeg`` into its k source symbol datagrams, then its R planned repair datagrams.

    ``frame``: the keyword arguments of :class:`SymbolFrame` (``stream_id``, ``run_nonce``,
    ``frame_id``, ``capture_ts_ns``, ``symbol_size``, ``repair``, ``fec``, ``flags``,
    ``key_id``); ``first_seq`` as :meth:`SymbolFrame.datagrams`.

    Raises:
        LocalProtocolError: as :class:`SymbolFrame`.
    """
    return SymbolFrame(jpeg, **frame).datagrams(first_seq)
