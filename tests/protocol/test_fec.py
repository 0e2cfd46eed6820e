"""FEC scheme 1 (RaptorQ through the `raptorq` package): geometry, systematic source symbols,
byte-exact decoding from every loss pattern the repair covers, and bounded refusals."""

from __future__ import annotations

import random

import pytest
import raptorq
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastcam.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from mcastcam.protocol.fec import (
    DECODE_OVERHEAD,
    ESI_LIMIT,
    MAX_FEC_FRAME_LEN,
    FrameDecoder,
    FrameEncoder,
    decode_overhead,
    fec_geometry_error,
    repair_capacity,
)

# T for every MTU the sender accepts (576 … 65,535; docs/protocol-v2.md §10), with and without
# the 16-byte tag: 480 and 496 at MTU 576, 1,408 and 1,424 at 1,500, 8,904 and 8,920 at 9,000,
# and the 65,000 cap.
SENDER_SYMBOL_SIZES = (480, 496, 1408, 1424, 8904, 8920, 65000)


def _frame(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _symbols(frame: bytes, t: int, r: int) -> list[tuple[int, bytes]]:
    enc = FrameEncoder(frame, t)
    source = [(i, bytes(s)) for i, s in enumerate(enc.source_symbols())]
    return source + list(enumerate(enc.repair(enc.k, r), start=enc.k))


@pytest.mark.parametrize("t", SENDER_SYMBOL_SIZES)
def test_library_source_packets_are_the_frame_in_order_at_8_mib(t: int) -> None:
    # §5: with one source block and no sub-blocks source packet i is frame bytes [i·T, (i+1)·T)
    # zero-padded; the library's defaults keep that up to 8 MiB for every T the sender uses.
    frame = bytes(range(251)) * (MAX_FEC_FRAME_LEN // 251) + bytes(MAX_FEC_FRAME_LEN % 251)
    assert len(frame) == MAX_FEC_FRAME_LEN
    packets = raptorq.Encoder.with_defaults(frame, t).get_encoded_packets(0)
    k = -(-len(frame) // t)
    assert len(packets) == k
    view = memoryview(frame)
    for i, p in enumerate(packets):
        assert int.from_bytes(p[:4], "big") == i
        assert p[4:] == bytes(view[i * t : (i + 1) * t]).ljust(t, b"\0"), (t, i)
    assert fec_geometry_error(len(frame), t) is None


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 20_000),
    t=st.sampled_from([64, 128, 480, 1408]),
    seed=st.integers(0, 2**32 - 1),
)
def test_encoder_source_symbols_equal_library_source_packets(n: int, t: int, seed: int) -> None:
    frame = _frame(n, seed)
    enc = FrameEncoder(frame, t)
    packets = raptorq.Encoder.with_defaults(frame, t).get_encoded_packets(3)
    assert enc.k == len(packets) - 3
    for i, sym in enumerate(enc.source_symbols()):
        assert sym == packets[i][4 : 4 + len(sym)]
        assert sym == enc.source_symbol(i)
    assert b"".join(enc.source_symbols()) == frame
    assert enc.repair(enc.k, 3) == [p[4:] for p in packets[enc.k :]]


def test_source_symbols_are_views_of_the_frame_not_copies() -> None:
    frame = bytearray(_frame(5000))
    enc = FrameEncoder(memoryview(frame), 1408)
    syms = enc.source_symbols()
    assert all(isinstance(s, memoryview) and s.obj is frame for s in syms)
    frame[1408] ^= 0xFF  # the JPEG's own bytes: a change shows through
    assert syms[1][0] == frame[1408]
    assert [len(s) for s in syms] == [1408, 1408, 1408, 5000 - 3 * 1408]
    b = _frame(3000)
    assert all(s.obj is b for s in FrameEncoder(b, 1024).source_symbols())


def test_repair_symbols_are_fresh_and_reproducible_by_esi() -> None:
    frame = _frame(365_048 // 8)  # k = 33 at T = 1,408
    enc = FrameEncoder(frame, 1408)
    assert enc.k == 33
    whole = enc.repair(33, 7)
    assert whole == enc.repair(33, 3) + enc.repair(36, 4)
    assert len(set(whole)) == 7 and all(len(s) == 1408 for s in whole)
    assert enc.repair(40, 0) == []
    with pytest.raises(LocalProtocolError):
        enc.repair(32, 1)  # a source ESI
    with pytest.raises(LocalProtocolError):
        enc.repair(33, -1)
    with pytest.raises(LocalProtocolError):
        enc.repair(33, enc.max_repair + 1)  # bounded: 2·k + 16 by default
    assert enc.max_repair == 2 * 33 + 16
    assert len(FrameEncoder(frame, 1408, max_repair=4).repair(33, 4)) == 4


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_every_loss_pattern_within_the_repair_decodes_byte_exact(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 4000), label="frame_len")
    t = data.draw(st.sampled_from([64, 128, 256]), label="T")
    r = data.draw(st.integers(DECODE_OVERHEAD, 12), label="R")
    frame = _frame(n, data.draw(st.integers(0, 2**16)))
    symbols = _symbols(frame, t, r)
    k = len(symbols) - r
    # lose at most R − 2 of the k + R symbols (any of them, source or repair), in any order
    lost = data.draw(st.sets(st.integers(0, k + r - 1), max_size=r - DECODE_OVERHEAD))
    kept = [s for s in symbols if s[0] not in lost]
    order = data.draw(st.permutations(kept), label="order")
    dec = FrameDecoder(n, t)
    results = [dec.add(esi, payload) for esi, payload in order]
    frames = [x for x in results if x is not None]
    assert frames == [frame]  # byte-exact, and exactly once
    assert dec.frame == frame and dec.needed == 0
    first = next(i for i, x in enumerate(results) if x is not None)
    assert first + 1 <= k + DECODE_OVERHEAD  # decoded by k + 2 distinct symbols at the latest


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_beyond_the_repair_no_frame_or_the_right_one_never_a_wrong_one(
    data: st.DataObject,
) -> None:
    n = data.draw(st.integers(1, 4000), label="frame_len")
    t = data.draw(st.sampled_from([64, 128]), label="T")
    r = data.draw(st.integers(0, 8), label="R")
    frame = _frame(n, data.draw(st.integers(0, 2**16)))
    symbols = _symbols(frame, t, r)
    k = len(symbols) - r
    keep = data.draw(st.integers(0, min(k + 1, k + r)), label="kept")
    order = data.draw(st.permutations(symbols))[:keep]
    dec = FrameDecoder(n, t)
    frames = [x for x in (dec.add(e, p) for e, p in order) if x is not None]
    if keep < k:
        assert frames == [] and dec.frame is None  # fewer than k symbols never decode
        assert dec.needed == k + DECODE_OVERHEAD - keep
    else:  # k or k + 1 symbols: RaptorQ is not MDS, so maybe, but only ever the frame
        assert frames in ([], [frame])


def test_needed_counts_down_to_k_plus_2_and_duplicates_are_absorbed() -> None:
    frame = _frame(1000)
    symbols = _symbols(frame, 64, 4)  # k = 16
    dec = FrameDecoder(1000, 64)
    assert (dec.k, dec.needed, dec.distinct) == (16, 18, 0)
    assert dec.add(*symbols[3]) is None
    assert dec.add(*symbols[3]) is None
    assert (dec.distinct, dec.duplicates, dec.needed) == (1, 1, 17)
    for s in symbols[:15]:
        assert dec.add(*s) is None
    assert (dec.distinct, dec.duplicates) == (15, 2)
    assert dec.needed == 3
    out = dec.add(*symbols[15])  # all source symbols: the frame, nothing to rebuild
    assert out == frame
    assert dec.needed == 0  # k symbols were enough here; a NACK would have asked for k + 2
    assert dec.add(*symbols[17]) is None  # after the frame: absorbed, no second frame
    assert dec.needed == 0


def test_bad_symbols_are_refused_with_a_reason_and_change_nothing() -> None:
    frame = _frame(1000)
    symbols = _symbols(frame, 64, 3)  # k = 16, last source symbol 40 bytes
    dec = FrameDecoder(1000, 64, max_symbols=17)
    cases = [
        (ESI_LIMIT, b"x" * 64, "bad_esi"),
        (-1, b"x" * 64, "bad_esi"),
        (15, b"x" * 64, "length_mismatch"),  # the short last source symbol must be short
        (15, b"", "length_mismatch"),
        (3, b"x" * 63, "length_mismatch"),
        (16, b"x" * 65, "length_mismatch"),
        (ESI_LIMIT - 1, b"x" * 40, "length_mismatch"),
    ]
    for esi, payload, reason in cases:
        with pytest.raises(DecodeError) as info:
            dec.add(esi, payload)
        assert info.value.reason == reason
        assert isinstance(info.value, RemoteProtocolError)
    assert dec.distinct == 0
    for s in symbols[1:18]:  # 17 symbols without source 0: a 1/256 chance it decodes early
        if dec.add(*s) is not None:
            break
    else:
        with pytest.raises(DecodeError) as info:
            dec.add(*symbols[0])
        assert info.value.reason == "symbol_overflow"
        assert dec.distinct == 17


@pytest.mark.parametrize(
    ("frame_len", "t", "reason"),
    [
        (1000, 60, "bad_geometry"),
        (1000, 100, "bad_geometry"),  # not a multiple of 8
        (1000, 65_008, "bad_geometry"),
        (0, 64, "bad_geometry"),
        (MAX_FEC_FRAME_LEN + 1, 1408, "bad_fec"),
        (MAX_FEC_FRAME_LEN, 144, "bad_fec"),  # k = 58,255 > K'max 56,403
        (56_404 * 64, 64, "bad_fec"),
    ],
)
def test_geometry_outside_scheme_1_is_refused(frame_len: int, t: int, reason: str) -> None:
    error = fec_geometry_error(frame_len, t)
    assert error is not None and error[0] == reason
    with pytest.raises(DecodeError) as info:
        FrameDecoder(frame_len, t)
    assert info.value.reason == reason
    if 0 < frame_len <= 1 << 16:
        with pytest.raises(LocalProtocolError):
            FrameEncoder(bytes(frame_len), t)


def test_geometry_limits_that_are_allowed() -> None:
    for frame_len, t in [(1, 64), (MAX_FEC_FRAME_LEN, 152), (56_403 * 64, 64), (1, 65_000)]:
        assert fec_geometry_error(frame_len, t) is None
    dec = FrameDecoder(1, 64)
    assert dec.k == 1
    assert dec.add(0, b"z") == b"z"


def test_a_1080x1920_frame_decodes_from_repair_after_5_percent_loss() -> None:
    frame = _frame(365_048, seed=7)  # the `fox` recording's median frame: k = 260 at 1,408
    enc = FrameEncoder(frame, 1408)
    assert enc.k == 260
    rng = random.Random(3)
    source = list(enumerate(enc.source_symbols()))
    lost = set(rng.sample(range(260), 13))
    repair = enc.repair(260, 15)
    dec = FrameDecoder(len(frame), 1408)
    got = [dec.add(e, p) for e, p in source if e not in lost]
    assert not any(got)
    out = None
    for e, p in enumerate(repair, start=260):
        out = dec.add(e, p)
        if out is not None:
            break
    assert out == frame
    assert dec.distinct <= 260 + DECODE_OVERHEAD


# ---------------------------------------------------------------- scheme 2: Reed–Solomon (§5a)

RS = 2


def _rs_symbols(frame: bytes, t: int, r: int) -> list[tuple[int, bytes]]:
    enc = FrameEncoder(frame, t, scheme=RS, max_repair=r)
    source = [(i, bytes(s)) for i, s in enumerate(enc.source_symbols())]
    return source + list(enumerate(enc.repair(enc.k, r), start=enc.k))


@pytest.mark.parametrize(
    ("k", "m"),
    [
        (1, 32),
        (9, 32),
        (96, 32),
        (97, 64),
        (163, 64),
        (192, 64),
        (193, 128),
        (260, 128),
        (384, 128),
        (385, 256),
        (32_768, 16_384),
    ],
)
def test_rs_repair_capacity_is_a_power_of_two_from_a_third_of_k(k: int, m: int) -> None:
    assert repair_capacity(RS, k) == m
    assert repair_capacity(1, k) == ESI_LIMIT - k and repair_capacity(0, k) == 0
    assert decode_overhead(RS) == 0 and decode_overhead(1) == DECODE_OVERHEAD


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_rs_any_k_symbols_decode_byte_exact_in_any_order(data: st.DataObject) -> None:
    """MDS: every loss pattern of at most R of the k + R symbols decodes, at the k-th."""
    n = data.draw(st.integers(1, 6000), label="frame_len")
    t = data.draw(st.sampled_from([64, 128, 256]), label="T")
    frame = _frame(n, data.draw(st.integers(0, 2**16)))
    k = -(-n // t)
    r = data.draw(st.integers(0, repair_capacity(RS, k)), label="R")
    symbols = _rs_symbols(frame, t, r)
    lost = data.draw(st.sets(st.integers(0, k + r - 1), max_size=r))
    kept = [s for s in symbols if s[0] not in lost]
    order = data.draw(st.permutations(kept), label="order")
    dec = FrameDecoder(n, t, scheme=RS)
    results = [dec.add(esi, payload) for esi, payload in order]
    assert [x for x in results if x is not None] == [frame]  # byte-exact, exactly once
    assert next(i for i, x in enumerate(results) if x is not None) == k - 1  # at k symbols
    assert dec.needed == 0 and dec.frame == frame


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_rs_fewer_than_k_symbols_never_give_a_frame(data: st.DataObject) -> None:
    n = data.draw(st.integers(65, 6000), label="frame_len")
    t = data.draw(st.sampled_from([64, 128]), label="T")
    frame = _frame(n, data.draw(st.integers(0, 2**16)))
    k = -(-n // t)
    symbols = _rs_symbols(frame, t, repair_capacity(RS, k))
    keep = data.draw(st.integers(0, k - 1), label="kept")
    order = data.draw(st.permutations(symbols))[:keep]
    dec = FrameDecoder(n, t, scheme=RS)
    assert all(dec.add(e, p) is None for e, p in order)
    assert dec.frame is None and dec.needed == k - keep and dec.distinct == keep


def test_rs_repair_is_reproducible_by_esi_and_bounded_by_m() -> None:
    frame = _frame(365_048)
    enc = FrameEncoder(frame, 1408, scheme=RS)  # k = 260, m(k) = 128
    assert (enc.k, enc.max_repair, enc.built) == (260, 128, False)
    whole = enc.repair(260, 128)
    assert enc.built and len(set(whole)) == 128 and all(len(s) == 1408 for s in whole)
    assert whole[5:9] == enc.repair(265, 4)
    with pytest.raises(LocalProtocolError):
        enc.repair(260 + 127, 2)  # ESI k + m is beyond the code
    assert FrameEncoder(frame, 1408, scheme=RS, max_repair=1000).max_repair == 128
    dec = FrameDecoder(365_048, 1408, scheme=RS)
    with pytest.raises(DecodeError) as err:
        dec.add(260 + 128, whole[0])
    assert err.value.reason == "bad_esi" and dec.distinct == 0
    # the last 128 source symbols lost: the repair rebuilds them, byte-exact
    for i in range(132):
        assert dec.add(i, enc.source_symbol(i)) is None
    out = None
    for j, payload in enumerate(whole):
        out = dec.add(260 + j, payload) or out
    assert out == frame and dec.distinct == 260


def test_rs_geometry_limits() -> None:
    assert fec_geometry_error(32_768 * 64, 64, RS) is None
    assert fec_geometry_error(32_768 * 64 + 1, 64, RS) == (
        "bad_fec",
        "32769 source symbols of 64 bytes is above FEC scheme 2's 32768",
    )
    assert fec_geometry_error(MAX_FEC_FRAME_LEN + 1, 65000, RS) is not None
    assert fec_geometry_error(1000, 64, 3) == ("bad_fec", "FEC scheme 3 is not 1 or 2")
    with pytest.raises(DecodeError) as err:
        FrameDecoder(32_768 * 64 + 1, 64, scheme=RS)
    assert err.value.reason == "bad_fec"
