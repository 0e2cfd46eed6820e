import contextlib
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastcam.errors import DecodeError, LocalProtocolError
from mcastcam.protocol import codec, wire
from mcastcam.protocol.codec import (
    DiscoveryAnnounce,
    DiscoveryQuery,
    Fragment,
    Heartbeat,
    ReceiverReport,
    decode,
    encode,
    encode_fragment_header,
    fragment_geometry,
)

u8 = st.integers(0, 2**8 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
names = st.text(max_size=20).filter(lambda s: len(s.encode()) <= wire.MAX_NAME_BYTES)
ipv4 = st.ip_addresses(v=4).map(str)


@st.composite
def fragments(draw: st.DrawFn) -> Fragment:
    frame_len = draw(st.integers(1, 5000))
    count = draw(st.integers(1, min(frame_len, 40)))
    index = draw(st.integers(0, count - 1))
    offset, length = fragment_geometry(index, count, frame_len)
    payload = draw(st.binary(min_size=length, max_size=length))
    return Fragment(
        draw(u32),
        draw(u32),
        draw(u32),
        index,
        count,
        frame_len,
        offset,
        draw(u64),
        payload,
        draw(u16),
    )


heartbeats = st.builds(
    Heartbeat, u32, u32, names, ipv4, u8, u16, u16, u32, u32, u64, u64, u64, u64, u32, u16
)
reports = st.builds(ReceiverReport, u32, u32, u32, names, ipv4, u64, u64, u32, u64, u64, u16)
queries = st.builds(DiscoveryQuery, u32, u32, names, u16)
announces = st.builds(DiscoveryAnnounce, u32, u32, names, ipv4, u8, ipv4, u16, u16, u16, u32, u16)
messages = st.one_of(fragments(), heartbeats, reports, queries, announces)


@given(messages)
def test_round_trip_every_kind(msg: codec.Message) -> None:
    data = encode(msg)
    back = decode(data)
    if isinstance(msg, Fragment):
        assert isinstance(back, Fragment)
        assert bytes(back.payload) == bytes(msg.payload)
        assert back == Fragment(**{**_fields(msg), "payload": back.payload})
    else:
        assert back == msg
    assert encode(back) == data


def _fields(msg: Fragment) -> dict[str, object]:
    return {f: getattr(msg, f) for f in msg.__slots__}


@given(fragments())
def test_struct_fast_path_matches_construct_schema(frag: Fragment) -> None:
    payload = bytes(frag.payload)
    fast = (
        encode_fragment_header(
            frag.stream_id,
            frag.seq,
            frag.frame_id,
            frag.frag_index,
            frag.frag_count,
            frag.frame_len,
            frag.payload_offset,
            len(payload),
            frag.capture_ts_ns,
            frag.flags,
        )
        + payload
    )
    schema = wire.Prefix.build(
        {
            "version": wire.VERSION,
            "kind": wire.Kind.FRAGMENT,
            "flags": frag.flags,
            "stream_id": frag.stream_id,
            "seq": frag.seq,
        }
    ) + wire.FragmentBody.build(
        {
            "frame_id": frag.frame_id,
            "frag_index": frag.frag_index,
            "frag_count": frag.frag_count,
            "frame_len": frag.frame_len,
            "payload_offset": frag.payload_offset,
            "payload_len": len(payload),
            "capture_ts_ns": frag.capture_ts_ns,
            "payload": payload,
        }
    )
    assert fast == schema
    parsed = wire.Datagram.parse(fast)
    body = wire.FragmentBody.parse(parsed.body)
    header = codec.FRAGMENT_HEADER.unpack_from(fast)
    assert header[4:] == (
        parsed.prefix.stream_id,
        parsed.prefix.seq,
        body.frame_id,
        body.frag_index,
        body.frag_count,
        body.frame_len,
        body.payload_offset,
        body.payload_len,
        body.capture_ts_ns,
    )


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError as exc:
        assert exc.reason
        assert str(exc)


@given(messages, st.data())
def test_mutated_datagrams_decode_or_raise_decode_error(
    msg: codec.Message, data: st.DataObject
) -> None:
    raw = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(u8)
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(DecodeError):
            decode(candidate)


def _heartbeat() -> bytes:
    return encode(Heartbeat(1, 2, "cam", "127.0.0.1", 0, 640, 480, 30000, 1000, 1, 2, 3, 4, 0))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"MC\x01", "truncated"),
        (b"XX" + bytes(12), "bad_magic"),
        (b"MC\x00\x02" + bytes(10), "bad_version"),
        (b"MC\x02\x02" + bytes(10), "unsupported_version"),
        (b"MC\x01\x63" + bytes(10), "unknown_kind"),
        (b"MC\x01\x10" + bytes(10), "reserved_kind"),
        (b"MC\x01\x11" + bytes(10), "reserved_kind"),
        (b"MC\x01\x20" + bytes(10), "reserved_kind"),
        (b"MC\x01\x01" + bytes(10), "truncated"),
        (b"MC\x01\x02" + bytes(12), "bad_body"),
        (_heartbeat() + b"x", "trailing_bytes"),
    ],
)
def test_decode_error_reasons(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(data)
    assert err.value.reason == reason


def _fragment(**over: int) -> bytes:
    fields = dict(
        stream_id=7,
        seq=1,
        frame_id=3,
        frag_index=1,
        frag_count=3,
        frame_len=10,
        payload_offset=4,
        payload_len=3,
        capture_ts_ns=5,
    )
    fields.update(over)
    payload = bytes(over.get("carried", fields["payload_len"]))
    fields.pop("carried", None)
    return encode_fragment_header(**fields) + payload


@pytest.mark.parametrize(
    ("over", "reason", "text"),
    [
        ({}, None, ""),
        ({"carried": 4}, "length_mismatch", "payload_len 3 but the datagram carries 4"),
        ({"frag_index": 3}, "bad_fragment_index", "frag_index 3 is not below frag_count 3"),
        ({"frag_count": 0}, "bad_fragment_index", "frag_count 0"),
        ({"payload_offset": 3}, "bad_geometry", "must be 3 bytes at offset 4, not 3 at 3"),
        ({"frame_len": 2}, "bad_geometry", "frame_len 2 is smaller than frag_count 3"),
    ],
)
def test_fragment_rules(over: dict[str, int], reason: str | None, text: str) -> None:
    data = _fragment(**over)
    if reason is None:
        frag = decode(data)
        assert isinstance(frag, Fragment)
        assert (frag.payload_offset, len(frag.payload)) == (4, 3)
        return
    with pytest.raises(DecodeError, match=text) as err:
        decode(data)
    assert err.value.reason == reason


def test_fragment_payload_is_a_view() -> None:
    data = _fragment()
    frag = decode(data)
    assert isinstance(frag, Fragment)
    assert isinstance(frag.payload, memoryview)
    assert frag.payload.obj is data


@given(st.integers(1, 100_000), st.data())
def test_geometry_tiles_the_frame(frame_len: int, data: st.DataObject) -> None:
    count = data.draw(st.integers(1, min(frame_len, 500)))
    pieces = [fragment_geometry(i, count, frame_len) for i in range(count)]
    assert pieces[0][0] == 0
    for (off, size), (next_off, _) in itertools.pairwise(pieces):
        assert off + size == next_off
    assert sum(size for _, size in pieces) == frame_len
    assert max(s for _, s in pieces) - min(s for _, s in pieces) <= 1


def test_encode_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError, match="longer than 64 bytes"):
        encode(DiscoveryQuery(1, 1, "x" * 65))
    with pytest.raises(LocalProtocolError, match="cannot encode Heartbeat"):
        encode(Heartbeat(1, 1, "n", "127.0.0.1", 0, 70000, 1, 1, 1, 1, 1, 1, 1, 1))
    with pytest.raises(LocalProtocolError, match=r"bad|must be"):
        encode(Fragment(1, 1, 1, 0, 2, 10, 0, 0, b"abc"))


def test_fragment_header_is_forty_bytes() -> None:
    assert codec.FRAGMENT_HEADER.size == wire.FRAGMENT_HEADER_SIZE == 40
    assert struct.calcsize("!HBBHII") == wire.PREFIX_SIZE == 14
