"""Frame fan-out shell: one latest frame, many HTTP/TCP clients, no queues.

See docs/architecture.md §3.

The receiver publishes each complete :class:`~mcastcam.protocol.frame.Frame` to a
:class:`FrameHub`. The policy — one latest-frame slot per subscriber, skip rather than
queue, ``max_clients`` — is the pure :class:`mcastcam.protocol.fanout.FanOut`; this module
is its shell: it writes the frames the policy hands out straight to each subscriber's
asyncio transport, the same frame object to all of them (µStreamer's model,
``src/ustreamer/http/server.c``), tells the policy when a write leaves bytes unsent
(*busy*) and when the transport drains (:meth:`Subscriber.drained`).

The transports get ``set_write_buffer_limits(high=0, low=0)`` so that "drained" means the
transport's buffer is empty: asyncio then calls ``pause_writing()`` as soon as a write
leaves bytes unsent and ``resume_writing()`` when everything has reached the kernel.

Whether the sender is online is not kept here: the hub asks a liveness source (the
receiver session, see :meth:`FrameHub.set_liveness_source`); a hub without one (tests,
tools) is switched by hand with :meth:`FrameHub.set_online`.

Everything runs on the event loop thread; times are ``loop.time()`` seconds (monotonic).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from mcastcam.errors import SourceError
from mcastcam.jpeg import ensure_dht
from mcastcam.protocol.fanout import FPS_WINDOW_INTERVAL, FanOut, FrameSlot, HubFullError
from mcastcam.protocol.frame import Frame

__all__ = [
    "FPS_WINDOW_INTERVAL",
    "FrameHub",
    "HubFullError",
    "LivenessSource",
    "Piece",
    "PieceEncoder",
    "Subscriber",
]

log = logging.getLogger(__name__)

Piece = bytes | memoryview
#: Turns a frame into the pieces written for it, in order (e.g. part header, JPEG, trailer).
#: Pieces are written one ``transport.write()`` each: never joined, never copied.
PieceEncoder = Callable[[Frame], Sequence[Piece]]
#: Stream id of the frame held -> ``""`` while that stream is live, else why not (one line).
LivenessSource = Callable[[int], str]

_NO_FRAME_YET = "no frame received yet"


class Subscriber:
    """One HTTP or TCP client of the hub: a transport and its latest-frame slot.

    Create with :meth:`FrameHub.subscribe`. The shell owning the transport calls
    :meth:`drained` when its write buffer is empty again (``resume_writing``) and
    :meth:`FrameHub.unsubscribe` when the connection ends.

    Attributes:
        address: the peer as ``"host:port"``.
        kind: ``"http"``, ``"tcp"``, ``"publish"`` (ffmpeg, see publish.py) or ``"record"``
            (the disk recorder, see recorder.py).
        connected_since: wall-clock time when it subscribed (Unix seconds).
        slot: its pure latest-frame slot (counters, busy, pending).
    """

    def __init__(
        self,
        hub: FrameHub,
        transport: asyncio.WriteTransport,
        slot: FrameSlot[Frame],
        *,
        kind: Literal["http", "tcp", "publish", "record"],
        address: str,
        encoder: PieceEncoder,
    ) -> None:
        self._hub = hub
        self._transport = transport
        self._encoder = encoder
        self.slot = slot
        self.kind = kind
        self.address = address
        self.connected_since = time.time()
        self._busy_event = asyncio.Event()
        transport.set_write_buffer_limits(high=0, low=0)

    # -- the slot's state, read-only ----------------------------------------------------

    @property
    def connected_at(self) -> float:
        """``loop.time()`` when it subscribed (monotonic seconds)."""
        return self.slot.connected_at

    @property
    def frames_sent(self) -> int:
        """Frames whose pieces were all handed to the transport."""
        return self.slot.frames_sent

    @property
    def frames_skipped(self) -> int:
        """Frames this client never got because it was still busy."""
        return self.slot.frames_skipped

    @property
    def bytes_sent(self) -> int:
        """Bytes handed to the transport for frames (headers included)."""
        return self.slot.bytes_sent

    @property
    def busy(self) -> bool:
        """A previous write has not drained yet."""
        return self.slot.busy

    @property
    def closed(self) -> bool:
        """Unsubscribed, or its transport was found closing: it gets no more frames."""
        return self.slot.closed

    @property
    def pending(self) -> bool:
        """A frame waits in this client's slot for its transport to drain."""
        return self.slot.pending is not None

    # -- writing --------------------------------------------------------------------

    def _write(self, frame: Frame, now: float) -> None:
        transport = self._transport
        if transport.is_closing():
            self.slot.close()
            self._busy_event.set()
            return
        nbytes = 0
        for piece in self._hub._pieces(self._encoder, frame):
            transport.write(piece)
            nbytes += len(piece)
        busy = transport.get_write_buffer_size() > 0
        self.slot.sent(nbytes, now, busy=busy)
        if self._hub.on_write is not None:
            self._hub.on_write(self, frame, now)
        if busy:
            self._busy_event.set()

    def _close(self) -> None:
        self.slot.close()
        self._busy_event.set()

    # -- called by the shell -----------------------------------------------------------

    def drained(self) -> None:
        """The transport's write buffer is empty: send the pending frame if there is one."""
        self._busy_event.clear()
        now = self._hub.now()
        frame = self.slot.drained(now)
        if frame is not None:
            self._write(frame, now)

    async def wait_busy(self) -> None:
        """Return once a write has left bytes unsent (or the subscriber was closed)."""
        await self._busy_event.wait()

    def fps(self, now: float) -> float:
        """Frames delivered per second over the last :data:`FPS_WINDOW_INTERVAL` seconds."""
        return self.slot.fps(now)

    def stats(self, now: float) -> dict[str, Any]:
        """Return this client's line in ``/status``: JSON-ready, times in seconds."""
        slot = self.slot
        return {
            "address": self.address,
            "kind": self.kind,
            "fps": round(slot.fps(now), 2),
            "frames_sent": slot.frames_sent,
            "frames_skipped": slot.frames_skipped,
            "bytes_sent": slot.bytes_sent,
            "since": self.connected_since,
            "connected_for": round(now - slot.connected_at, 3),
            "busy": slot.busy,
        }


class FrameHub:
    """The latest complete frame and the clients it goes to.

    Args:
        max_clients: subscribers allowed at once (HTTP streams and TCP clients together);
            one more raises :class:`HubFullError` (checked once, in
            :meth:`mcastcam.protocol.fanout.FanOut.add`).
        liveness: see :meth:`set_liveness_source`.

    Raises:
        ValueError: ``max_clients`` is below 1.

    Use it on the event loop thread only.
    """

    def __init__(self, *, max_clients: int = 1000, liveness: LivenessSource | None = None) -> None:
        self._fanout: FanOut[Frame] = FanOut(max_clients)
        self._subscribers: dict[int, Subscriber] = {}  # id(slot) -> its subscriber
        self._latest: Frame | None = None
        self._liveness = liveness
        self._manual_online = False  # only for a hub without a liveness source
        self._manual_reason = _NO_FRAME_YET
        self._newer: asyncio.Future[Frame] | None = None
        self._pieces_cache: dict[int, tuple[Frame, Sequence[Piece]]] = {}
        self.frames_published = 0
        self.frames_malformed = 0
        self.on_publish: Callable[[Frame, float], None] | None = None
        """Called with each published frame and the hub's clock (metrics: capture->complete)."""
        self.on_write: Callable[[Subscriber, Frame, float], None] | None = None
        """Called after a frame was handed to a subscriber's transport, with the hub's clock
        (metrics: complete->written); placeholders of :meth:`send_to` included."""

    # -- state ----------------------------------------------------------------------

    @staticmethod
    def now() -> float:
        """The hub's clock: ``loop.time()`` of the running loop (monotonic seconds)."""
        return asyncio.get_running_loop().time()

    @property
    def max_clients(self) -> int:
        """Subscribers allowed at once."""
        return self._fanout.max_clients

    @property
    def clients_refused(self) -> int:
        """Subscribers refused because ``max_clients`` were already there."""
        return self._fanout.clients_refused

    @property
    def latest(self) -> Frame | None:
        """The newest published frame, or ``None`` before the first one."""
        return self._latest

    def set_liveness_source(self, liveness: LivenessSource) -> None:
        """Ask ``liveness`` whether the sender of the latest frame is live, from now on.

        ``liveness(stream_id)`` returns ``""`` while that stream is live, else the reason
        (one line) shown by ``/snapshot``'s 503 and ``/status``. The hub then keeps no
        online flag of its own.
        """
        self._liveness = liveness

    @property
    def online(self) -> bool:
        """Whether the latest frame's sender is live (a frame is there to serve)."""
        return not self.offline_reason

    @property
    def offline_reason(self) -> str:
        """Why the hub is offline (one line), or ``""`` when online."""
        if self._liveness is None:
            return "" if self._manual_online else self._manual_reason
        latest = self._latest
        return _NO_FRAME_YET if latest is None else self._liveness(latest.stream_id)

    def set_online(self, online: bool, reason: str = "") -> None:
        """Mark the sender live or lost, for a hub without a liveness source.

        While offline, snapshots answer 503 with ``reason``; stream clients stay connected
        and get frames again as soon as :meth:`publish` is called (which sets online).

        Raises:
            RuntimeError: the hub has a liveness source (it is the one that says).
        """
        if self._liveness is not None:
            raise RuntimeError("set_online: this hub asks its liveness source")
        self._manual_online = online
        self._manual_reason = reason or ("online" if online else "sender lost")

    @property
    def subscribers(self) -> Iterator[Subscriber]:
        """The current subscribers, oldest first."""
        return iter(list(self._subscribers.values()))

    def __len__(self) -> int:
        return len(self._fanout)

    # -- publishing ------------------------------------------------------------------

    def publish(self, frame: Frame) -> Frame | None:
        """Make ``frame`` the latest and offer it to every subscriber.

        The JPEG first gets the standard Huffman tables inserted when it has none
        (:func:`mcastcam.jpeg.ensure_dht`; UVC webcams omit them, browsers need them).
        A JPEG too malformed for that (no SOI, no SOS) is counted in
        :attr:`frames_malformed` and dropped; this never raises for bad frame bytes.

        Returns:
            the frame as served (a new object only when a DHT was inserted), or ``None``
            if it was dropped.
        """
        jpeg = frame.jpeg
        try:
            fixed = ensure_dht(jpeg)  # the same object (no copy) when it has a DHT
        except SourceError as exc:
            self.frames_malformed += 1
            log.warning("dropping frame %d: %s", frame.frame_id, exc)
            return None
        if fixed is not jpeg:
            frame = dataclasses.replace(frame, jpeg=fixed)
        now = self.now()
        self._latest = frame
        self._manual_online = True
        self.frames_published += 1
        self._pieces_cache.clear()
        if self.on_publish is not None:
            self.on_publish(frame, now)
        subscribers = self._subscribers
        for slot in self._fanout.offer(frame, now):
            subscribers[id(slot)]._write(frame, now)
        waiter, self._newer = self._newer, None
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
        return frame

    async def wait_newer(
        self,
        after: Frame | None,
        timeout: float,  # noqa: ASYNC109 - the HTTP client's ?timeout=, capped by the caller
    ) -> Frame | None:
        """Wait for a frame other than ``after`` (by identity) to be published.

        Args:
            after: the frame the caller already has (usually :attr:`latest`); ``None``
                waits for any frame if there is none yet.
            timeout: the longest wait, seconds.

        Returns:
            the new latest frame, or ``None`` on timeout. Returns at once if the latest
            frame is already not ``after``.
        """
        latest = self._latest
        if latest is not None and latest is not after:
            return latest
        if self._newer is None or self._newer.done():
            self._newer = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(self._newer), timeout)
        except TimeoutError:
            return None

    def _pieces(self, encoder: PieceEncoder, frame: Frame) -> Sequence[Piece]:
        # One encoding per (encoder, frame): 200 HTTP clients share the same header bytes.
        key = id(encoder)
        cached = self._pieces_cache.get(key)
        if cached is not None and cached[0] is frame:
            return cached[1]
        pieces = encoder(frame)
        self._pieces_cache[key] = (frame, pieces)
        return pieces

    # -- subscribers -----------------------------------------------------------------

    def subscribe(
        self,
        transport: asyncio.WriteTransport,
        *,
        kind: Literal["http", "tcp", "publish", "record"],
        address: str,
        encoder: PieceEncoder,
        send_latest: bool = True,
        held: bool = False,
    ) -> Subscriber:
        """Add a client. ``encoder`` must be one long-lived function per wire format.

        Args:
            transport: the client's asyncio transport; frames are written to it directly.
            kind: ``"http"``, ``"tcp"`` or ``"publish"`` (shown in ``/status``).
            address: the peer, ``"host:port"``.
            encoder: frame → pieces to write (see :data:`PieceEncoder`).
            send_latest: send the latest frame as soon as the client starts, if there is
                one and the hub is online, so a new client does not wait for the next frame.
            held: the client counts at once, but frames wait in its slot until
                :meth:`start` (the shell writes something else first, e.g. HTTP headers).

        Raises:
            HubFullError: ``max_clients`` subscribers are already connected.
        """
        now = self.now()
        slot = self._fanout.add(now, held=held)
        sub = Subscriber(self, transport, slot, kind=kind, address=address, encoder=encoder)
        self._subscribers[id(slot)] = sub
        log.info("%s client %s connected (%d now)", kind, address, len(self._fanout))
        if not held:
            self._start(sub, send_latest, now)
        return sub

    def start(self, sub: Subscriber, *, send_latest: bool = True) -> None:
        """Let frames flow to a client subscribed with ``held=True``.

        It gets the frame that waited in its slot, else (``send_latest``) the latest frame
        if the hub is online.
        """
        sub._busy_event.clear()
        now = self.now()
        frame = sub.slot.drained(now)
        if frame is not None:
            sub._write(frame, now)
        else:
            self._start(sub, send_latest, now)

    def _start(self, sub: Subscriber, send_latest: bool, now: float) -> None:
        latest = self._latest
        if send_latest and latest is not None and self.online:
            frame = sub.slot.offer(latest, now)
            if frame is not None:
                sub._write(frame, now)

    def send_to(self, sub: Subscriber, frame: Frame) -> bool:
        """Write ``frame`` to ``sub`` alone, now, if its transport is idle (e.g. a placeholder).

        The frame does not become :attr:`latest`; it is never left pending in the slot (a
        busy or held client just does not get it), so it cannot count as skipped.

        Returns:
            whether it was written.
        """
        if sub.busy or sub.pending or sub.closed:
            return False
        now = self.now()
        if sub.slot.offer(frame, now) is None:
            return False
        sub._write(frame, now)
        return True

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove a client (idempotent); its counters go to the hub's closed totals."""
        sub._close()
        if self._fanout.remove(sub.slot):
            del self._subscribers[id(sub.slot)]
            log.info(
                "%s client %s left after %d frames (%d skipped); %d now",
                sub.kind,
                sub.address,
                sub.frames_sent,
                sub.frames_skipped,
                len(self._fanout),
            )

    def stats(self) -> dict[str, Any]:
        """``clients`` (one line per subscriber) and totals, JSON-ready, for ``/status``."""
        now = self.now()
        fanout = self._fanout
        clients = [sub.stats(now) for sub in self._subscribers.values()]
        reason = self.offline_reason
        return {
            "clients": clients,
            "clients_count": len(clients),
            "max_clients": fanout.max_clients,
            "clients_refused": fanout.clients_refused,
            "frames_published": self.frames_published,
            "frames_malformed": self.frames_malformed,
            "frames_sent_total": fanout.frames_sent_total,
            "frames_skipped_total": fanout.frames_skipped_total,
            "online": not reason,
            "offline_reason": reason,
        }
