"""The fan-out policy, pure: scripted time, scripted drains, no transports."""

from __future__ import annotations

import pytest

from mcastcam.protocol.fanout import FPS_WINDOW_INTERVAL, FanOut, FrameSlot, HubFullError


def write(slot: FrameSlot[str], frame: str | None, now: float, *, busy: bool) -> str | None:
    """What a shell does with a frame the policy hands out: write it, report the write."""
    if frame is not None:
        slot.sent(len(frame), now, busy=busy)
    return frame


def test_idle_subscriber_gets_every_frame_at_once() -> None:
    slot: FrameSlot[str] = FrameSlot(0.0)
    got = [write(slot, slot.offer(f"f{i}", i / 10), i / 10, busy=False) for i in range(5)]
    assert got == ["f0", "f1", "f2", "f3", "f4"]
    assert (slot.frames_sent, slot.frames_skipped, slot.bytes_sent) == (5, 0, 10)
    assert not slot.busy and slot.pending is None


def test_slow_subscriber_skips_and_never_queues() -> None:
    slot: FrameSlot[str] = FrameSlot(0.0)
    assert write(slot, slot.offer("f0", 0.0), 0.0, busy=True) == "f0"  # bytes left unsent
    assert slot.busy
    for i in range(1, 10):  # nine frames while the first still drains
        assert slot.offer(f"f{i}", i * 0.1) is None
        assert slot.pending == f"f{i}"  # one slot, the newest only
    assert slot.frames_skipped == 8  # f1..f8 replaced in the slot
    # the drain hands out the newest frame, once
    assert write(slot, slot.drained(1.0), 1.0, busy=False) == "f9"
    assert slot.pending is None and not slot.busy
    assert slot.drained(1.1) is None
    assert slot.frames_sent + slot.frames_skipped == 10
    assert slot.bytes_sent == 4


def test_drain_without_pending_frame_then_next_frame_goes_straight_out() -> None:
    slot: FrameSlot[str] = FrameSlot(0.0)
    write(slot, slot.offer("a", 0.0), 0.0, busy=True)
    assert slot.drained(0.5) is None and not slot.busy
    assert slot.offer("b", 0.6) == "b"


def test_held_slot_waits_for_its_first_drain() -> None:
    slot: FrameSlot[str] = FrameSlot(0.0, held=True)
    assert slot.busy and slot.offer("a", 0.1) is None and slot.offer("b", 0.2) is None
    assert slot.frames_skipped == 1
    assert slot.drained(0.3) == "b"


def test_closed_slot_gets_nothing() -> None:
    slot: FrameSlot[str] = FrameSlot(0.0)
    write(slot, slot.offer("a", 0.0), 0.0, busy=True)
    slot.offer("b", 0.1)
    slot.close()
    assert slot.pending is None and slot.drained(0.2) is None and slot.offer("c", 0.3) is None


def test_fps_over_the_window_with_scripted_time() -> None:
    slot: FrameSlot[str] = FrameSlot(0.0)
    now = 0.0
    for _ in range(100):  # 25 fps for 4 s
        now += 0.04
        write(slot, slot.offer("x", now), now, busy=False)
    assert slot.fps(now) == pytest.approx(25.0, rel=0.03)
    assert slot.fps(now + FPS_WINDOW_INTERVAL + 0.01) == 0.0  # silent for a whole window
    young: FrameSlot[str] = FrameSlot(10.0)
    write(young, young.offer("x", 10.5), 10.5, busy=False)
    assert young.fps(11.0) == pytest.approx(1.0)  # the window is its age while it is young


def test_fanout_offers_to_every_slot_and_only_idle_ones_write() -> None:
    fan: FanOut[str] = FanOut(max_clients=3)
    fast, slow = fan.add(0.0), fan.add(0.0)
    assert fan.offer("f0", 0.0) == [fast, slow]
    write(fast, "f0", 0.0, busy=False)
    write(slow, "f0", 0.0, busy=True)
    for i in range(1, 5):
        assert fan.offer(f"f{i}", i * 0.1) == [fast]
        write(fast, f"f{i}", i * 0.1, busy=False)
    assert (fast.frames_sent, fast.frames_skipped) == (5, 0)
    assert (slow.frames_sent, slow.frames_skipped, slow.pending) == (1, 3, "f4")
    assert fan.frames_sent_total == 6 and fan.frames_skipped_total == 3
    assert fan.remove(slow) and not fan.remove(slow)  # idempotent
    assert slow.closed and len(fan) == 1
    assert fan.frames_sent_total == 6 and fan.frames_skipped_total == 3  # kept after it left
    assert fan.offer("f5", 0.5) == [fast]
    assert list(fan) == [fast]


def test_max_clients_checked_in_add_and_room_again_after_remove() -> None:
    with pytest.raises(ValueError, match="max_clients"):
        FanOut[str](max_clients=0)
    fan: FanOut[str] = FanOut(max_clients=2)
    a = fan.add(0.0)
    fan.add(0.0)
    with pytest.raises(HubFullError, match=r"2 connected, max_clients=2"):
        fan.add(0.1)
    with pytest.raises(HubFullError):
        fan.add(0.2, held=True)
    assert fan.clients_refused == 2 and len(fan) == 2
    fan.remove(a)
    assert fan.add(0.3) is not None and fan.clients_refused == 2
