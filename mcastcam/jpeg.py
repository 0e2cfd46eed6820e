"""JPEG marker-level utilities: split an MJPEG stream, insert the standard DHT, read the size.

Pure functions on bytes (no I/O). The marker syntax is ITU-T T.81 (JPEG) Annex B: a frame is
SOI (``FFD8``), header segments ``FF xx`` + 2-byte big-endian length (the length counts itself,
not the marker), SOS, entropy-coded data in which ``FF`` is followed by ``00`` (stuffing),
``D0``-``D7`` (RSTn) or ``FF`` (fill), and finally EOI (``FFD9``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import overload

from mcastcam.errors import SourceError

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
_SOI_NEXT = b"\xff\xd8\xff"  # SOI is always followed by another marker
_M_SOI = 0xD8
_M_EOI = 0xD9
_M_SOS = 0xDA
_M_DHT = 0xC4
_M_TEM = 0x01
# SOFn markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC). T.81 Table B.1.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _dht_segment() -> bytes:
    """The four Huffman tables of ITU-T T.81 Annex K.3 (Tables K.3-K.6) as one DHT segment."""
    dc_lum_bits = bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    dc_chr_bits = bytes([0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    dc_vals = bytes(range(12))
    ac_lum_bits = bytes([0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D])
    ac_lum_vals = bytes.fromhex(
        "01020300041105122131410613516107227114328191a1082342b1c11552d1f0"
        "2433627282090a161718191a25262728292a3435363738393a43444546474849"
        "4a535455565758595a636465666768696a737475767778797a83848586878889"
        "8a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5"
        "c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8"
        "f9fa"
    )
    ac_chr_bits = bytes([0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77])
    ac_chr_vals = bytes.fromhex(
        "000102031104052131061241510761711322328108144291a1b1c109233352f0"
        "156272d10a162434e125f11718191a262728292a35363738393a434445464748"
        "494a535455565758595a636465666768696a737475767778797a828384858687"
        "88898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3"
        "c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8"
        "f9fa"
    )
    tables = (
        (0x00, dc_lum_bits, dc_vals),
        (0x10, ac_lum_bits, ac_lum_vals),
        (0x01, dc_chr_bits, dc_vals),
        (0x11, ac_chr_bits, ac_chr_vals),
    )
    body = b"".join(bytes([tc_th]) + bits + vals for tc_th, bits, vals in tables)
    for _, bits, vals in tables:
        assert sum(bits) == len(vals), "Annex K table: code counts must match the value count"
    return b"\xff\xc4" + (len(body) + 2).to_bytes(2, "big") + body


STANDARD_DHT = _dht_segment()
"""One DHT segment (marker included, 420 bytes) holding the T.81 Annex K.3 tables:
DC/AC luminance as table 0, DC/AC chrominance as table 1 (what UVC MJPEG assumes)."""


@dataclass(slots=True)
class SplitStats:
    """Counters filled by :func:`split_jpegs`.

    Attributes:
        frames: complete frames yielded.
        corrupt_skipped: frames that started with SOI but were truncated or malformed (dropped).
        garbage_bytes: bytes outside any frame (between frames, before the first, after the last).
    """

    frames: int = 0
    corrupt_skipped: int = 0
    garbage_bytes: int = 0


class _Corrupt(Exception):
    """Internal: the walk failed; ``resume`` is where the search for the next SOI restarts."""

    def __init__(self, message: str, resume: int) -> None:
        super().__init__(message)
        self.resume = resume


@dataclass(frozen=True, slots=True)
class _Walk:
    end: int  # offset just past EOI
    has_sof: bool
    has_dht: bool


def _walk(data: bytes, start: int) -> _Walk:
    """Walk one frame from its SOI at ``start``; raise :class:`_Corrupt` when it is malformed."""
    n = len(data)
    i = start + 2
    has_sof = has_dht = seen_sos = False
    while True:
        # At a marker: FF, optional fill FFs, then the marker code.
        if i >= n:
            raise _Corrupt("truncated: the data ends inside the frame header", start + 2)
        if data[i] != 0xFF:
            raise _Corrupt(f"expected a marker at offset {i}, found 0x{data[i]:02x}", start + 2)
        while i + 1 < n and data[i + 1] == 0xFF:
            i += 1
        if i + 1 >= n:
            raise _Corrupt("truncated: the data ends inside a marker", start + 2)
        m = data[i + 1]
        if m == _M_EOI:
            if not seen_sos:
                raise _Corrupt("EOI before any SOS (no image data)", i + 2)
            if not has_sof:
                raise _Corrupt("no SOF segment (no frame header)", i + 2)
            return _Walk(i + 2, has_sof, has_dht)
        if m == _M_SOI:
            raise _Corrupt(f"unexpected SOI at offset {i} (frame cut short)", i)
        if m == _M_TEM or 0xD0 <= m <= 0xD7 or m == 0x00:
            if m == 0x00:
                raise _Corrupt(f"invalid marker FF00 at offset {i}", start + 2)
            i += 2
            continue
        if i + 4 > n:
            raise _Corrupt("truncated: the data ends inside a segment length", start + 2)
        seg_len = (data[i + 2] << 8) | data[i + 3]
        if seg_len < 2:
            raise _Corrupt(f"segment 0xFF{m:02X} at offset {i} has length {seg_len} < 2", start + 2)
        seg_end = i + 2 + seg_len
        if seg_end > n:
            raise _Corrupt(
                f"truncated: segment 0xFF{m:02X} at offset {i} runs past the end", start + 2
            )
        if m in _SOF_MARKERS:
            has_sof = True
        elif m == _M_DHT:
            has_dht = True
        i = seg_end
        if m != _M_SOS:
            continue
        seen_sos = True
        # Entropy-coded data: skip FF00 stuffing, RSTn and fill bytes up to the next marker.
        while True:
            j = data.find(b"\xff", i)
            if j < 0 or j + 1 >= n:
                raise _Corrupt("truncated: the data ends inside the entropy-coded data", start + 2)
            nxt = data[j + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                i = j + 2
            elif nxt == 0xFF:
                i = j + 1
            else:
                i = j  # a real marker (EOI, or DHT/SOS of a progressive scan): back to the walk
                break


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def split_jpegs(
    data: bytes | bytearray | memoryview, stats: SplitStats | None = None
) -> Iterator[tuple[int, int]]:
    """Split a raw concatenated-JPEG (MJPEG) stream with a T.81 marker walk.

    Header segments are skipped by their length fields, so a JPEG thumbnail inside APP1/EXIF
    (with its own SOI/EOI) does not cut a frame; the entropy-coded data is scanned for the next
    marker honouring ``FF00`` stuffing and RSTn. Garbage between frames and truncated or corrupt
    frames are never yielded: they are counted in ``stats``.

    Args:
        data: the stream (bytes; a memoryview or bytearray is copied once to bytes).
        stats: optional counters, updated as frames are found.

    Yields:
        ``(start, end)`` byte offsets of each complete frame: ``data[start:end]`` is SOI..EOI.
    """
    buf = _as_bytes(data)
    st = stats if stats is not None else SplitStats()
    n = len(buf)
    pos = 0
    while pos < n:
        start = buf.find(_SOI_NEXT, pos)
        if start < 0:
            st.garbage_bytes += n - pos
            return
        st.garbage_bytes += start - pos
        try:
            walk = _walk(buf, start)
        except _Corrupt as exc:
            st.corrupt_skipped += 1
            pos = max(exc.resume, start + 2)
            continue
        st.frames += 1
        yield start, walk.end
        pos = walk.end


def jpeg_end(jpeg: bytes | bytearray | memoryview) -> int:
    """Offset just past the EOI of the JPEG that starts at offset 0 of ``jpeg``.

    Bytes after EOI (V4L2 buffers may be padded: ``bytesused`` larger than the JPEG) are ignored.

    Raises:
        SourceError: no SOI at offset 0, truncated, no SOF or SOS, or malformed segments.
    """
    buf = _as_bytes(jpeg)
    if not buf.startswith(SOI):
        raise SourceError(f"not a JPEG: starts with {buf[:2].hex() or 'nothing'}, not SOI ffd8")
    try:
        return _walk(buf, 0).end
    except _Corrupt as exc:
        raise SourceError(f"malformed JPEG ({len(buf)} bytes): {exc}") from None


def is_valid_jpeg(jpeg: bytes | bytearray | memoryview) -> bool:
    """True when ``jpeg`` is exactly one well-formed JPEG: SOI..EOI with SOF and SOS (T.81 B.2)."""
    try:
        return jpeg_end(jpeg) == len(jpeg)
    except SourceError:
        return False


def jpeg_size(jpeg: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(width, height)`` in pixels from the SOFn segment (T.81 B.2.2).

    Raises:
        SourceError: no SOI, no SOF before SOS/end, or a truncated header.
    """
    buf = _as_bytes(jpeg)
    if not buf.startswith(SOI):
        raise SourceError(f"not a JPEG: starts with {buf[:2].hex() or 'nothing'}, not SOI ffd8")
    for m, seg_start, _seg_end in _header_segments(buf):
        if m in _SOF_MARKERS:
            if seg_start + 9 > len(buf):
                raise SourceError("malformed JPEG: SOF segment is truncated")
            height = (buf[seg_start + 5] << 8) | buf[seg_start + 6]
            width = (buf[seg_start + 7] << 8) | buf[seg_start + 8]
            return width, height
    raise SourceError("malformed JPEG: no SOF segment before the image data")


def _header_segments(buf: bytes | memoryview) -> Iterator[tuple[int, int, int]]:
    """Yield ``(marker, segment_start, segment_end)`` from after SOI up to and including SOS.

    ``segment_start`` is the offset of the ``FF``; stops at SOS, EOI or the first malformation.
    """
    n = len(buf)
    i = 2
    while i + 4 <= n and buf[i] == 0xFF:
        m = buf[i + 1]
        if m == 0xFF:
            i += 1
            continue
        if m == _M_TEM or 0xD0 <= m <= 0xD7:
            i += 2
            continue
        if m in (_M_EOI, _M_SOI, 0x00):
            return
        seg_end = i + 2 + ((buf[i + 2] << 8) | buf[i + 3])
        if seg_end > n:
            return
        yield m, i, seg_end
        if m == _M_SOS:
            return
        i = seg_end


@overload
def ensure_dht(jpeg: bytes) -> bytes: ...
@overload
def ensure_dht(jpeg: memoryview) -> bytes | memoryview: ...
def ensure_dht(jpeg: bytes | memoryview) -> bytes | memoryview:
    """Return ``jpeg`` with the standard Huffman tables inserted before SOS if it has no DHT.

    UVC webcams send MJPEG frames without DHT (USB Video Class MJPEG payload spec); decoders
    such as browsers need it. This is the "mjpeg2jpeg" fix: the T.81 Annex K.3 tables
    (:data:`STANDARD_DHT`) go just before the first SOS. Only header segments are scanned (up to
    SOS), so the cost does not grow with the image data. A JPEG that already has a DHT is
    returned unchanged: the very same object.

    Args:
        jpeg: one JPEG, SOI first (bytes, or a byte-format memoryview such as a reassembled
            frame: it is not copied when it already has a DHT).

    Returns:
        ``jpeg`` itself, or a new bytes object 420 bytes longer.

    Raises:
        SourceError: no SOI, or no SOS in the header (so there is nowhere to insert).
    """
    if jpeg[:2] != SOI:
        raise SourceError(
            f"not a JPEG: starts with {bytes(jpeg[:2]).hex() or 'nothing'}, not SOI ffd8"
        )
    for m, seg_start, _ in _header_segments(jpeg):
        if m == _M_DHT:
            return jpeg
        if m == _M_SOS:
            return b"".join((jpeg[:seg_start], STANDARD_DHT, jpeg[seg_start:]))
    raise SourceError("malformed JPEG: no SOS segment found in the header; cannot insert DHT")
