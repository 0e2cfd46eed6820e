"""Authentication wired into the pure cores (docs/protocol.md §8): sender -> receiver with a key.

Scripted time, no sockets: the socket-level attacks are tests/test_auth_sockets.py and
tests/lab/test_attacks_key.py.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest

from mcastcam.errors import DecodeError
from mcastcam.protocol.auth import Aead, MasterKey
from mcastcam.protocol.codec import Heartbeat, Nack, NackEntry, ReceiverReport, decode, encode
from mcastcam.protocol.events import FrameReady
from mcastcam.protocol.frame import CapturedFrame
from mcastcam.protocol.receiver import ReceiverSession
from mcastcam.protocol.reports import Reporter
from mcastcam.protocol.sender import SenderConfig, SenderSession
from mcastcam.protocol.trust import Sealer, Verifier, seal_control
from mcastcam.protocol.wire import Flag

KEY = MasterKey(7, bytes(range(32)))
OTHER = MasterKey(7, bytes(32))
SENDER_ADDR = ("127.0.0.1", 5000)
RECEIVER_ADDR = ("127.0.0.2", 6000)


def make_sender(
    stream_id: int = 0x1111, run: int = 0x2222, master: MasterKey = KEY, **kw: object
) -> SenderSession:
    cfg = SenderConfig(stream_id=stream_id, name="cam", host="127.0.0.1", run_nonce=run)
    sealer = Sealer(master, stream_id, run, **kw)  # type: ignore[arg-type]
    return SenderSession(cfg, 0.0, seq=0xFFFF_FFF0, sealer=sealer)


def make_receiver(master: MasterKey = KEY) -> ReceiverSession:
    counter = itertools.count(0x1234_5678_9ABC)
    return ReceiverSession(
        reporter=Reporter(0xCAFE, "rx", "127.0.0.2"),
        verifier=Verifier([master]),
        token=lambda: next(counter),
    )


def wire(parts: tuple[bytes | memoryview, ...]) -> bytes:
    return b"".join(bytes(p) for p in parts)


def pump(
    tx: SenderSession, rx: ReceiverSession, start: float, until: float, capture: list[bytes]
) -> list[bytes]:
    """Both cores with a perfect link; returns the JPEGs served (FrameReady)."""
    served: list[bytes] = []
    now = start
    while now <= until:
        tx.handle_timer(now)
        for parts in tx.datagrams_to_send(now):
            data = wire(parts)
            capture.append(data)
            rx.receive_datagram(data, SENDER_ADDR, now)
        for data, _dest in tx.unicast_to_send():
            capture.append(data)
            rx.receive_datagram(data, SENDER_ADDR, now)
        rx.handle_timer(now)
        for data, _dest in rx.datagrams_to_send(now):
            tx.receive_datagram(data, RECEIVER_ADDR, now)
        while (ev := rx.next_event()) is not None:
            if isinstance(ev, FrameReady):
                served.append(bytes(ev.frame.jpeg))
        now += 0.005
    return served


def drain(tx: SenderSession, start: float, until: float) -> list[bytes]:
    """What the sender sends from ``start`` to ``until`` (5 ms steps), delivered nowhere."""
    out = []
    for i in range(round((until - start) / 0.005) + 1):
        now = start + i * 0.005
        tx.handle_timer(now)
        out += [wire(p) for p in tx.datagrams_to_send(now)]
    return out


def jpeg(n: int, size: int = 5000) -> bytes:
    return b"\xff\xd8" + bytes([n % 251]) * size + b"\xff\xd9"


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"encrypt": True},
        {"aead": Aead.CHACHA20_POLY1305},
        {"aead": Aead.CHACHA20_POLY1305, "encrypt": True},
    ],
)
def test_frames_flow_after_freshness(kw: dict[str, Any]) -> None:
    tx, rx = make_sender(**kw), make_receiver()
    capture: list[bytes] = []
    served = pump(tx, rx, 0.0, 0.2, capture)  # heartbeat, challenge, echo
    assert rx.trust_counters["echoes"] == 1
    frames = [jpeg(i) for i in range(5)]
    t = 0.2
    for f in frames:
        tx.queue_frame(CapturedFrame(f, 0, 1), t)
        served += pump(tx, rx, t, t + 0.05, capture)
        t += 0.06
    assert served == frames
    symbols = [d for d in capture if d[3] in (1, 16)]
    assert symbols and all(d[5] & Flag.AUTH for d in symbols)
    if kw.get("encrypt"):
        assert all(frames[1][10:30] not in d for d in symbols)
    st = rx.status(t)
    assert st["auth"]["echoes"] == 1
    assert not st["decode_errors"]


def test_no_frame_before_the_echo_and_replays_refused() -> None:
    tx, rx = make_sender(), make_receiver()
    capture: list[bytes] = []
    tx.queue_frame(CapturedFrame(jpeg(1), 0, 1), 0.0)
    # The receiver hears the run but its challenge never reaches the sender: held, not served.
    served: list[bytes] = []
    for i in range(20):
        now = i * 0.005
        tx.handle_timer(now)
        for parts in tx.datagrams_to_send(now):
            capture.append(wire(parts))
            rx.receive_datagram(capture[-1], SENDER_ADDR, now)
        rx.handle_timer(now)
        rx.datagrams_to_send(now)  # the challenge is lost
    while (ev := rx.next_event()) is not None:
        assert not isinstance(ev, FrameReady)
    assert rx.trust_counters["awaiting_freshness"] == 1
    served += pump(tx, rx, 1.1, 1.3, capture)  # next challenge at 1/s: echo, held frame out
    assert served == [jpeg(1)]
    # Same-run replays of everything captured: nothing served twice. Heartbeats and the
    # symbols verified on their own (each frame's first, repair after the frame) are refused
    # by the replay window; the other source symbols of a finished frame before any crypto
    # (``late``, §8.5: symbols are verified lazily, so their seq64 never entered the window).
    before = rx.reassembler.stream_stats(0x1111)
    assert before is not None
    datagrams = before.datagrams
    for data in capture:
        rx.receive_datagram(data, SENDER_ADDR, 1.4)
    errors = rx.status(1.4)["streams"][0]["decode_errors"]
    refused = ("replayed", "replayed_old", "late")
    assert sum(errors.get(r, 0) for r in refused) == len(capture)
    assert errors["late"] >= 1 and errors["replayed"] >= 1
    assert before.datagrams == datagrams  # replays never counted as received
    while (ev := rx.next_event()) is not None:
        assert not isinstance(ev, FrameReady)


def test_earlier_run_replayed_is_never_served_and_takes_nothing_over() -> None:
    old_tx, rx_old = make_sender(0xAAAA, 0xBBBB), make_receiver()
    recording: list[bytes] = []
    pump(old_tx, rx_old, 0.0, 0.2, recording)
    old_tx.queue_frame(CapturedFrame(jpeg(99), 0, 1), 0.2)
    pump(old_tx, rx_old, 0.2, 0.3, recording)
    # The sender restarts (new run); a new receiver follows it; then the recording is replayed.
    tx, rx = make_sender(0x3333, 0x4444), make_receiver()
    capture: list[bytes] = []
    pump(tx, rx, 10.0, 10.2, capture)
    assert rx.followed == 0x3333
    served = []
    for i, data in enumerate(recording):
        rx.receive_datagram(data, ("127.0.0.9", 5000), 10.3 + i * 0.001)
        rx.handle_timer(10.3 + i * 0.001)
        while (ev := rx.next_event()) is not None:
            if isinstance(ev, FrameReady):
                served.append(ev.frame)
    assert served == []
    assert rx.followed == 0x3333
    assert rx.trust_counters["awaiting_freshness"] >= 1
    challenges = rx.datagrams_to_send(10.5)  # they go to the recorded host: no echo ever
    assert challenges
    tx.queue_frame(CapturedFrame(jpeg(5), 0, 1), 11.0)
    assert pump(tx, rx, 11.0, 11.1, capture) == [jpeg(5)]


def test_forgeries_counted_and_never_served() -> None:
    tx, rx = make_sender(), make_receiver()
    capture: list[bytes] = []
    pump(tx, rx, 0.0, 0.2, capture)
    tx.queue_frame(CapturedFrame(jpeg(3), 0, 1), 0.2)
    sent = drain(tx, 0.2, 0.25)
    served = []
    # A bit flip in every symbol, then the real ones: only the real frame comes out.
    for data in sent:
        bad = bytearray(data)
        bad[60] ^= 1
        rx.receive_datagram(bytes(bad), SENDER_ADDR, 0.21)
    # Untagged copies (AUTH cleared, tag cut) and a wrong key's run.
    for data in sent:
        plain = bytearray(data[:-16])
        plain[5] = 0
        plain[41] = 0
        rx.receive_datagram(bytes(plain), SENDER_ADDR, 0.21)
    evil = make_sender(0x1111, 0x2222, OTHER)
    evil.queue_frame(CapturedFrame(jpeg(66), 0, 1), 0.2)
    for data in drain(evil, 0.2, 0.25):
        rx.receive_datagram(data, SENDER_ADDR, 0.21)
    for data in sent:
        rx.receive_datagram(data, SENDER_ADDR, 0.22)
    while (ev := rx.next_event()) is not None:
        if isinstance(ev, FrameReady):
            served.append(bytes(ev.frame.jpeg))
    assert served == [jpeg(3)]
    errors = rx.status(0.3)["streams"][0]["decode_errors"]
    assert errors["bad_tag"] >= 2 * len([d for d in sent if d[3] in (1, 16)])
    assert errors["unauthenticated"] == len(sent)


def test_sender_refuses_forged_and_replayed_nacks_and_reports() -> None:
    tx = make_sender()
    tx.queue_frame(CapturedFrame(jpeg(1, 20000), 0, 1), 0.0)
    drain(tx, 0.0, 0.005)
    nack = Nack(0x1111, 5, 0xCAFE, (NackEntry(0, 3),), run_nonce=0x2222)
    plain = encode(nack)
    # Untagged, wrong key, then a good one and its replay.
    tx.receive_datagram(plain, RECEIVER_ADDR, 0.01)
    wrong = Verifier([OTHER]).runs.lookup(7, 0x1111, 0x2222, 0.0).keys
    tx.receive_datagram(seal_control(wrong.k_r2s, 7, plain), RECEIVER_ADDR, 0.01)
    good = Verifier([KEY]).runs.lookup(7, 0x1111, 0x2222, 0.0).keys
    tagged = seal_control(good.k_r2s, 7, plain)
    tx.receive_datagram(tagged, RECEIVER_ADDR, 0.01)
    tx.receive_datagram(tagged, RECEIVER_ADDR, 0.011)
    errors = tx.stats.rx_errors
    assert errors["unauthenticated"] == 1
    assert errors["bad_tag"] == 1
    assert errors["replayed"] == 1
    assert tx.stats.nacks_received == 1
    # A report with a challenge gets one unicast echo; its replay gets none.
    rep = ReceiverReport(
        0x1111, 9, 0xCAFE, "rx", "127.0.0.2", 0, 0, 0, 0, 0, run_nonce=0x2222, challenge=42
    )
    data = seal_control(good.k_r2s, 7, encode(rep))
    tx.receive_datagram(data, RECEIVER_ADDR, 0.02)
    tx.receive_datagram(data, RECEIVER_ADDR, 0.03)
    (echo,) = tx.unicast_to_send()
    assert echo[1] == RECEIVER_ADDR
    hb = decode(Verifier([KEY]).open(echo[0], 0.04))
    assert isinstance(hb, Heartbeat)
    assert (hb.echo_receiver_id, hb.echo_challenge, hb.aead) == (0xCAFE, 42, 1)
    assert errors["replayed"] == 2


def test_verifier_refuses_before_state() -> None:
    v = Verifier([KEY], max_derivations_per_s=2)
    for i in range(10):  # invented runs: at most 2 derivations a second, nothing cached
        junk = bytearray(os.urandom(1472))
        junk[0:6] = b"MC\x02\x01\x00\x01"
        junk[41] = 7
        junk[44:48] = (i + 1).to_bytes(4, "big")
        with pytest.raises(DecodeError) as exc:
            v.open(bytes(junk), 0.0)
        assert exc.value.reason in ("bad_tag", "key_derivation_limited", "bad_geometry")
    assert len(v.runs) == 0
    assert v.runs.derivations <= 2
