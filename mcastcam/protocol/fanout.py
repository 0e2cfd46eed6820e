"""The fan-out policy (pure): one latest-frame slot per subscriber, no queues.

See docs/architecture.md §3.

µStreamer's model (``src/ustreamer/http/server.c``): a subscriber whose previous write has
not drained yet is *busy*; it keeps **one** pending slot holding only the newest frame, and
a frame replaced in that slot is *skipped* for that subscriber (counted). When its write
drains it gets the pending frame at once. A stalled subscriber never delays the others:
offering it a frame costs one slot assignment.

This module decides *what* to write and *when*; it never writes. The shell
(:mod:`mcastcam.receiver.fanout`) owns the transports: it writes the frame a method returns,
then reports the write with :meth:`FrameSlot.sent` (bytes, and whether bytes are left
unsent, i.e. the subscriber is now busy) and the drain with :meth:`FrameSlot.drained`.
Times are monotonic seconds passed in (``now``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from mcastcam.errors import McastcamError
from mcastcam.protocol.rates import RateMeter

__all__ = ["FPS_WINDOW_INTERVAL", "FanOut", "FrameSlot", "HubFullError"]

F = TypeVar("F")

#: Per-subscriber delivered frame rate is measured over this many seconds.
FPS_WINDOW_INTERVAL = 2.0


class HubFullError(McastcamError):
    """``max_clients`` subscribers are already there; the new one is refused."""


class FrameSlot(Generic[F]):
    """One subscriber's latest-frame slot and counters. Create with :meth:`FanOut.add`.

    Attributes:
        connected_at: ``now`` when it was added (monotonic seconds).
        frames_sent: frames written whole to the subscriber (reported by :meth:`sent`).
        frames_skipped: frames replaced in the pending slot before they could be written.
        bytes_sent: bytes written for frames (the shell's headers included).
        busy: a previous write has not drained yet; new frames wait in the slot.
        closed: the subscriber is gone; it is offered nothing more.
    """

    __slots__ = (
        "_pending",
        "_rate",
        "busy",
        "bytes_sent",
        "closed",
        "connected_at",
        "frames_sent",
        "frames_skipped",
    )

    def __init__(self, now: float, *, held: bool = False) -> None:
        self.connected_at = now
        self.frames_sent = 0
        self.frames_skipped = 0
        self.bytes_sent = 0
        self.busy = held
        self.closed = False
        self._pending: F | None = None
        self._rate = RateMeter(FPS_WINDOW_INTERVAL, now)

    @property
    def pending(self) -> F | None:
        """The frame waiting for the subscriber's write to drain, or ``None``."""
        return self._pending

    def offer(self, frame: F, now: float) -> F | None:
        """A new frame is out: returns it if the shell must write it now, else ``None``.

        While busy, ``frame`` replaces the pending one (which counts as skipped); while
        closed, nothing happens. After writing a returned frame the shell calls :meth:`sent`.
        """
        if self.closed:
            return None
        if self.busy:
            if self._pending is not None:
                self.frames_skipped += 1
            self._pending = frame
            return None
        return frame

    def sent(self, nbytes: int, now: float, *, busy: bool) -> None:
        """The shell wrote a frame of ``nbytes`` bytes at ``now``.

        Args:
            nbytes: bytes written for the frame (headers included).
            now: monotonic seconds.
            busy: the write left bytes unsent: wait for :meth:`drained` before the next.
        """
        self.frames_sent += 1
        self.bytes_sent += nbytes
        self._rate.add(now)
        self.busy = busy

    def drained(self, now: float) -> F | None:
        """The subscriber's write buffer is empty: returns the pending frame to write, if any."""
        self.busy = False
        frame, self._pending = self._pending, None
        return None if self.closed else frame

    def close(self) -> None:
        """The subscriber is gone (or going): drop the pending frame, offer nothing more."""
        self.closed = True
        self._pending = None

    def fps(self, now: float) -> float:
        """Frames written per second over the last :data:`FPS_WINDOW_INTERVAL` seconds.

        Since it was added, while it is younger than that (:class:`RateMeter`).
        """
        return self._rate.rate(now)


class FanOut(Generic[F]):
    """Every subscriber's slot, the ``max_clients`` bound and the totals of those gone.

    Args:
        max_clients: subscribers allowed at once; :meth:`add` refuses one more.

    Raises:
        ValueError: ``max_clients`` is below 1.
    """

    def __init__(self, max_clients: int = 1000) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.max_clients = max_clients
        self.clients_refused = 0
        self.frames_sent_closed = 0
        self.frames_skipped_closed = 0
        self._slots: dict[int, FrameSlot[F]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[FrameSlot[F]]:
        """The current slots, oldest first (a snapshot: removing while iterating is safe)."""
        return iter(list(self._slots.values()))

    def add(self, now: float, *, held: bool = False) -> FrameSlot[F]:
        """A new subscriber at ``now``; this is the only place ``max_clients`` is checked.

        Args:
            now: monotonic seconds.
            held: start busy, so frames wait in the slot until the first :meth:`drained`
                (for a shell that must write something else first, e.g. HTTP headers).

        Raises:
            HubFullError: ``max_clients`` subscribers are already there (counted in
                :attr:`clients_refused`).
        """
        if len(self._slots) >= self.max_clients:
            self.clients_refused += 1
            raise HubFullError(
                f"too many clients: {len(self._slots)} connected, max_clients={self.max_clients}"
            )
        slot: FrameSlot[F] = FrameSlot(now, held=held)
        self._slots[id(slot)] = slot
        return slot

    def remove(self, slot: FrameSlot[F]) -> bool:
        """Close ``slot`` and forget it (idempotent); returns whether it was still here.

        Its counters go to :attr:`frames_sent_closed` and :attr:`frames_skipped_closed`.
        """
        slot.close()
        if self._slots.pop(id(slot), None) is None:
            return False
        self.frames_sent_closed += slot.frames_sent
        self.frames_skipped_closed += slot.frames_skipped
        return True

    def offer(self, frame: F, now: float) -> list[FrameSlot[F]]:
        """Offer ``frame`` to every slot; returns the slots that must write it now."""
        return [slot for slot in self._slots.values() if slot.offer(frame, now) is not None]

    @property
    def frames_sent_total(self) -> int:
        """Frames written to every subscriber, current and gone."""
        return self.frames_sent_closed + sum(s.frames_sent for s in self._slots.values())

    @property
    def frames_skipped_total(self) -> int:
        """Frames skipped by every subscriber, current and gone."""
        return self.frames_skipped_closed + sum(s.frames_skipped for s in self._slots.values())
