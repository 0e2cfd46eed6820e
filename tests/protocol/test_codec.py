import contextlib
import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastcam.errors import DecodeError, LocalProtocolError
from mcastcam.protocol import codec, wire
from mcastcam.protocol.codec import (
    DiscoveryAnnounce,
    DiscoveryQuery,
    Heartbeat,
    Nack,
    NackEntry,
    ReceiverReport,
    Symbol,
    check_symbol,
    decode,
    decode_symbol_header,
    encode,
    encode_symbol_header,
)
from mcastcam.protocol.wire import Flag, Kind

u8 = st.integers(0, 2**8 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
nz32 = st.integers(1, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
names = st.text(max_size=20).filter(lambda s: len(s.encode()) <= wire.MAX_NAME_BYTES)
ipv4 = st.ip_addresses(v=4).map(str)
hosts = st.ip_addresses(v=4, network="10.0.0.0/8").map(str)
tags = st.binary(min_size=16, max_size=16)


@st.composite
def auth(draw: st.DrawFn, symbol: bool = False) -> dict[str, object]:
    """flags, key_id and tag that decode: no AUTH, or AUTH with a key id and a tag."""
    if not draw(st.booleans()):
        return {"flags": 0, "key_id": 0, "tag": b""}
    extra = draw(st.sampled_from([0, Flag.ENCRYPTED, Flag.CHACHA, Flag.ENCRYPTED | Flag.CHACHA]))
    return {
        "flags": int(Flag.AUTH | (extra if symbol else 0)),
        "key_id": draw(st.integers(1, 255)),
        "tag": draw(tags),
    }


def with_auth(msg: Any) -> st.SearchStrategy[Any]:
    """``msg`` as is, or with AUTH, a key id and a tag."""
    return auth().map(lambda a: dataclasses.replace(msg, **a))


@st.composite
def symbols(draw: st.DrawFn) -> Symbol:
    t = draw(st.integers(8, 200)) * 8
    frame_len = draw(st.integers(1, 30 * t))
    k = -(-frame_len // t)
    fec = draw(st.sampled_from([0, 1]))
    repair = fec == 1 and draw(st.booleans())
    r = draw(st.integers(0, k)) if fec else 0
    if repair:
        esi = draw(st.integers(k, 2**24 - 1))
        size = t
    else:
        esi = draw(st.integers(0, k - 1))
        size = codec.symbol_payload_len(esi, k, t, frame_len)
    return Symbol(
        draw(u32),
        draw(u32),
        Kind.REPAIR if repair else Kind.SOURCE,
        draw(u32),
        esi,
        t,
        frame_len,
        draw(u32),
        draw(u64),
        fec,
        r,
        draw(nz32),
        draw(st.binary(min_size=size, max_size=size)),
        **draw(auth(symbol=True)),  # type: ignore[arg-type]
    )


heartbeats = st.builds(
    Heartbeat,
    u32,
    u32,
    names,
    hosts,
    u8,
    st.integers(0, 16384),
    st.integers(0, 16384),
    st.integers(0, 1_000_000),
    st.integers(100, 60_000),
    st.integers(0, 1000),
    st.integers(1000, 2**64 - 1),
    u64,
    u64,
    st.integers(0, 1_000_000),
    run_nonce=nz32,
    seq_hi=u32,
    aead=st.integers(0, 2),
    fec_scheme=u8,
    repair_ppm=st.integers(0, 1_000_000),
    nack_delay_ms=st.integers(1, 1000),
    nack_rate_milli=st.integers(0, 10_000),
    repair_window_ms=st.integers(0, 5000),
    echo_receiver_id=u32,
    echo_challenge=u64,
).flatmap(with_auth)
reports = st.builds(
    ReceiverReport,
    u32,
    u32,
    nz32,
    names,
    ipv4,
    u64,
    u64,
    st.integers(0, 1_000_000),
    u64,
    st.integers(0, 60 * 10**9),
    run_nonce=nz32,
    burst_milli=st.integers(0, 1_000_000),
    repaired_fec=u64,
    repaired_nack=u64,
    unrepairable=u64,
    challenge=u64,
).flatmap(with_auth)
nacks = st.builds(
    Nack,
    u32,
    u32,
    nz32,
    st.lists(st.builds(NackEntry, u32, st.integers(1, 2**16 - 1)), min_size=1, max_size=16).map(
        tuple
    ),
    run_nonce=nz32,
).flatmap(with_auth)
queries = st.builds(DiscoveryQuery, u32, u32, names, u64).flatmap(with_auth)
announces = st.builds(
    DiscoveryAnnounce,
    u32,
    u32,
    names,
    ipv4,
    st.just(0),
    st.ip_addresses(v=4, network="224.0.0.0/4").map(str),
    st.integers(1, 65535),
    st.integers(0, 16384),
    st.integers(0, 16384),
    st.integers(0, 1_000_000),
    run_nonce=u32,
    echo_query_nonce=u64,
    aead=st.integers(0, 2),
).flatmap(with_auth)
messages = st.one_of(symbols(), heartbeats, reports, nacks, queries, announces)


@given(messages)
def test_round_trip_every_kind(msg: codec.Message) -> None:
    data = encode(msg)
    back = decode(data)
    if isinstance(msg, Symbol):
        assert isinstance(back, Symbol)
        assert bytes(back.payload) == bytes(msg.payload)
        assert dataclasses.replace(back, payload=b"") == dataclasses.replace(msg, payload=b"")
        assert len(data) == 48 + len(msg.payload) + len(msg.tag)
    else:
        assert back == msg
    assert encode(back) == data
    if msg.flags & Flag.AUTH:
        assert data[-16:] == msg.tag


@given(symbols())
def test_struct_fast_path_matches_construct_schema(sym: Symbol) -> None:
    payload = bytes(sym.payload)
    fast = (
        encode_symbol_header(
            sym.kind,
            sym.stream_id,
            sym.seq,
            sym.frame_id,
            sym.esi,
            sym.symbol_size,
            sym.frame_len,
            sym.frame_crc32c,
            sym.capture_ts_ns,
            sym.fec_scheme,
            sym.repair_planned,
            sym.run_nonce,
            sym.flags,
            sym.key_id,
        )
        + payload
    )
    fields = {
        f: getattr(sym, f)
        for f in (
            "frame_id",
            "esi",
            "symbol_size",
            "frame_len",
            "frame_crc32c",
            "capture_ts_ns",
            "fec_scheme",
            "key_id",
            "repair_planned",
            "run_nonce",
        )
    }
    prefix = {
        "version": wire.VERSION,
        "kind": sym.kind,
        "flags": sym.flags,
        "stream_id": sym.stream_id,
        "seq": sym.seq,
    }
    schema = wire.Prefix.build(prefix) + wire.SymbolBody.build({**fields, "payload": payload})
    assert fast == schema
    parsed = wire.Datagram.parse(fast)
    body = wire.SymbolBody.parse(parsed.body)
    header = codec.SYMBOL_HEADER.unpack_from(fast)
    assert header == (
        wire.MAGIC,
        parsed.prefix.version,
        parsed.prefix.kind,
        parsed.prefix.flags,
        parsed.prefix.stream_id,
        parsed.prefix.seq,
        body.frame_id,
        body.esi,
        body.symbol_size,
        body.frame_len,
        body.frame_crc32c,
        body.capture_ts_ns,
        body.fec_scheme,
        body.key_id,
        body.repair_planned,
        body.run_nonce,
    )
    assert body.payload == payload


@given(nacks)
def test_nack_struct_decoder_matches_construct_schema(nack: Nack) -> None:
    data = encode(nack)
    end = len(data) - len(nack.tag)
    body = wire.NackBody.parse(data[20:end])
    assert body.receiver_id == nack.receiver_id
    assert [(e.frame_id, e.needed) for e in body.entries] == [
        (e.frame_id, e.needed) for e in nack.entries
    ]
    assert end == wire.NACK_FIXED_SIZE + 6 * len(nack.entries)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except DecodeError as exc:
        assert exc.reason
        assert str(exc)
    else:
        assert isinstance(msg, codec.Message)


@given(st.sampled_from([1, 2, 3, 4, 5, 16, 17]), st.integers(0, 7), st.binary(max_size=300))
def test_arbitrary_bodies_of_every_kind(kind: int, flags: int, body: bytes) -> None:
    data = b"MC\x02" + bytes([kind]) + flags.to_bytes(2, "big") + bytes(8) + body
    with contextlib.suppress(DecodeError):
        decode(data)


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


# ------------------------------------------------------------------- prefix and flags


def _heartbeat(**over: object) -> Heartbeat:
    hb = Heartbeat(1, 2, "cam", "127.0.0.1", 0, 640, 480, 30000, 1000, 1, 2, 3, 4, 0, run_nonce=9)
    return dataclasses.replace(hb, **over)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"MC\x02", "truncated"),
        (b"XX" + bytes(12), "bad_magic"),
        (b"MC\x00\x02" + bytes(10), "bad_version"),
        (b"MC\x01\x01" + bytes(40), "old_version"),
        (b"MC\x03\x02" + bytes(10), "unsupported_version"),
        (b"MC\x02\x63" + bytes(10), "unknown_kind"),
        (b"MC\x02\x06" + bytes(10), "unknown_kind"),
        (b"MC\x02\x20" + bytes(10), "reserved_kind"),
        (b"MC\x02\x01" + bytes(10), "truncated"),
        (b"MC\x02\x10" + bytes(40), "truncated"),
        (b"MC\x02\x02" + bytes(12), "truncated"),
        (b"MC\x02\x11" + bytes(20), "truncated"),
        (b"MC\x02\x02\x00\x08" + bytes(8), "bad_flags"),
        (b"MC\x02\x02\x80\x00" + bytes(8), "bad_flags"),
        (b"MC\x02\x02\x00\x03" + bytes(8), "bad_flags"),  # ENCRYPTED on a control kind
        (b"MC\x02\x02\x00\x05" + bytes(8), "bad_flags"),  # CHACHA on a control kind
        (b"MC\x02\x01\x00\x02" + bytes(40), "bad_flags"),  # ENCRYPTED without AUTH
        (b"MC\x02\x10\x00\x04" + bytes(40), "bad_flags"),  # CHACHA without AUTH
        (b"MC\x02\x02" + bytes(16) + b"\x00", "bad_body"),
        (encode(_heartbeat()) + b"x", "trailing_bytes"),
    ],
)
def test_decode_error_reasons(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(data)
    assert err.value.reason == reason


def test_key_id_must_match_auth_on_every_kind() -> None:
    # key_id without AUTH
    with pytest.raises(DecodeError, match="key_id 3 with AUTH clear") as err:
        decode(encode(_heartbeat(key_id=3)))
    assert err.value.reason == "bad_flags"
    # AUTH without key_id
    with pytest.raises(DecodeError, match="key_id 0 with AUTH set") as err:
        decode(encode(_heartbeat(flags=1, tag=bytes(16))))
    assert err.value.reason == "bad_flags"
    with pytest.raises(DecodeError) as err:
        decode(_symbol(flags=1, tag=bytes(16)))
    assert err.value.reason == "bad_flags"
    with pytest.raises(DecodeError) as err:
        decode(_symbol(key_id=1))
    assert err.value.reason == "bad_flags"


def test_preamble_reserved_byte_must_be_zero() -> None:
    raw = bytearray(encode(_heartbeat()))
    raw[15] = 1
    with pytest.raises(DecodeError, match="reserved byte is 1") as err:
        decode(bytes(raw))
    assert err.value.reason == "bad_body"


def test_tag_positions() -> None:
    tag = bytes(range(16))
    hb = _heartbeat(flags=1, key_id=2, tag=tag)
    data = encode(hb)
    assert data[-16:] == tag
    assert len(data) == len(encode(_heartbeat())) + 16
    assert decode(data) == hb
    # a datagram whose AUTH flag claims a tag it has no room for
    with pytest.raises(DecodeError) as err:
        decode(encode(_heartbeat())[:30] + bytes(0))
    assert err.value.reason in {"truncated", "bad_body"}
    sym = decode(_symbol(flags=1, key_id=1, tag=tag))
    assert isinstance(sym, Symbol)
    assert sym.tag == tag and len(sym.payload) == 64
    header_only = encode_symbol_header(1, 7, 1, 3, 0, 64, 64, 0, 5, 1, 0, 9, flags=1, key_id=1)
    with pytest.raises(DecodeError) as err:
        decode(header_only + bytes(10))
    assert err.value.reason == "truncated"


def test_encode_checks_the_tag_against_auth() -> None:
    with pytest.raises(LocalProtocolError, match="needs a 16-byte tag"):
        encode(_heartbeat(flags=1, key_id=1))
    with pytest.raises(LocalProtocolError, match="needs a 0-byte tag"):
        encode(_heartbeat(tag=bytes(16)))


# ------------------------------------------------------------------- symbols


def _symbol(**over: int | bytes) -> bytes:
    fields: dict[str, int] = dict(
        kind=1,
        stream_id=7,
        seq=1,
        frame_id=3,
        esi=1,
        symbol_size=64,
        frame_len=150,
        frame_crc32c=0xABCD,
        capture_ts_ns=5,
        fec_scheme=1,
        repair_planned=2,
        run_nonce=9,
    )
    carried = over.pop("carried", None)
    tag = over.pop("tag", b"")
    fields.update(over)  # type: ignore[arg-type]
    k = -(-fields["frame_len"] // fields["symbol_size"])
    if carried is None:
        esi = fields["esi"]
        carried = fields["symbol_size"]
        if fields["kind"] == 1 and esi == k - 1:
            carried = fields["frame_len"] - (k - 1) * fields["symbol_size"]
    assert isinstance(carried, int) and isinstance(tag, bytes)
    return encode_symbol_header(**fields) + bytes(carried) + tag


@pytest.mark.parametrize(
    ("over", "reason", "text"),
    [
        ({}, None, ""),
        ({"esi": 2}, None, ""),  # the short last source symbol: 22 bytes
        ({"kind": 16, "esi": 3}, None, ""),
        ({"kind": 16, "esi": 2**24 - 1}, None, ""),
        ({"carried": 63}, "length_mismatch", "must carry 64 payload bytes, not 63"),
        ({"esi": 2, "carried": 64}, "length_mismatch", "must carry 22 payload bytes, not 64"),
        ({"kind": 16, "esi": 3, "carried": 22}, "length_mismatch", "not 22"),
        ({"esi": 3}, "bad_esi", "source esi 3 is not below k = 3"),
        ({"kind": 16, "esi": 2}, "bad_esi", "repair esi 2 is below k = 3"),
        ({"kind": 16, "esi": 2**24}, "bad_esi", r"not below 2\^24"),
        ({"symbol_size": 60}, "bad_geometry", "symbol_size 60 is not a multiple of 8"),
        ({"symbol_size": 56}, "bad_geometry", "symbol_size 56"),
        ({"symbol_size": 65008}, "bad_geometry", "symbol_size 65008"),
        ({"symbol_size": 100}, "bad_geometry", "symbol_size 100"),
        ({"frame_len": 0}, "bad_geometry", "frame_len 0"),
        ({"repair_planned": 4}, "bad_geometry", "repair_planned 4 is above k = 3"),
        ({"fec_scheme": 0}, "bad_geometry", "repair_planned 2 with fec_scheme 0"),
        ({"fec_scheme": 0, "repair_planned": 0, "kind": 16, "esi": 3}, "bad_fec", "fec_scheme 0"),
        ({"fec_scheme": 3}, "unknown_fec", "fec_scheme 3 is unknown"),
        # scheme 2, Reed–Solomon (§5a): k = 3 has m(k) = 32 repair ESIs, 3 … 34
        ({"fec_scheme": 2}, None, ""),
        ({"fec_scheme": 2, "kind": 16, "esi": 34}, None, ""),
        ({"fec_scheme": 2, "kind": 16, "esi": 35}, "bad_esi", r"not below k \+ m\(k\) = 35"),
        ({"fec_scheme": 2, "repair_planned": 4}, "bad_geometry", "repair_planned 4 is above k"),
        (
            {"fec_scheme": 2, "frame_len": 6400, "esi": 0, "repair_planned": 65},
            "bad_geometry",
            r"repair_planned 65 is above m\(k\) = 64",
        ),
        (
            {"fec_scheme": 2, "frame_len": 8 * 1024 * 1024 + 1, "symbol_size": 65000, "esi": 0},
            "bad_fec",
            "above 8388608 with fec_scheme 2",
        ),
        ({"fec_scheme": 2, "frame_len": 32769 * 64, "esi": 0}, "bad_fec", "32769 source symbols"),
        (
            {"frame_len": 8 * 1024 * 1024 + 1, "symbol_size": 65000, "esi": 0},
            "bad_fec",
            "above 8388608",
        ),
        ({"frame_len": 56404 * 64, "esi": 0}, "bad_fec", "56404 source symbols"),
        ({"run_nonce": 0}, "bad_run", "run_nonce 0"),
    ],
)
def test_symbol_rules(over: dict[str, int], reason: str | None, text: str) -> None:
    data = _symbol(**over)
    if reason is None:
        sym = decode(data)
        assert isinstance(sym, Symbol)
        assert sym.kind == over.get("kind", 1) and sym.k == 3
        return
    with pytest.raises(DecodeError, match=text) as err:
        decode(data)
    assert err.value.reason == reason
    with pytest.raises(DecodeError):
        decode_symbol_header(data)


def test_large_frames_without_fec_and_too_large() -> None:
    big = 12 * 1024 * 1024
    data = _symbol(frame_len=big, symbol_size=1424, fec_scheme=0, repair_planned=0, esi=0)
    sym = decode(data)
    assert isinstance(sym, Symbol) and sym.fec_scheme == 0
    with pytest.raises(DecodeError, match="above the limit of 8388608") as err:
        decode(data, max_frame_len=8 * 1024 * 1024)
    assert err.value.reason == "too_large"
    with pytest.raises(DecodeError, match="not below 2") as err:
        check_symbol(1, 0, 64, 64 << 24, 0, 0, 64)
    assert err.value.reason == "bad_geometry"


def test_symbol_payload_is_a_view_and_header_fields() -> None:
    data = _symbol()
    sym = decode(data)
    assert isinstance(sym, Symbol)
    assert isinstance(sym.payload, memoryview)
    assert sym.payload.obj is data
    h = decode_symbol_header(data)
    assert h[6:] == (3, 1, 64, 150, 0xABCD, 5, 1, 0, 2, 9)
    assert not sym.is_repair


def test_decode_symbol_header_refuses_other_kinds() -> None:
    data = encode(_heartbeat())
    with pytest.raises(DecodeError) as err:
        decode_symbol_header(data + bytes(60))
    assert err.value.reason == "not_symbol"
    with pytest.raises(DecodeError) as err:
        decode_symbol_header(data[:30])
    assert err.value.reason == "not_symbol"


# ------------------------------------------------------------------- control kinds


@pytest.mark.parametrize(
    ("over", "text"),
    [
        ({"host": "0.0.0.0"}, "host 0.0.0.0"),
        ({"host": "239.1.2.3"}, "host 239.1.2.3"),
        ({"host": "255.255.255.255"}, "host 255.255.255.255"),
        ({"width": 16385}, "size 16385x480"),
        ({"height": 16385}, "size 640x16385"),
        ({"fps_milli": 1_000_001}, "fps_milli 1000001"),
        ({"interval_ms": 99}, "interval_ms 99 is outside 100..60000"),
        ({"interval_ms": 60_001}, "interval_ms 60001"),
        ({"interval_ms": 0xFFFFFFFF}, "interval_ms 4294967295"),
        ({"frames_sent": 3}, "frames_sent 3 is above datagrams_sent 2"),
        ({"audience": 1_000_001}, "audience 1000001"),
        ({"repair_ppm": 1_000_001}, "repair_ppm 1000001"),
        ({"nack_delay_ms": 0}, "nack_delay_ms 0 is outside 1..1000"),
        ({"nack_delay_ms": 1001}, "nack_delay_ms 1001"),
        ({"nack_rate_milli": 10_001}, "nack_rate_milli 10001"),
        ({"repair_window_ms": 5001}, "repair_window_ms 5001"),
    ],
)
def test_heartbeat_out_of_range(over: dict[str, object], text: str) -> None:
    with pytest.raises(DecodeError, match=text) as err:
        decode(encode(_heartbeat(**over)))
    assert err.value.reason == "heartbeat_out_of_range"


def test_heartbeat_limits_are_inclusive() -> None:
    for over in (
        {"interval_ms": 100},
        {"interval_ms": 60_000},
        {"width": 16384, "height": 16384, "fps_milli": 1_000_000, "audience": 1_000_000},
        {"nack_delay_ms": 1000, "nack_rate_milli": 10_000, "repair_window_ms": 5000},
        {"repair_ppm": 1_000_000, "source_state": 9},
    ):
        hb = _heartbeat(**over)
        assert decode(encode(hb)) == hb


@pytest.mark.parametrize(
    ("over", "reason"),
    [({"aead": 3}, "bad_body"), ({"run_nonce": 0}, "bad_run")],
)
def test_heartbeat_other_rules(over: dict[str, object], reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(encode(_heartbeat(**over)))
    assert err.value.reason == reason


def _report(**over: object) -> ReceiverReport:
    rep = ReceiverReport(7, 0, 42, "rx", "10.0.0.2", 1, 0, 0, 0, 0, run_nonce=5)
    return dataclasses.replace(rep, **over)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("over", "reason", "text"),
    [
        ({"receiver_id": 0}, "bad_report", "receiver_id 0"),
        ({"loss_ppm": 1_000_001}, "bad_report", "loss_ppm 1000001"),
        ({"held_ns": 60 * 10**9 + 1}, "bad_report", "held_ns"),
        ({"burst_milli": 1_000_001}, "bad_report", "burst_milli 1000001"),
        ({"run_nonce": 0}, "bad_run", "run_nonce 0"),
    ],
)
def test_report_rules(over: dict[str, object], reason: str, text: str) -> None:
    assert decode(encode(_report())) == _report()
    with pytest.raises(DecodeError, match=text) as err:
        decode(encode(_report(**over)))
    assert err.value.reason == reason


def _nack(*entries: tuple[int, int], **over: object) -> Nack:
    nack = Nack(7, 0, 42, tuple(NackEntry(f, n) for f, n in entries), run_nonce=5)
    return dataclasses.replace(nack, **over)  # type: ignore[arg-type]


def test_nack_rules() -> None:
    good = _nack((1, 3), (2, 1))
    data = encode(good)
    assert len(data) == 25 + 12
    assert decode(data) == good
    cases: list[tuple[bytes, str, str]] = [
        (encode(_nack((1, 3), receiver_id=0)), "bad_nack", "receiver_id 0"),
        (encode(_nack((1, 0))), "bad_nack", "needs 0"),
        (encode(_nack()), "bad_nack", "count 0"),
        (encode(_nack(*[(i, 1) for i in range(17)])), "bad_nack", "count 17"),
        (data + bytes(1), "length_mismatch", "must be 37 bytes"),
        (data[:-1], "length_mismatch", "must be 37 bytes"),
        (data[:24], "truncated", "25-byte fixed part"),
        (encode(_nack((1, 3), run_nonce=0)), "bad_run", "run_nonce 0"),
    ]
    for raw, reason, text in cases:
        with pytest.raises(DecodeError, match=text) as err:
            decode(raw)
        assert err.value.reason == reason
    authed = _nack((1, 3), flags=1, key_id=4, tag=bytes(16))
    assert len(encode(authed)) == 25 + 6 + 16
    assert decode(encode(authed)) == authed


def test_query_padding_and_short_query() -> None:
    q = DiscoveryQuery(1, 2, "cam", 77)
    data = encode(q)
    assert len(data) == 100
    assert decode(data) == q
    full = DiscoveryQuery(1, 2, "x" * 64, 1, flags=1, key_id=1, tag=bytes(16))
    assert len(encode(full)) == 116
    with pytest.raises(DecodeError, match="shorter than 100") as err:
        decode(data[:99])
    assert err.value.reason == "short_query"
    raw = bytearray(data)
    raw[-1] = 1
    with pytest.raises(DecodeError, match="padding is not zero") as err:
        decode(bytes(raw))
    assert err.value.reason == "bad_body"
    raw = bytearray(data)
    raw[19] = 1  # run_nonce of a query must be 0
    with pytest.raises(DecodeError, match="run_nonce 1") as err:
        decode(bytes(raw))
    assert err.value.reason == "bad_body"


def _announce(**over: object) -> DiscoveryAnnounce:
    ann = DiscoveryAnnounce(1, 0, "x" * 64, "10.0.0.1", 0, "239.1.1.1", 8989, 640, 480, 30000)
    return dataclasses.replace(ann, **over)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("over", "reason", "text"),
    [
        ({"port": 0}, "announce_out_of_range", "port 0"),
        ({"group": "10.0.0.9"}, "announce_out_of_range", "outside 224.0.0.0/4"),
        ({"transport": 2, "group": "239.1.1.1"}, "announce_out_of_range", "transport 2"),
        ({"transport": 2, "group": "0.0.0.0"}, "announce_out_of_range", "transport 2"),
        ({"transport": 1, "group": "224.0.0.1"}, "announce_out_of_range", "transport 1"),
        ({"transport": 3}, "announce_out_of_range", "transport 3 is unknown"),
        ({"width": 20000}, "announce_out_of_range", "size 20000x480"),
        ({"fps_milli": 2_000_000}, "announce_out_of_range", "fps_milli 2000000"),
        ({"aead": 7}, "bad_body", "aead 7"),
    ],
)
def test_announce_rules(over: dict[str, object], reason: str, text: str) -> None:
    with pytest.raises(DecodeError, match=text) as err:
        decode(encode(_announce(**over)))
    assert err.value.reason == reason


def test_announce_sizes_and_good_transports() -> None:
    assert len(encode(_announce())) == 113
    assert len(encode(_announce(flags=1, key_id=1, tag=bytes(16)))) == 129
    for over in (
        {"transport": 1, "group": "192.168.1.255"},
        {"transport": 1, "group": "255.255.255.255"},
        {"transport": 2, "group": "192.168.1.7"},
        {"echo_query_nonce": 2**64 - 1, "aead": 2, "run_nonce": 5},
    ):
        ann = _announce(**over)
        assert decode(encode(ann)) == ann


def test_encode_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError, match="longer than 64 bytes"):
        encode(DiscoveryQuery(1, 1, "x" * 65))
    with pytest.raises(LocalProtocolError, match="cannot encode Heartbeat"):
        encode(_heartbeat(width=70000))
    with pytest.raises(LocalProtocolError, match="cannot encode Symbol: symbol 0"):
        encode(Symbol(1, 1, 1, 1, 0, 64, 100, 0, 0, 1, 0, 1, b"abc"))
    with pytest.raises(LocalProtocolError, match="cannot encode Nack"):
        encode(_nack((2**32, 1)))


def test_header_sizes() -> None:
    assert codec.SYMBOL_HEADER.size == wire.SYMBOL_HEADER_SIZE == 48
    assert struct.calcsize("!HBBHII") == wire.PREFIX_SIZE == 14
    assert codec.SYMBOL_HEADER.format == "!HBBHIIIIHIIQBBHI"
    assert wire.VERSION == 2
