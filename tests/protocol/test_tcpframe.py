"""The TCP re-serve framing (mcastcam.protocol.tcpframe): layout, any chunking, garbage, bounds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastcam.errors import LocalProtocolError
from mcastcam.protocol.tcpframe import (
    TCP_HEADER,
    TcpFrame,
    TcpFrameError,
    TcpFrameParser,
    encode_tcp_header,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
frames = st.builds(TcpFrame, st.binary(max_size=300), u64, u32)


def encode(frame: TcpFrame) -> bytes:
    return encode_tcp_header(len(frame.jpeg), frame.capture_ts_ns, frame.frame_id) + frame.jpeg


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, repeats allowed: empty chunks)."""
    points = sorted(c % (len(data) + 1) for c in cuts)
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def test_header_layout_matches_docs() -> None:
    header = encode_tcp_header(8, 0x0102030405060708, 0xDEADBEEF)
    assert TCP_HEADER.size == len(header) == 20
    assert header == b"MCTF" + b"\x00\x00\x00\x08" + bytes(range(1, 9)) + b"\xde\xad\xbe\xef"


@pytest.mark.parametrize(
    "fields", [(-1, 0, 0), (2**32, 0, 0), (0, -1, 0), (0, 2**64, 0), (0, 0, -1), (0, 0, 2**32)]
)
def test_out_of_range_fields_are_local_errors(fields: tuple[int, int, int]) -> None:
    with pytest.raises(LocalProtocolError, match="out of range"):
        encode_tcp_header(*fields)


@given(st.lists(frames, max_size=8), st.lists(st.integers(0, 10_000), max_size=30))
def test_any_chunking_gives_the_same_frames(sent: list[TcpFrame], cuts: list[int]) -> None:
    parser = TcpFrameParser()
    got: list[TcpFrame] = []
    for chunk in chunked(b"".join(map(encode, sent)), cuts):
        got += parser.feed(chunk)
    assert got == sent
    assert parser.at_frame_boundary and parser.buffered == 0


@given(frames, st.integers(1, 10_000))
def test_a_cut_frame_is_not_at_a_boundary(frame: TcpFrame, cut: int) -> None:
    data = encode(frame)
    parser = TcpFrameParser()
    assert parser.feed(data[: cut % len(data)]) == []
    assert not parser.at_frame_boundary or cut % len(data) == 0


@given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=10))
def test_garbage_gives_frames_or_the_library_error(data: bytes, cuts: list[int]) -> None:
    parser = TcpFrameParser(max_frame_bytes=100)
    try:
        for chunk in chunked(data, cuts):
            for frame in parser.feed(chunk):
                assert len(frame.jpeg) <= 100
    except TcpFrameError:
        with pytest.raises(TcpFrameError):  # broken for good, not resynchronised on garbage
            parser.feed(encode(TcpFrame(b"x", 0, 0)))


@given(st.lists(frames, min_size=1, max_size=4), st.integers(0, 299), st.integers(1, 64))
def test_buffer_and_frame_size_are_bounded(sent: list[TcpFrame], limit: int, step: int) -> None:
    parser = TcpFrameParser(max_frame_bytes=limit)
    data = b"".join(map(encode, sent))
    got: list[TcpFrame] = []
    try:
        for i in range(0, len(data), step):
            got += parser.feed(data[i : i + step])
            assert parser.buffered < max(TCP_HEADER.size, limit)  # one header or one frame
        got += parser.feed(b"")  # an error found after frames of the same chunk raises now
    except TcpFrameError as exc:
        assert "exceeds the limit" in str(exc)
        too_big = next(f for f in sent if len(f.jpeg) > limit)
        assert got == sent[: sent.index(too_big)]
    else:
        assert got == sent
        assert all(len(f.jpeg) <= limit for f in sent)


def test_bad_magic_is_reported_with_what_was_read() -> None:
    parser = TcpFrameParser()
    assert parser.feed(b"XXXX" + bytes(15)) == []  # 19 bytes: not a header yet
    with pytest.raises(TcpFrameError, match=r"bad TCP frame magic b'XXXX'"):
        parser.feed(b"\x00")
