"""Pure discovery core: scripted time, no sockets (Responder rate limit, timers; Directory)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastcam.errors import ConfigError, LocalProtocolError
from mcastcam.protocol import codec
from mcastcam.protocol.codec import DiscoveryAnnounce, DiscoveryQuery, Heartbeat
from mcastcam.protocol.discovery import MAX_ANSWER_BYTES, Directory, Found, Responder
from mcastcam.protocol.wire import MAX_NAME_BYTES, Transport

HOST = "198.18.5.1"
QUERIER = ("198.18.5.2", 40000)
NET = "198.18.5.0/24"
# The shared bucket's tests take every query from QUERIER: lift its own budget out of the way.
SHARED_ONLY: dict[str, float] = {"querier_rate": 1e9, "querier_burst": 10**6}


def announce(name: str = "cam0", stream_id: int = 0x1234ABCD, host: str = HOST,
             seq: int = 0, **kw: object) -> DiscoveryAnnounce:
    fields: dict[str, object] = dict(
        stream_id=stream_id, seq=seq, name=name, host=host, transport=int(Transport.MULTICAST),
        group="239.255.9.9", port=9000, width=320, height=240, fps_milli=30000,
    )
    fields.update(kw)
    return DiscoveryAnnounce(**fields)  # type: ignore[arg-type]


def query(name: str = "", qid: int = 77, seq: int = 0) -> bytes:
    return codec.encode(DiscoveryQuery(stream_id=qid, seq=seq, name=name))


# --------------------------------------------------------------------------- Responder


def test_query_is_answered_unicast_with_the_announce() -> None:
    r = Responder(announce(), network=NET)
    out = r.receive_datagram(query(), QUERIER, now=100.0)
    assert len(out) == 1
    data, dest = out[0]
    assert dest == QUERIER
    got = codec.decode(data)
    assert isinstance(got, DiscoveryAnnounce)
    assert dataclasses.replace(got, seq=0) == announce()
    assert r.stats.queries == 1 and r.stats.answered == 1


def test_answer_seq_advances_per_datagram() -> None:
    r = Responder(announce(seq=0xFFFFFFFF), announce_interval=0)
    seqs = []
    for i in range(3):
        (data, _), = r.receive_datagram(query(), QUERIER, now=float(i))
        seqs.append(codec.decode(data).seq)
    assert seqs == [0xFFFFFFFF, 0, 1]  # wraps (RFC 1982)


def test_rate_limit_20_queries_in_one_second() -> None:
    r = Responder(announce(), rate=5.0, burst=5, **SHARED_ONLY)  # type: ignore[arg-type]
    answered = 0
    for i in range(20):
        answered += len(r.receive_datagram(query(qid=i), QUERIER, now=10.0 + i * 0.05))
    # burst 5 at once, then 5/s over 0.95 s: 4 more tokens refilled (4.75, floored)
    assert answered == 9
    assert answered <= 5 + 5 * 1.0
    assert r.stats.rate_limited == 20 - answered
    assert r.stats.queries == 20


def test_rate_limit_refills_to_burst_only() -> None:
    r = Responder(announce(), rate=5.0, burst=5, **SHARED_ONLY)  # type: ignore[arg-type]
    for _ in range(5):
        assert r.receive_datagram(query(), QUERIER, now=0.0)
    assert r.receive_datagram(query(), QUERIER, now=0.0) == []
    # a long silence refills to `burst`, not beyond
    got = sum(len(r.receive_datagram(query(), QUERIER, now=1000.0)) for _ in range(20))
    assert got == 5


def test_rate_limit_sustained_flood_is_bounded() -> None:
    """200 queries/s for 10 s from many forged sources: at most burst + rate * t answers."""
    r = Responder(announce(), rate=5.0, burst=5)
    answered = 0
    for i in range(2000):
        src = (f"198.18.5.{i % 200 + 2}", 1024 + i)
        answered += len(r.receive_datagram(query(qid=i), src, now=i / 200))
    assert answered <= 5 + 5 * 10
    assert answered >= 50
    assert r.stats.rate_limited == 2000 - answered


def test_time_going_backwards_does_not_mint_tokens() -> None:
    r = Responder(announce(), rate=5.0, burst=1, **SHARED_ONLY)  # type: ignore[arg-type]
    assert r.receive_datagram(query(), QUERIER, now=10.0)
    assert r.receive_datagram(query(), QUERIER, now=5.0) == []
    assert r.receive_datagram(query(), QUERIER, now=10.1) == []
    assert r.receive_datagram(query(), QUERIER, now=10.2)


def test_name_filter() -> None:
    r = Responder(announce(name="cam0"))
    assert r.receive_datagram(query(name="cam1"), QUERIER, 0.0) == []
    assert r.stats.filtered == 1
    assert len(r.receive_datagram(query(name="cam0"), QUERIER, 0.0)) == 1
    assert len(r.receive_datagram(query(name=""), QUERIER, 0.0)) == 1
    assert r.stats.answered == 2


@pytest.mark.parametrize("src", [
    ("239.255.1.1", 5000),      # multicast
    ("0.0.0.0", 5000),          # unspecified
    ("255.255.255.255", 5000),  # limited broadcast
    ("198.18.5.255", 5000),     # the subnet's broadcast
    ("198.18.5.0", 5000),       # the subnet's network address
    ("10.0.0.1", 5000),         # off the subnet (a forged source far away)
    ("198.18.5.2", 0),          # port 0
    ("not-an-ip", 5000),
])
def test_queriers_never_answered(src: tuple[str, int]) -> None:
    r = Responder(announce(), network=NET)
    assert r.receive_datagram(query(), src, 0.0) == []
    assert r.stats.bad_source == 1
    assert r.stats.answered == 0


def test_one_querier_flooding_does_not_starve_others() -> None:
    """50 queries/s from one address for 10 s: it gets its own 1/s, the others all answered."""
    r = Responder(announce(), rate=5.0, burst=5, network=NET)
    flooder, answered, real = ("198.18.5.66", 5000), 0, 0
    for i in range(500):
        now = i / 50
        answered += len(r.receive_datagram(query(qid=i), flooder, now))
        if i % 50 == 10:  # every second a real querier (a new address) asks 3 times
            src = (f"198.18.5.{100 + i // 50}", 40000)
            real += sum(len(r.receive_datagram(query(qid=9, seq=k), src, now)) for k in range(3))
    assert answered <= 3 + 1 * 10  # querier_burst + querier_rate * t
    assert real == 10 * 3
    assert r.stats.querier_limited == 500 - answered
    assert r.stats.rate_limited == r.stats.querier_limited


def test_querier_table_is_bounded_lru() -> None:
    r = Responder(announce(), rate=1e6, burst=10**6, max_queriers=4)
    for i in range(10):
        assert r.receive_datagram(query(), (f"198.18.5.{i + 2}", 5000), float(i))
    assert r.queriers == 4
    assert r.stats.queriers_evicted == 6
    # the most recently heard keeps its (spent) budget: 3 more at once, then refused
    recent = ("198.18.5.11", 5000)
    got = [len(r.receive_datagram(query(), recent, 9.0)) for _ in range(3)]
    assert got == [1, 1, 0]


def test_querier_budget_config_is_checked() -> None:
    for kw in ({"querier_rate": 0.0}, {"querier_burst": 0}, {"max_queriers": 0}):
        with pytest.raises(ConfigError):
            Responder(announce(), **kw)


def test_garbage_and_other_kinds_are_counted_not_raised() -> None:
    r = Responder(announce())
    hb = codec.encode(Heartbeat(1, 1, "x", HOST, 0, 1, 1, 1, 100, 0, 0, 0, 0, 0, run_nonce=1))
    for data in [b"", b"\x00" * 3, b"junk" * 10, query()[:-1], query() + b"x", hb,
                 codec.encode(announce(name="other"))]:
        assert r.receive_datagram(data, QUERIER, 0.0) == []
    # a query cut short is short (v2 pads queries to 100 bytes); one more byte is non-zero
    # padding
    assert r.stats.garbage == {"truncated": 2, "bad_magic": 1, "short_query": 1,
                               "bad_body": 1}
    assert r.stats.ignored == {"Heartbeat": 1, "DiscoveryAnnounce": 1}
    assert r.stats.queries == 0


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    r = Responder(announce())
    out = r.receive_datagram(data, QUERIER, 0.0)
    assert len(out) <= 1
    for answer, _ in out:
        assert len(answer) <= MAX_ANSWER_BYTES


def test_announce_is_bounded_even_with_the_longest_name() -> None:
    longest = "é" * (MAX_NAME_BYTES // 2)
    assert len(longest.encode()) == MAX_NAME_BYTES
    r = Responder(announce(name=longest, group="255.255.255.255", host="255.255.255.254"))
    (data, _), = r.receive_datagram(query(), QUERIER, 0.0)
    assert len(data) < MAX_ANSWER_BYTES
    # an answer is never much bigger than the query that asked for everything
    assert len(data) - len(query()) <= 19 + MAX_NAME_BYTES


def test_bad_announce_or_settings_fail_fast() -> None:
    with pytest.raises(LocalProtocolError):
        Responder(announce(name="x" * (MAX_NAME_BYTES + 1)))
    with pytest.raises(LocalProtocolError):
        Responder(announce(width=70000))
    with pytest.raises(ConfigError, match="rate"):
        Responder(announce(), rate=0)
    with pytest.raises(ConfigError, match="burst"):
        Responder(announce(), burst=0)
    with pytest.raises(ConfigError, match="interval"):
        Responder(announce(), announce_interval=-1)
    with pytest.raises(ConfigError, match="network"):
        Responder(announce(), network="198.18.5.1/33")


def test_periodic_announce_at_start_and_every_interval() -> None:
    r = Responder(announce(), announce_interval=5.0)
    now = 1000.0
    assert r.get_timer() is not None and r.get_timer() <= now  # type: ignore[operator]
    sent_at = []
    for _ in range(130):  # 13 s in 0.1 s ticks
        r.handle_timer(now)
        for data in r.datagrams_to_send(now):
            assert isinstance(codec.decode(data), DiscoveryAnnounce)
            sent_at.append(round(now - 1000.0, 6))
        timer = r.get_timer()
        assert timer is not None and timer > now
        now = round(now + 0.1, 6)
    assert sent_at == [0.0, 5.0, 10.0]
    assert r.stats.announces == 3


def test_late_wakeup_sends_one_announce_not_a_burst() -> None:
    r = Responder(announce(), announce_interval=1.0)
    assert len(r.datagrams_to_send(0.0)) == 1
    assert len(r.datagrams_to_send(60.0)) == 1
    assert r.datagrams_to_send(60.5) == []
    assert r.get_timer() == 61.0


def test_interval_zero_disables_announces_but_still_answers() -> None:
    r = Responder(announce(), announce_interval=0)
    assert r.get_timer() is None
    assert r.datagrams_to_send(0.0) == []
    assert r.datagrams_to_send(1e6) == []
    assert len(r.receive_datagram(query(), QUERIER, 0.0)) == 1


def test_update_changes_answers_and_announces_at_once() -> None:
    r = Responder(announce(), announce_interval=5.0)
    r.datagrams_to_send(0.0)
    assert r.get_timer() == 5.0
    r.update(width=640, height=480, fps=12.5)
    assert r.get_timer() is not None and r.get_timer() <= 1.0  # type: ignore[operator]
    (data,) = r.datagrams_to_send(1.0)
    msg = codec.decode(data)
    assert isinstance(msg, DiscoveryAnnounce)
    assert (msg.width, msg.height, msg.fps_milli) == (640, 480, 12500)
    r.update(width=640)  # no change: no extra announce
    assert r.get_timer() == 6.0
    with pytest.raises(LocalProtocolError):
        r.update(height=1 << 20)
    assert r.announce.height == 480  # unchanged after the refused update


# --------------------------------------------------------------------------- Directory


def ann_bytes(**kw: object) -> bytes:
    return codec.encode(announce(**kw))  # type: ignore[arg-type]


def test_directory_keeps_announces_sorted_by_name() -> None:
    d = Directory()
    d.receive_datagram(ann_bytes(name="zeta", stream_id=1, host="198.18.5.3"),
                       ("198.18.5.3", 8990), 1.0)
    found = d.receive_datagram(ann_bytes(name="alpha", stream_id=2), (HOST, 8990), 2.0)
    assert found == Found("alpha", 2, HOST, Transport.MULTICAST, "239.255.9.9", 9000, 320,
                          240, 30.0, 2.0, 0)
    assert [f.name for f in d.entries(3.0)] == ["alpha", "zeta"]
    assert found.describe() == ("alpha  stream 00000002  multicast 239.255.9.9:9000  "
                                "320x240  30 fps  host 198.18.5.1")
    assert found.to_json()["stream_id"] == "00000002"


def test_directory_newer_announce_replaces_older_is_stale() -> None:
    d = Directory()
    d.receive_datagram(ann_bytes(seq=10, width=320), (HOST, 8990), 1.0)
    d.receive_datagram(ann_bytes(seq=11, width=640), (HOST, 8990), 2.0)
    assert d.receive_datagram(ann_bytes(seq=9, width=99), (HOST, 8990), 3.0) is None
    (only,) = d.entries(3.0)
    assert (only.width, only.seq, only.last_seen) == (640, 11, 2.0)
    assert d.stats.stale == 1
    # same host, another stream id (a restarted sender): a second entry
    d.receive_datagram(ann_bytes(stream_id=99), (HOST, 8990), 3.0)
    assert len(d.entries(3.0)) == 2


def test_directory_is_bounded_and_evicts_the_least_recently_heard() -> None:
    d = Directory(max_entries=4)
    for i in range(10):
        d.receive_datagram(ann_bytes(stream_id=i, name=f"c{i}"), (HOST, 8990), float(i))
    assert [f.stream_id for f in d.entries(10.0)] == [6, 7, 8, 9]
    assert d.stats.evicted == 6
    # refreshing an entry protects it from the next eviction
    d.receive_datagram(ann_bytes(stream_id=6, name="c6", seq=1), (HOST, 8990), 11.0)
    d.receive_datagram(ann_bytes(stream_id=42, name="c42"), (HOST, 8990), 12.0)
    assert sorted(f.stream_id for f in d.entries(12.0)) == [6, 8, 9, 42]


def test_directory_entries_expire() -> None:
    d = Directory(expiry=15.0)
    d.receive_datagram(ann_bytes(stream_id=1), (HOST, 8990), 0.0)
    d.receive_datagram(ann_bytes(stream_id=2), (HOST, 8990), 10.0)
    assert len(d.entries(14.9)) == 2
    assert [f.stream_id for f in d.entries(15.0)] == [2]
    assert d.entries(25.0) == []
    assert d.stats.expired == 2


@pytest.mark.parametrize("kw,src", [
    ({}, ("198.18.5.66", 8990)),                                    # host is not the source
    ({"port": 0}, (HOST, 8990)),
    ({"group": "198.18.5.255"}, (HOST, 8990)),                      # multicast, not a group
    ({"transport": int(Transport.BROADCAST), "group": "239.1.1.1"}, (HOST, 8990)),
    ({"transport": 9}, (HOST, 8990)),                               # unknown transport
])
def test_directory_drops_forged_or_impossible_announces(kw: dict[str, object],
                                                        src: tuple[str, int]) -> None:
    d = Directory()
    assert d.receive_datagram(ann_bytes(**kw), src, 0.0) is None
    assert d.stats.forged == 1
    assert d.entries(0.0) == []


def test_directory_counts_garbage_and_other_kinds() -> None:
    d = Directory()
    for data in [b"", b"\xff" * 50, query(), ann_bytes()[:20]]:
        assert d.receive_datagram(data, (HOST, 8990), 0.0) is None
    assert d.stats.garbage == {"truncated": 1, "bad_magic": 1, "bad_body": 1}
    assert d.stats.ignored == {"DiscoveryQuery": 1}
    assert len(d) == 0


@given(st.binary(max_size=120))
def test_directory_arbitrary_bytes_never_raise(data: bytes) -> None:
    d = Directory(max_entries=2)
    d.receive_datagram(data, (HOST, 8990), 0.0)
    assert len(d) <= 1


def test_directory_settings_are_checked() -> None:
    with pytest.raises(ConfigError):
        Directory(max_entries=0)
    with pytest.raises(ConfigError):
        Directory(expiry=0)
