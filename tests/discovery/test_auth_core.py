"""Discovery with a key, pure cores (docs/protocol.md §9): scripted time, no sockets.

Responder: answers only tagged, fresh queries and tags its announces (echoing the query's
nonce). Directory: only tagged announces; an answer must echo an outstanding query nonce
(``stale_answer``); unsolicited announces are hints a receiver does not follow.
"""

from __future__ import annotations

import dataclasses

from mcastcam.protocol import codec
from mcastcam.protocol.auth import MasterKey
from mcastcam.protocol.codec import DiscoveryAnnounce, DiscoveryQuery
from mcastcam.protocol.discovery import (
    MAX_ANSWER_BYTES,
    MAX_OUTSTANDING_QUERIES,
    Directory,
    Responder,
)
from mcastcam.protocol.trust import DiscoveryAuth
from mcastcam.protocol.wire import MAX_NAME_BYTES, Flag, Transport

KEY = MasterKey(3, bytes(range(32)))
WRONG = MasterKey(3, bytes(32))
NEXT = MasterKey(4, bytes(range(1, 33)))
HOST = "198.18.5.1"
QUERIER = ("198.18.5.2", 40000)
NET = "198.18.5.0/24"
AUTH = DiscoveryAuth([KEY])


def announce(name: str = "cam0", **kw: object) -> DiscoveryAnnounce:
    fields: dict[str, object] = dict(
        stream_id=0x1234ABCD, seq=0, name=name, host=HOST, transport=int(Transport.MULTICAST),
        group="239.255.9.9", port=9000, width=320, height=240, fps_milli=30000, run_nonce=9,
    )
    fields.update(kw)
    return DiscoveryAnnounce(**fields)  # type: ignore[arg-type]


def query(nonce: int, name: str = "", auth: DiscoveryAuth | None = AUTH, seq: int = 0) -> bytes:
    plain = codec.encode(DiscoveryQuery(stream_id=77, seq=seq, name=name, query_nonce=nonce))
    return plain if auth is None else auth.seal(plain)


def responder(**kw: object) -> Responder:
    return Responder(announce(), network=NET, announce_interval=0, auth=AUTH,
                     querier_rate=1e9, querier_burst=10**6, rate=1e9, burst=10**6,
                     **kw)  # type: ignore[arg-type]


def test_tagged_query_gets_a_tagged_answer_echoing_its_nonce() -> None:
    r = responder()
    ((data, dest),) = r.receive_datagram(query(0xABCDEF), QUERIER, now=1.0)
    assert dest == QUERIER
    raw = codec.decode(data)
    assert raw.flags & Flag.AUTH and raw.key_id == KEY.key_id and len(raw.tag) == 16
    got = codec.decode(AUTH.open(data))
    assert isinstance(got, DiscoveryAnnounce)
    assert got.echo_query_nonce == 0xABCDEF
    assert dataclasses.replace(got, echo_query_nonce=0) == announce()
    assert r.stats.answered == 1 and not r.stats.rejected


def test_responder_refuses_untagged_forged_replayed_and_nonceless_queries() -> None:
    r = responder()
    assert r.receive_datagram(query(5), QUERIER, 1.0)  # the real one
    bad = bytearray(query(6))
    bad[-1] ^= 1
    refused = [
        query(7, auth=None),  # no tag
        query(8, auth=DiscoveryAuth([WRONG])),  # wrong key, same id
        query(9, auth=DiscoveryAuth([NEXT])),  # a key id not held
        bytes(bad),  # a flipped tag bit
        query(5),  # a replay of the real one (same nonce)
        query(0),  # no nonce
    ]
    for data in refused:
        assert r.receive_datagram(data, QUERIER, 2.0) == []
    assert r.stats.rejected == {"unauthenticated": 1, "bad_tag": 2, "unknown_key": 1,
                                "replayed": 1, "no_nonce": 1}
    assert r.stats.answered == 1 and r.stats.queries == 1  # refusals never use the budget


def test_forged_queries_do_not_use_up_the_answer_budget() -> None:
    r = Responder(announce(), network=NET, announce_interval=0, auth=AUTH, rate=5, burst=5)
    for i in range(1000):
        forged = query(i + 1, auth=None)
        assert r.receive_datagram(forged, (f"198.18.5.{i % 200 + 2}", 1), 1.0) == []
    assert r.receive_datagram(query(0x5EED), QUERIER, 1.0)
    assert r.stats.rejected["unauthenticated"] == 1000


def test_periodic_announces_are_tagged_with_echo_zero_and_fit_the_bound() -> None:
    r = Responder(announce(name="x" * MAX_NAME_BYTES), announce_interval=1.0, auth=AUTH)
    (data,) = r.datagrams_to_send(0.0)
    assert len(data) <= MAX_ANSWER_BYTES
    got = codec.decode(AUTH.open(data))
    assert isinstance(got, DiscoveryAnnounce) and got.echo_query_nonce == 0


def answer(r: Responder, nonce: int) -> bytes:
    ((data, _),) = r.receive_datagram(query(nonce), QUERIER, now=float(nonce))
    return data


def test_directory_keeps_answers_to_its_own_queries_only() -> None:
    r = responder()
    d = Directory(auth=AUTH)
    d.expect(111)
    old = answer(r, 99)  # an answer to someone else's (or an earlier) query: captured
    found = d.receive_datagram(answer(r, 111), (HOST, 8990), 1.0)
    assert found is not None and found.answered and found.name == "cam0"
    assert d.receive_datagram(old, (HOST, 8990), 1.1) is None
    assert d.stats.rejected == {"stale_answer": 1}
    assert [f.name for f in d.entries(1.2, answers_only=True)] == ["cam0"]


def test_directory_ignores_unauthenticated_and_forged_announces() -> None:
    d = Directory(auth=AUTH)
    d.expect(5)
    plain = codec.encode(announce(echo_query_nonce=5))
    forged = DiscoveryAuth([WRONG]).seal(plain)
    flipped = bytearray(AUTH.seal(plain))
    flipped[30] ^= 0x40
    for data in (plain, forged, bytes(flipped), b"junk"):
        assert d.receive_datagram(data, (HOST, 8990), 1.0) is None
    assert len(d) == 0
    assert d.stats.rejected == {"unauthenticated": 1, "bad_tag": 2}
    assert d.stats.garbage == {"truncated": 1}


def test_unsolicited_announce_is_a_hint_a_receiver_does_not_follow() -> None:
    d = Directory(auth=AUTH)
    r = Responder(announce(), announce_interval=1.0, auth=AUTH)
    (unsolicited,) = r.datagrams_to_send(0.0)
    hint = d.receive_datagram(unsolicited, (HOST, 8990), 1.0)
    assert hint is not None and not hint.answered
    assert d.stats.hints == 1
    assert d.entries(1.0, answers_only=True) == []
    assert [f.answered for f in d.entries(1.0)] == [False]
    d.expect(42)
    r2 = responder()
    r2._seq = 5  # the real sender's answer comes later: newer seq
    d.receive_datagram(answer(r2, 42), (HOST, 8990), 2.0)
    assert [f.answered for f in d.entries(2.0, answers_only=True)] == [True]


def test_outstanding_nonces_are_bounded() -> None:
    d = Directory(auth=AUTH)
    r = responder()
    first = answer(r, 1)
    for n in range(1, MAX_OUTSTANDING_QUERIES + 2):
        d.expect(n)
    assert d.receive_datagram(first, (HOST, 8990), 1.0) is None  # nonce 1 was forgotten
    assert d.stats.rejected == {"stale_answer": 1}


def test_rotation_querier_holding_two_keys_accepts_either() -> None:
    both = DiscoveryAuth([NEXT, KEY])
    assert both.key_id == NEXT.key_id
    d = Directory(auth=both)
    d.expect(10)
    assert d.receive_datagram(answer(responder(), 10), (HOST, 8990), 1.0) is not None
    # a sender with the old key only refuses the new key's queries (unknown_key)
    r = responder()
    assert r.receive_datagram(both.seal(query(11, auth=None)), QUERIER, 1.0) == []
    assert r.stats.rejected == {"unknown_key": 1}


def test_keyless_directory_behaves_as_before() -> None:
    r = Responder(announce(), network=NET, announce_interval=0)
    ((data, _),) = r.receive_datagram(query(0, auth=None), QUERIER, 1.0)
    d = Directory()
    found = d.receive_datagram(data, (HOST, 8990), 1.0)
    assert found is not None and found.answered
    assert len(data) == len(codec.encode(announce()))
