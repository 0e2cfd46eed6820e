import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastcam.errors import LocalProtocolError
from mcastcam.protocol.codec import Symbol, decode
from mcastcam.protocol.fec import FrameDecoder
from mcastcam.protocol.fragmenter import SymbolFrame, fragment_frame, symbol_size_for_mtu
from mcastcam.protocol.integrity import crc32c
from mcastcam.protocol.wire import Kind

RUN = 0xC0FFEE


def test_symbol_size_follows_the_mtu() -> None:
    assert symbol_size_for_mtu(1500) == (1500 - 28 - 48) // 8 * 8 == 1424
    assert symbol_size_for_mtu(1500, auth=True) == 1408
    assert symbol_size_for_mtu(9000) == 8920
    assert symbol_size_for_mtu(9000, auth=True) == 8904
    assert symbol_size_for_mtu(1499) == 1416  # rounded down to a multiple of 8
    assert symbol_size_for_mtu(65535) == 65000
    assert symbol_size_for_mtu(576) == 496
    with pytest.raises(LocalProtocolError, match="MTU 500"):
        symbol_size_for_mtu(500)
    with pytest.raises(LocalProtocolError, match="MTU 65536"):
        symbol_size_for_mtu(65536)


def _decode_all(datagrams: list[tuple[bytes, bytes | memoryview]]) -> list[Symbol]:
    out = []
    for h, p in datagrams:
        sym = decode(h + bytes(p))
        assert isinstance(sym, Symbol)
        out.append(sym)
    return out


def test_source_symbols_are_views_of_t_bytes_and_a_short_last_one() -> None:
    jpeg = bytes(range(256)) * 20  # 5120 bytes
    datagrams = fragment_frame(
        jpeg,
        stream_id=9,
        run_nonce=RUN,
        first_seq=2**32 - 2,
        frame_id=5,
        capture_ts_ns=123,
        symbol_size=1424,
    )
    assert len(datagrams) == 4  # ceil(5120 / 1424), no repair asked for
    assert [len(p) for _, p in datagrams] == [1424, 1424, 1424, 5120 - 3 * 1424]
    assert all(isinstance(p, memoryview) and p.obj is jpeg for _, p in datagrams)  # no copy
    symbols = _decode_all(datagrams)
    assert [s.seq for s in symbols] == [2**32 - 2, 2**32 - 1, 0, 1]
    assert [s.esi for s in symbols] == [0, 1, 2, 3]
    assert {s.frame_crc32c for s in symbols} == {crc32c(jpeg)}
    assert {(s.kind, s.fec_scheme, s.repair_planned, s.run_nonce) for s in symbols} == {
        (Kind.SOURCE, 1, 0, RUN)
    }
    assert b"".join(bytes(p) for _, p in datagrams) == jpeg


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6000), st.integers(0, 10), st.data())
def test_source_and_repair_rebuild_the_frame(
    frame_len: int, repair: int, data: st.DataObject
) -> None:
    jpeg = data.draw(st.binary(min_size=frame_len, max_size=frame_len))
    t = 64 * data.draw(st.integers(1, 4))
    datagrams = fragment_frame(
        jpeg,
        stream_id=1,
        run_nonce=RUN,
        first_seq=10,
        frame_id=2,
        capture_ts_ns=0,
        symbol_size=t,
        repair=repair,
    )
    symbols = _decode_all(datagrams)
    k = -(-frame_len // t)
    r = min(repair, k)
    assert len(symbols) == k + r
    assert [s.esi for s in symbols] == list(range(k + r))
    assert [s.kind for s in symbols] == [Kind.SOURCE] * k + [Kind.REPAIR] * r
    assert [s.seq for s in symbols] == list(range(10, 10 + k + r))
    assert all(s.repair_planned == r for s in symbols)
    # lose up to R source symbols: the rest plus the repair symbols decode byte-exact
    lost = set(data.draw(st.lists(st.integers(0, k - 1), max_size=r, unique=True)))
    dec = FrameDecoder(frame_len, t)
    out = None
    for s in symbols:
        if s.esi not in lost:
            out = dec.add(s.esi, s.payload) or out
    if not lost:
        return  # no decoding needed: the source symbols are the frame
    if out is None:  # RaptorQ at exactly k symbols fails 0.4 % of the time; k + 2 always
        frame = SymbolFrame(
            jpeg, stream_id=1, run_nonce=RUN, frame_id=2, capture_ts_ns=0, symbol_size=t, repair=r
        )
        for esi, p in enumerate(frame.repair_payloads(k + r, 2), start=k + r):
            out = dec.add(esi, p) or out
    assert out == jpeg


def test_nack_repair_symbols_are_fresh_and_bounded() -> None:
    jpeg = bytes(range(200)) * 50  # 10,000 bytes, k = 8 at T = 1,280
    frame = SymbolFrame(
        jpeg, stream_id=1, run_nonce=RUN, frame_id=3, capture_ts_ns=0, symbol_size=1280, repair=2
    )
    assert (frame.k, frame.repair_planned, frame.fec_scheme) == (8, 2, 1)
    # budget: R + nack_repair_budget(8) = 2 + min(k + 2, 16) = 12 repair (was R + max(2, k/2))
    more = frame.repair_datagrams(10, 4, first_seq=100)
    syms = _decode_all(more)
    assert [s.esi for s in syms] == [10, 11, 12, 13]
    assert [s.seq for s in syms] == [100, 101, 102, 103]
    assert all(s.kind == Kind.REPAIR and len(s.payload) == 1280 for s in syms)
    assert len(frame.repair_payloads(19, 1)) == 1  # ESI k + 12 − 1, the last one
    with pytest.raises(LocalProtocolError, match="outside"):
        frame.repair_payloads(20, 1)


def test_repair_is_capped_at_k_and_absent_without_fec() -> None:
    common = dict(stream_id=1, run_nonce=RUN, frame_id=0, capture_ts_ns=0, symbol_size=64)
    frame = SymbolFrame(bytes(100), repair=50, **common)  # type: ignore[arg-type]
    assert (frame.k, frame.repair_planned) == (2, 2)
    off = SymbolFrame(bytes(100), repair=50, fec=False, **common)
    assert (off.fec_scheme, off.repair_planned, off.encoder) == (0, 0, None)
    with pytest.raises(LocalProtocolError, match="without FEC"):
        off.repair_payloads(2, 1)
    datagrams = fragment_frame(bytes(100), first_seq=0, repair=5, fec=False, **common)
    assert {(s.fec_scheme, s.kind) for s in _decode_all(datagrams)} == {(0, Kind.SOURCE)}


def test_frames_above_8_mib_go_without_fec() -> None:
    big = memoryview(bytearray(8 * 1024 * 1024 + 1))
    frame = SymbolFrame(
        big, stream_id=1, run_nonce=RUN, frame_id=0, capture_ts_ns=0, symbol_size=1424, repair=9
    )
    assert (frame.fec_scheme, frame.repair_planned, frame.encoder) == (0, 0, None)
    header = frame.header(0, 0)
    sym = decode(header + bytes(frame.source_payload(0)))
    assert isinstance(sym, Symbol) and sym.fec_scheme == 0
    assert frame.source_payload(0).obj is big.obj
    exactly = SymbolFrame(
        big[:-1], stream_id=1, run_nonce=RUN, frame_id=0, capture_ts_ns=0, symbol_size=1424
    )
    assert exactly.fec_scheme == 1


def test_bad_frames_are_refused_with_the_numbers() -> None:
    common = dict(stream_id=1, run_nonce=RUN, first_seq=0, frame_id=0, capture_ts_ns=0)
    with pytest.raises(LocalProtocolError, match="empty"):
        fragment_frame(b"", symbol_size=64, **common)
    with pytest.raises(LocalProtocolError, match="symbol size 100"):
        fragment_frame(b"x", symbol_size=100, **common)
    with pytest.raises(LocalProtocolError, match="run_nonce 0"):
        fragment_frame(b"x", symbol_size=64, **{**common, "run_nonce": 0})


def test_frame_symbol_size_fits_a_one_symbol_frame_and_keeps_larger_ones() -> None:
    from mcastcam.protocol.fragmenter import frame_symbol_size

    assert frame_symbol_size(7000, 65000) == 7000  # one symbol, not a 65 kB repair symbol
    assert frame_symbol_size(1, 1424) == 64  # the format's smallest symbol
    assert frame_symbol_size(1423, 1424) == 1424
    assert frame_symbol_size(3000, 1424) == 1424
    assert frame_symbol_size(365_048, 1424) == 1424
    for frame_len in (1, 63, 64, 1000, 1423, 1424, 1425, 5120, 99_999):
        for t_max in (64, 480, 1408, 1424, 8920, 65000):
            t = frame_symbol_size(frame_len, t_max)
            assert 64 <= t <= max(t_max, 64) and t % 8 == 0
            assert -(-frame_len // t) == -(-frame_len // t_max)
