"""Frame fan-out: one latest frame, many HTTP/TCP clients, no queues (DESIGN.md §3).

The receiver publishes each complete :class:`~mcastcam.protocol.frame.ServedFrame` to a
:class:`FrameHub`. The hub writes it straight to every subscriber's asyncio transport, the
same frame object to all of them (µStreamer's model, ``src/ustreamer/http/server.c``):

* a subscriber whose previous frame is still in the kernel/transport buffer is *busy*; it
  keeps **one** pending slot, holding only the newest frame; a frame replaced in that slot
  was *skipped* for that client (counted);
* when the transport's buffer drains the shell calls :meth:`Subscriber.drained`, which
  sends the pending frame at once;
* a stalled client never delays the others: publishing costs it one slot assignment.

The transports get ``set_write_buffer_limits(high=0, low=0)`` so that "drained" means the
transport's buffer is empty: asyncio then calls ``pause_writing()`` as soon as a write
leaves bytes unsent and ``resume_writing()`` when everything has reached the kernel.

Everything runs on the event loop thread; times are ``loop.time()`` seconds (monotonic).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from mcastcam.errors import McastcamError, SourceError
from mcastcam.jpeg import ensure_dht
from mcastcam.protocol.frame import ServedFrame

__all__ = [
    "FPS_WINDOW_INTERVAL",
    "FrameHub",
    "HubFullError",
    "Piece",
    "PieceEncoder",
    "Subscriber",
]

log = logging.getLogger(__name__)

Piece = bytes | memoryview
#: Turns a frame into the pieces written for it, in order (e.g. part header, JPEG, trailer).
#: Pieces are written one ``transport.write()`` each: never joined, never copied.
PieceEncoder = Callable[[ServedFrame], Sequence[Piece]]

#: Per-client delivered frame rate is measured over this many seconds.
FPS_WINDOW_INTERVAL = 2.0
_MAX_FPS_SAMPLES = 1024


class HubFullError(McastcamError):
    """The hub already has ``max_clients`` subscribers; the new one is refused."""


class Subscriber:
    """One HTTP or TCP client of the hub: a transport and a one-frame pending slot.

    Create with :meth:`FrameHub.subscribe`. The shell owning the transport calls
    :meth:`drained` when its write buffer is empty again (``resume_writing``) and
    :meth:`FrameHub.unsubscribe` when the connection ends.

    Attributes:
        address: the peer as ``"host:port"``.
        kind: ``"http"`` or ``"tcp"``.
        connected_at: ``loop.time()`` when it subscribed (monotonic seconds).
        connected_since: wall-clock time when it subscribed (Unix seconds).
        frames_sent: frames whose pieces were all handed to the transport.
        frames_skipped: frames this client never got because it was still busy.
        bytes_sent: bytes handed to the transport for frames (headers included).
        busy: a previous write has not drained yet.
    """

    def __init__(
        self,
        hub: FrameHub,
        transport: asyncio.WriteTransport,
        *,
        kind: Literal["http", "tcp"],
        address: str,
        encoder: PieceEncoder,
        now: float,
    ) -> None:
        self._hub = hub
        self._transport = transport
        self._encoder = encoder
        self.kind = kind
        self.address = address
        self.connected_at = now
        self.connected_since = time.time()
        self.frames_sent = 0
        self.frames_skipped = 0
        self.bytes_sent = 0
        self.busy = False
        self.closed = False
        self._pending: ServedFrame | None = None
        self._sent_times: collections.deque[float] = collections.deque(maxlen=_MAX_FPS_SAMPLES)
        self._busy_event = asyncio.Event()
        transport.set_write_buffer_limits(high=0, low=0)

    # -- called by the hub -------------------------------------------------------------

    def _offer(self, frame: ServedFrame, now: float) -> None:
        if self.closed:
            return
        if self.busy:
            if self._pending is not None:
                self.frames_skipped += 1
            self._pending = frame
            return
        self._send(frame, now)

    def _send(self, frame: ServedFrame, now: float) -> None:
        transport = self._transport
        if transport.is_closing():
            self.closed = True
            self._busy_event.set()
            return
        pieces = self._hub._pieces(self._encoder, frame)
        for piece in pieces:
            transport.write(piece)
            self.bytes_sent += len(piece)
        self.frames_sent += 1
        self._sent_times.append(now)
        if transport.get_write_buffer_size() > 0:
            self.busy = True
            self._busy_event.set()

    # -- called by the shell -----------------------------------------------------------

    def drained(self) -> None:
        """The transport's write buffer is empty: send the pending frame if there is one."""
        self.busy = False
        self._busy_event.clear()
        frame, self._pending = self._pending, None
        if frame is not None and not self.closed:
            self._send(frame, self._hub.now())

    async def wait_busy(self) -> None:
        """Return once a write has left bytes unsent (or the subscriber was closed)."""
        await self._busy_event.wait()

    @property
    def pending(self) -> bool:
        """A frame waits in this client's slot for its transport to drain."""
        return self._pending is not None

    def fps(self, now: float) -> float:
        """Frames delivered per second over the last :data:`FPS_WINDOW_INTERVAL` seconds."""
        horizon = now - FPS_WINDOW_INTERVAL
        count = 0
        for t in reversed(self._sent_times):
            if t <= horizon:
                break
            count += 1
        window = min(FPS_WINDOW_INTERVAL, max(now - self.connected_at, 1e-3))
        return count / window

    def stats(self, now: float) -> dict[str, Any]:
        """Return this client's line in ``/status``: JSON-ready, times in seconds."""
        return {
            "address": self.address,
            "kind": self.kind,
            "fps": round(self.fps(now), 2),
            "frames_sent": self.frames_sent,
            "frames_skipped": self.frames_skipped,
            "bytes_sent": self.bytes_sent,
            "since": self.connected_since,
            "connected_for": round(now - self.connected_at, 3),
            "busy": self.busy,
        }


class FrameHub:
    """The latest complete frame and the clients it goes to.

    Args:
        max_clients: subscribers allowed at once (HTTP streams and TCP clients together);
            one more raises :class:`HubFullError`.

    Use it on the event loop thread only.
    """

    def __init__(self, *, max_clients: int = 1000) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.max_clients = max_clients
        self._subscribers: dict[int, Subscriber] = {}
        self._latest: ServedFrame | None = None
        self._online = False
        self._offline_reason = "no frame received yet"
        self._newer: asyncio.Future[ServedFrame] | None = None
        self._pieces_cache: dict[int, tuple[ServedFrame, Sequence[Piece]]] = {}
        self.frames_published = 0
        self.frames_malformed = 0
        self.clients_refused = 0
        self.frames_sent_closed = 0
        self.frames_skipped_closed = 0

    # -- state ----------------------------------------------------------------------

    @staticmethod
    def now() -> float:
        """The hub's clock: ``loop.time()`` of the running loop (monotonic seconds)."""
        return asyncio.get_running_loop().time()

    @property
    def latest(self) -> ServedFrame | None:
        """The newest published frame, or ``None`` before the first one."""
        return self._latest

    @property
    def online(self) -> bool:
        """Whether the sender is live (set by :meth:`publish` and :meth:`set_online`)."""
        return self._online

    @property
    def offline_reason(self) -> str:
        """Why the hub is offline (one line), or ``""`` when online."""
        return "" if self._online else self._offline_reason

    def set_online(self, online: bool, reason: str = "") -> None:
        """Mark the sender live or lost.

        While offline, snapshots answer 503 with ``reason``; stream clients stay connected
        and get frames again as soon as :meth:`publish` is called (which sets online).
        """
        self._online = online
        self._offline_reason = reason or ("online" if online else "sender lost")

    @property
    def subscribers(self) -> Iterator[Subscriber]:
        """The current subscribers, oldest first."""
        return iter(list(self._subscribers.values()))

    def __len__(self) -> int:
        return len(self._subscribers)

    # -- publishing ------------------------------------------------------------------

    def publish(self, frame: ServedFrame) -> ServedFrame | None:
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
        self._online = True
        self.frames_published += 1
        self._pieces_cache.clear()
        for sub in list(self._subscribers.values()):
            sub._offer(frame, now)
        waiter, self._newer = self._newer, None
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
        return frame

    async def wait_newer(
        self,
        after: ServedFrame | None,
        timeout: float,  # noqa: ASYNC109 - the HTTP client's ?timeout=, capped by the caller
    ) -> ServedFrame | None:
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

    def _pieces(self, encoder: PieceEncoder, frame: ServedFrame) -> Sequence[Piece]:
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
        kind: Literal["http", "tcp"],
        address: str,
        encoder: PieceEncoder,
        send_latest: bool = True,
    ) -> Subscriber:
        """Add a client. ``encoder`` must be one long-lived function per wire format.

        Args:
            transport: the client's asyncio transport; frames are written to it directly.
            kind: ``"http"`` or ``"tcp"`` (shown in ``/status``).
            address: the peer, ``"host:port"``.
            encoder: frame → pieces to write (see :data:`PieceEncoder`).
            send_latest: send the latest frame at once, if there is one and the hub is
                online, so a new client does not wait for the next frame.

        Raises:
            HubFullError: ``max_clients`` subscribers are already connected.
        """
        if len(self._subscribers) >= self.max_clients:
            self.clients_refused += 1
            raise HubFullError(
                f"too many clients: {len(self._subscribers)} connected, max_clients="
                f"{self.max_clients}"
            )
        sub = Subscriber(
            self, transport, kind=kind, address=address, encoder=encoder, now=self.now()
        )
        self._subscribers[id(sub)] = sub
        log.info("%s client %s connected (%d now)", kind, address, len(self._subscribers))
        if send_latest and self._latest is not None and self._online:
            sub._offer(self._latest, self.now())
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove a client (idempotent); its counters go to the hub's closed totals."""
        sub.closed = True
        sub._pending = None
        sub._busy_event.set()
        if self._subscribers.pop(id(sub), None) is not None:
            self.frames_sent_closed += sub.frames_sent
            self.frames_skipped_closed += sub.frames_skipped
            log.info(
                "%s client %s left after %d frames (%d skipped); %d now",
                sub.kind,
                sub.address,
                sub.frames_sent,
                sub.frames_skipped,
                len(self._subscribers),
            )

    def stats(self) -> dict[str, Any]:
        """``clients`` (one line per subscriber) and totals, JSON-ready, for ``/status``."""
        now = self.now()
        clients = [sub.stats(now) for sub in self._subscribers.values()]
        return {
            "clients": clients,
            "clients_count": len(clients),
            "max_clients": self.max_clients,
            "clients_refused": self.clients_refused,
            "frames_published": self.frames_published,
            "frames_malformed": self.frames_malformed,
            "frames_sent_total": self.frames_sent_closed + sum(c["frames_sent"] for c in clients),
            "frames_skipped_total": (
                self.frames_skipped_closed + sum(c["frames_skipped"] for c in clients)
            ),
            "online": self._online,
            "offline_reason": self.offline_reason,
        }
