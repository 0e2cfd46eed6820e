"""Protocol v2 symbol datagrams for the receiver's tests, built from the spec (§4, §5).

Independent of the sender's fragmenter: headers come from ``codec.encode_symbol_header``,
repair symbols from ``fec.FrameEncoder`` and the CRC from ``integrity.crc32c``.
"""

from __future__ import annotations

from mcastcam.protocol.codec import encode_symbol_header
from mcastcam.protocol.fec import FrameEncoder, source_symbol_count
from mcastcam.protocol.integrity import crc32c
from mcastcam.protocol.wire import FecScheme, Kind

RUN = 0x5EED
"""run_nonce of the test sender run."""


def symbols_of(
    frame: bytes,
    frame_id: int,
    *,
    stream_id: int = 1,
    seq: int = 0,
    symbol_size: int = 96,
    repair: int = 0,
    extra: int = 0,
    fec: bool | None = None,
    ts: int = 1000,
    run_nonce: int = RUN,
    crc: int | None = None,
    scheme: int = FecScheme.RAPTORQ,
) -> list[bytes]:
    """Source symbols 0 … k − 1, then ``repair`` planned and ``extra`` NACK repair symbols.

    ``fec`` (default: ``repair > 0 or extra > 0``) sets ``fec_scheme`` to ``scheme`` (1,
    RaptorQ, unless told; 2 is Reed–Solomon); ``crc`` overrides
    the frame's CRC-32C. Sequence numbers run from ``seq``, one per datagram.
    """
    t = symbol_size
    k = source_symbol_count(len(frame), t)
    scheme = scheme if (fec if fec is not None else bool(repair or extra)) else 0
    check = crc32c(frame) if crc is None else crc

    def header(kind: int, n: int, esi: int) -> bytes:
        return encode_symbol_header(
            kind,
            stream_id,
            (seq + n) % 2**32,
            frame_id,
            esi,
            t,
            len(frame),
            check,
            ts,
            scheme,
            repair,
            run_nonce,
        )

    out = [header(Kind.SOURCE, i, i) + frame[i * t : (i + 1) * t] for i in range(k)]
    if repair or extra:
        encoder = FrameEncoder(frame, t, scheme=scheme, max_repair=repair + extra)
        payloads = encoder.repair(k, repair + extra)
        out += [header(Kind.REPAIR, k + j, k + j) + p for j, p in enumerate(payloads)]
    return out
