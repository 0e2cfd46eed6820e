"""The multipart/x-mixed-replace parser (mcastcam.protocol.multipart): pure, any chunking."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastcam.errors import LocalProtocolError
from mcastcam.protocol.frame import Frame
from mcastcam.protocol.multipart import (
    MAX_HEADERS,
    MultipartError,
    MultipartParser,
    Part,
    boundary_from_content_type,
    parse_timestamp,
)
from mcastcam.receiver.http import STREAM_BOUNDARY, encode_http_part, encode_http_part_advance

BOUNDARY = b"boundarydonotcross"


@dataclass(frozen=True)
class Spec:
    """One part to put on the wire, and how."""

    body: bytes
    with_length: bool
    ts_us: int | None  # X-Timestamp in microseconds
    frame_id: int | None
    extra: tuple[tuple[str, str], ...]
    blank_lines: int  # before its delimiter line

    def expected(self) -> Part:
        headers = {"content-type": "image/jpeg"}
        if self.with_length:
            headers["content-length"] = str(len(self.body))
        if self.ts_us is not None:
            headers["x-timestamp"] = f"{self.ts_us // 10**6}.{self.ts_us % 10**6:06d}"
        if self.frame_id is not None:
            headers["x-frame-id"] = str(self.frame_id)
        headers.update((k.lower(), v) for k, v in self.extra)
        ts_ns = 0 if self.ts_us is None else self.ts_us * 1000
        return Part(self.body, headers, ts_ns, self.frame_id)

    def encode(self, eol: bytes, blank_lines: bool) -> bytes:
        """The CRLF before its delimiter, the delimiter line, the headers and the body."""
        blank = [b""] * self.blank_lines if blank_lines else []
        lines = [b"", *blank, b"--" + BOUNDARY, b"Content-Type: image/jpeg"]
        if self.with_length:
            lines.append(b"Content-Length: %d" % len(self.body))
        if self.ts_us is not None:
            lines.append(f"X-Timestamp: {self.ts_us // 10**6}.{self.ts_us % 10**6:06d}".encode())
        if self.frame_id is not None:
            lines.append(b"X-Frame-Id: %d" % self.frame_id)
        lines += [f"{k}: {v}".encode() for k, v in self.extra]
        return eol.join([*lines, b""]) + eol + self.body


def delimited(spec: Spec) -> bool:
    """A body without Content-Length cannot hold the delimiter (RFC 2046 §5.1.1)."""
    return spec.with_length or b"\n--" + BOUNDARY not in spec.body


header_names = st.sampled_from(["X-Thing", "Cache-Control", "x-other"])
header_values = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20)
specs = st.builds(
    Spec,
    body=st.binary(max_size=200),
    with_length=st.booleans(),
    ts_us=st.none() | st.integers(0, 2**50),
    frame_id=st.none() | st.integers(0, 2**32 - 1),
    extra=st.lists(st.tuples(header_names, header_values), max_size=3).map(tuple),
    blank_lines=st.integers(0, 2),
).filter(delimited)


def stream(parts: list[Spec], eol: bytes, closing: bool) -> bytes:
    # blank lines may pad before a delimiter, but not after a body read up to it
    pieces = [p.encode(eol, i == 0 or parts[i - 1].with_length) for i, p in enumerate(parts)]
    data = b"".join(pieces).removeprefix(eol)
    # a body without Content-Length ends at the next delimiter: there must be one
    if closing or (parts and not parts[-1].with_length):
        data += eol + b"--" + BOUNDARY + b"--" + eol + b"epilogue, ignored"
    return data


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted(c % (len(data) + 1) for c in cuts)
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(
    st.lists(specs, max_size=6),
    st.sampled_from([b"\r\n", b"\n"]),
    st.booleans(),
    st.lists(st.integers(0, 5000), max_size=40),
)
def test_any_chunking_gives_the_same_parts(
    parts: list[Spec], eol: bytes, closing: bool, cuts: list[int]
) -> None:
    data = stream(parts, eol, closing)
    parser = MultipartParser(BOUNDARY)
    got: list[Part] = []
    for chunk in chunked(data, cuts):
        got += parser.feed(chunk)
    want = [p.expected() for p in parts]
    if eol == b"\n":  # without Content-Length, a body's own final CR reads as the CRLF's
        want = [
            w if p.with_length else replace(w, body=w.body.removesuffix(b"\r"))
            for w, p in zip(want, parts, strict=True)
        ]
    assert got == want
    assert parser.closed == (closing or bool(parts and not parts[-1].with_length))


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=5), st.integers(1, 50))
def test_the_receivers_own_stream_both_modes(jpegs: list[bytes], step: int) -> None:
    served = [Frame(j, i, 10**18 + i * 1234567, 1, 0.0) for i, j in enumerate(jpegs)]
    first_line = b"--" + STREAM_BOUNDARY.encode() + b"\r\n"
    plain = first_line + b"".join(b"".join(map(bytes, encode_http_part(f))) for f in served)
    advance = b"".join(b"".join(map(bytes, encode_http_part_advance(f))) for f in served)
    advance = first_line + b"Content-Type: image/jpeg\r\n\r\n" + advance
    for data, with_ids in ((plain, True), (advance, False)):
        parser = MultipartParser.from_content_type(
            f"multipart/x-mixed-replace;boundary={STREAM_BOUNDARY}"
        )
        got = [p for i in range(0, len(data), step) for p in parser.feed(data[i : i + step])]
        assert [p.body for p in got] == jpegs  # advance: each JPEG is followed by a delimiter
        if not with_ids:  # advance mode sends the next part's headers before its length
            assert all(p.frame_id is None and p.capture_ts_ns == 0 for p in got)
            continue
        assert [p.frame_id for p in got] == [f.frame_id for f in served]
        assert [p.capture_ts_ns for p in got] == [f.capture_ts_ns // 1000 * 1000 for f in served]


@given(st.binary(max_size=400), st.lists(st.integers(0, 500), max_size=10))
def test_garbage_gives_parts_or_the_library_error(data: bytes, cuts: list[int]) -> None:
    parser = MultipartParser(b"b", max_header_bytes=64, max_part_bytes=100)
    try:
        for chunk in chunked(data, cuts):
            for part in parser.feed(chunk):
                assert len(part.body) <= 100
            # one header block, or one body (with the delimiter when read up to it)
            assert parser.buffered <= max(64, 100 + len(b"\n--b"))
    except MultipartError:
        with pytest.raises(MultipartError):  # broken for good
            parser.feed(b"--b\r\n\r\n")


@given(st.lists(specs, min_size=1, max_size=4), st.binary(min_size=1, max_size=8), st.data())
def test_corrupted_streams_give_parts_or_the_library_error(
    parts: list[Spec], noise: bytes, data: st.DataObject
) -> None:
    wire = stream(parts, b"\r\n", True)
    at = data.draw(st.integers(0, len(wire)))
    parser = MultipartParser(BOUNDARY)
    with contextlib.suppress(MultipartError):  # anything else fails the test
        parser.feed(wire[:at] + noise + wire[at:])


def test_a_header_block_over_the_limit_fails_before_it_ends() -> None:
    parser = MultipartParser(b"b", max_header_bytes=100)
    assert parser.feed(b"--b\r\nX-Long: " + b"a" * 80) == []
    with pytest.raises(MultipartError, match="header block longer than 100 bytes"):
        parser.feed(b"a" * 20)
    assert parser.buffered == 0


def test_too_many_headers() -> None:
    parser = MultipartParser(b"b")
    head = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
    with pytest.raises(MultipartError, match="more than 64 part headers"):
        parser.feed(b"--b\r\n" + head)


def test_content_length_over_the_limit_fails_at_the_headers() -> None:
    parser = MultipartParser(b"b", max_part_bytes=1000)
    with pytest.raises(MultipartError, match=r"Content-Length 1001: outside 0\.\.1000"):
        parser.feed(b"--b\r\nContent-Length: 1001\r\n\r\n")


def test_a_body_without_length_is_bounded_while_it_waits_for_the_delimiter() -> None:
    parser = MultipartParser(b"b", max_part_bytes=1000)
    assert parser.feed(b"--b\r\n\r\n" + b"x" * 1000) == []
    assert parser.feed(b"\r") == []  # 1000 bytes, then perhaps the delimiter
    with pytest.raises(MultipartError, match="without Content-Length longer than 1000 bytes"):
        parser.feed(b"y" * 8)
    ok = MultipartParser(b"b", max_part_bytes=1000)
    assert ok.feed(b"--b\r\n\r\n" + b"x" * 1000 + b"\r\n--b\r\n")[0].body == b"x" * 1000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"--wrong\r\n", "expected boundary"),
        (b"preamble\r\n--b\r\n", "expected boundary"),
        (b"--b\r\nno colon here\r\n", "bad part header line"),
        (b"--b\r\n: no name\r\n", "bad part header line"),
        (b"--b\r\nContent-Length: lots\r\n\r\n", "not an integer"),
        (b"--b\r\nContent-Length: -1\r\n\r\n", "not an integer"),
        (b"--b\r\nContent-Length: \xb2\r\n\r\n", "not an integer"),
        (b"--b\r\nX-Frame-Id: 4294967296\r\n\r\n", "outside 0..4294967295"),
        (b"--b\r\nX-Timestamp: soon\r\n\r\n", "not a number"),
        (b"--b\r\nX-Timestamp: -1.5\r\n\r\n", "not a time"),
        (b"--b\r\nX-Timestamp: 1e999999999\r\n\r\n", "not a time"),
        (b"--b\r\nX-Timestamp: NaN\r\n\r\n", "not a time"),
    ],
)
def test_malformed_parts_fail_at_once(data: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        MultipartParser(b"b").feed(data)


def test_padding_blank_lines_and_closing_delimiter() -> None:
    parser = MultipartParser(b"b")
    parts = parser.feed(
        b"\r\n\r\n--b \t\r\nContent-Length: 3\r\n\r\nabc\r\n\r\n--b\r\n\r\nxyz\r\n--b--\r\nmore"
    )
    assert [p.body for p in parts] == [b"abc", b"xyz"]
    assert parts[1].headers == {} and parts[1].frame_id is None
    assert parser.closed and parser.feed(b"--b\r\nContent-Length: 1\r\n\r\nq") == []


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/x-mixed-replace;boundary=boundarydonotcross", b"boundarydonotcross"),
        ('Multipart/X-Mixed-Replace; charset=x; Boundary="a b"', b"a b"),
        ("multipart/x-mixed-replace;boundary=--myboundary", b"myboundary"),
        ("multipart/mixed; boundary=frame", b"frame"),
    ],
)
def test_boundary_from_content_type(content_type: str, boundary: bytes) -> None:
    assert boundary_from_content_type(content_type) == boundary


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "", "multipart/x-mixed-replace", "multipart/x-mixed-replace;boundary=",
     "multipart/x-mixed-replace;boundary=--", "multipart/mixed;boundary=" + "x" * 201],
)  # fmt: skip
def test_content_types_without_a_usable_boundary(content_type: str) -> None:
    with pytest.raises(MultipartError):
        boundary_from_content_type(content_type)


def test_timestamps_are_exact_nanoseconds() -> None:
    assert parse_timestamp("1712345678.123456") == 1_712_345_678_123_456_000
    assert parse_timestamp(" 0.000000001 ") == 1
    assert parse_timestamp("5") == 5_000_000_000


def test_bad_construction_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        MultipartParser(b"")
    with pytest.raises(LocalProtocolError):
        MultipartParser(b"b", max_part_bytes=0)
