"""Receiver reports and the sender's audience: scripted time, 1000 simulated receivers."""

from __future__ import annotations

import random

from mcastcam.protocol.audience import Audience
from mcastcam.protocol.codec import Heartbeat, Nack, NackEntry, ReceiverReport, decode, encode
from mcastcam.protocol.events import ReceiverJoined, ReceiverLeft
from mcastcam.protocol.reporting import REPORT_SHARE, report_interval, report_wire_bytes
from mcastcam.protocol.reports import Reporter
from mcastcam.protocol.sender import SenderConfig, SenderSession

SENDER = ("198.18.0.1", 40000)
RUN = 0x5EED


def heartbeat(
    audience: int = 1, send_ts_ns: int = 5_000_000_000, interval_ms: int = 1000
) -> Heartbeat:
    return Heartbeat(
        stream_id=7,
        seq=1,
        name="cam",
        host="198.18.0.1",
        source_state=0,
        width=640,
        height=480,
        fps_milli=30000,
        interval_ms=interval_ms,
        frames_sent=10,
        datagrams_sent=50,
        uptime_ns=1,
        send_ts_ns=send_ts_ns,
        audience=audience,
        run_nonce=RUN,
    )


def test_report_echoes_the_heartbeat_and_measures_loss() -> None:
    r = Reporter(0xABC, "rx", "198.18.0.2", rng=None)
    assert r.get_timer() is None
    r.on_heartbeat(heartbeat(), SENDER, now=10.0)
    assert r.get_timer() == 10.5  # the first report comes half an interval after
    assert (
        r.report(10.2, frames_completed=1, frames_dropped=0, datagrams=10, lost=0, stream_bytes=0)
        is None
    )
    first = r.report(
        10.5, frames_completed=3, frames_dropped=0, datagrams=100, lost=0, stream_bytes=10_000
    )
    assert first is not None
    data, dest = first
    assert dest == SENDER
    msg = decode(data)
    assert isinstance(msg, ReceiverReport)
    assert (msg.stream_id, msg.receiver_id, msg.name, msg.host) == (7, 0xABC, "rx", "198.18.0.2")
    assert msg.echo_ts_ns == 5_000_000_000 and msg.held_ns == 500_000_000
    second = r.report(
        11.5, frames_completed=30, frames_dropped=1, datagrams=190, lost=10, stream_bytes=20_000
    )
    assert second is not None
    msg2 = decode(second[0])
    assert isinstance(msg2, ReceiverReport)
    assert msg2.loss_ppm == 100_000  # 10 lost of 100 expected since the last report
    assert msg2.frames_dropped == 1


def test_report_v2_fields_burst_repair_counters_and_no_challenge() -> None:
    r = Reporter(0xABC, "rx", "198.18.0.2", rng=None)
    r.on_heartbeat(heartbeat(), SENDER, now=10.0)
    assert (
        r.report(
            10.5,
            frames_completed=0,
            frames_dropped=0,
            datagrams=100,
            lost=0,
            stream_bytes=0,
            loss_bursts=0,
        )
        is not None
    )
    got = r.report(
        11.5,
        frames_completed=30,
        frames_dropped=1,
        datagrams=188,
        lost=12,
        stream_bytes=1,
        loss_bursts=4,
        repaired_fec=5,
        repaired_nack=2,
        unrepairable=1,
    )
    assert got is not None
    msg = decode(got[0])
    assert isinstance(msg, ReceiverReport)
    assert msg.burst_milli == 3000  # 12 datagrams lost in 4 gaps
    assert (msg.repaired_fec, msg.repaired_nack, msg.unrepairable) == (5, 2, 1)
    assert msg.challenge == 0 and msg.run_nonce == RUN
    due = r.get_timer()
    assert due is not None
    quiet = r.report(
        due,
        frames_completed=60,
        frames_dropped=1,
        datagrams=288,
        lost=12,
        stream_bytes=2,
        loss_bursts=4,
    )
    assert quiet is not None
    msg = decode(quiet[0])
    assert isinstance(msg, ReceiverReport) and msg.burst_milli == 0  # no loss this interval


def test_nacks_share_the_report_destination_and_counter() -> None:
    r = Reporter(0xABC, "rx", "198.18.0.2", rng=None)
    assert r.nack((NackEntry(5, 3),)) is None  # no heartbeat yet: nowhere to send
    r.on_heartbeat(heartbeat(), SENDER, now=10.0)
    first = r.report(
        10.5, frames_completed=0, frames_dropped=0, datagrams=1, lost=0, stream_bytes=0
    )
    got = r.nack((NackEntry(5, 3), NackEntry(6, 1)))
    assert first is not None and got is not None
    data, dest = got
    assert dest == SENDER
    msg = decode(data)
    assert isinstance(msg, Nack)
    assert (msg.stream_id, msg.receiver_id, msg.run_nonce) == (7, 0xABC, RUN)
    assert len(data) == 25 + 6 * 2  # §7
    assert msg.entries == (NackEntry(5, 3), NackEntry(6, 1))
    assert msg.seq == decode(first[0]).seq + 1
    assert r.nacks_sent == 1
    report = decode(first[0])
    assert isinstance(report, ReceiverReport)
    assert len(first[0]) + 28 == report_wire_bytes("rx")  # the size the interval rule uses


def test_interval_grows_with_the_audience_to_stay_under_five_percent() -> None:
    size = report_wire_bytes("receiver")
    assert report_interval(1, 250_000, 1.0, size) == 1.0
    many = report_interval(1000, 250_000, 1.0, size)
    assert abs(1000 * size / many - REPORT_SHARE * 250_000) < 1e-6


def test_a_thousand_receivers_keep_the_sender_report_load_bounded() -> None:
    """RFC 3550 §6.2: 1000 receivers of a 2 Mbit/s stream, randomised intervals."""
    stream_bytes_per_s = 250_000.0
    rng = random.Random(7)
    reporters = [Reporter(i, f"rx{i:04d}", "198.18.1.1", rng=rng.random) for i in range(1000)]
    arrivals: list[tuple[float, int]] = []
    for i, rep in enumerate(reporters):
        t = rng.uniform(0, 1)
        rep.on_heartbeat(heartbeat(audience=1000), SENDER, now=t)
        got_bytes = 0
        while True:
            due = rep.get_timer()
            assert due is not None
            if due > 120:
                break
            got_bytes = int(stream_bytes_per_s * due)
            out = rep.report(
                due,
                frames_completed=0,
                frames_dropped=0,
                datagrams=int(due * 200),
                lost=0,
                stream_bytes=got_bytes,
            )
            assert out is not None
            arrivals.append((due, len(out[0]) + 28))
            rep.on_heartbeat(heartbeat(audience=1000), SENDER, now=due)
        assert i == rep.receiver_id
    steady = [b for t, b in arrivals if 20 <= t < 120]
    load = sum(steady) / 100  # bytes/s at the sender, after the start-up burst
    assert load <= REPORT_SHARE * stream_bytes_per_s * 1.15, load
    assert load >= REPORT_SHARE * stream_bytes_per_s * 0.5, load  # and they do report
    per_second = [0] * 120
    for t, b in arrivals:
        per_second[int(t)] += b
    assert max(per_second[20:]) < 3 * load  # no synchronised bursts


def test_audience_rtt_expiry_and_bound() -> None:
    aud = Audience(stream_id=7, max_entries=3)
    rep = ReceiverReport(
        7, 0, 1, "rx", "198.18.0.2", 10, 1, 2500, echo_ts_ns=1_000_000_000, held_ns=2_000_000
    )
    entry = aud.receive_report(rep, ("198.18.0.2", 5000), now=3.0, now_ns=1_005_000_000)
    assert entry is not None and entry.rtt is not None
    assert abs(entry.rtt - 0.003) < 1e-9 and entry.loss_pct == 0.25
    assert (
        aud.receive_report(
            ReceiverReport(8, 0, 1, "x", "1.2.3.4", 0, 0, 0, 0, 0), ("1.2.3.4", 1), 3.0, 0
        )
        is None
    )
    for i in range(2, 6):
        aud.receive_report(
            ReceiverReport(7, 0, i, f"rx{i}", "198.18.0.3", 0, 0, 0, 0, 0),
            ("198.18.0.3", i),
            4.0 + i,
            0,
        )
    assert len(aud) == 3  # bounded: the stalest went
    gone = aud.expire(now=11.5, report_interval=1.0)  # silent for more than 3 s
    assert [g.receiver_id for g in gone] == [3, 4]
    assert aud.summary()["receivers"] == 1


def test_sender_session_counts_garbage_and_tracks_receivers() -> None:
    cfg = SenderConfig(stream_id=7, name="cam", heartbeat_interval=1.0, host="198.18.0.1")
    s = SenderSession(cfg, now=0.0)
    s.receive_datagram(b"garbage-garbage-garbage", ("198.18.0.9", 1), 0.1)
    s.receive_datagram(encode(heartbeat()), ("198.18.0.9", 1), 0.1)
    assert s.stats.rx_errors == {"bad_magic": 1, "not_for_sender": 1}
    report = ReceiverReport(
        7, 0, 42, "rx", "198.18.0.2", 1, 0, 0, 0, 0, run_nonce=s.config.run_nonce
    )
    s.receive_datagram(encode(report), ("198.18.0.2", 6000), 0.2)
    ev = s.next_event()
    assert isinstance(ev, ReceiverJoined) and ev.listener.receiver_id == 42
    beats = [decode(h) for h, _ in s.datagrams_to_send(1.0)]
    assert isinstance(beats[0], Heartbeat) and beats[0].audience == 1
    s.datagrams_to_send(2.0)
    s.datagrams_to_send(6.0)  # silent for > 3 × 1.5 × 1 s: gone
    ev = s.next_event()
    assert isinstance(ev, ReceiverLeft) and ev.listener.receiver_id == 42
    assert len(s.audience) == 0
