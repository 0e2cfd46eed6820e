"""One asyncio driver for every sans-IO core, like aioquic's ``asyncio/protocol.py``.

See docs/architecture.md.

The sender session, the receiver session and the discovery responder all have the same verbs;
:class:`Driver` runs any of them on the running loop:

* **datagrams in**: ``loop.add_reader`` on a non-blocking UDP socket; each wake-up reads at
  most ``batch`` datagrams with ``recvfrom_into`` into one reused buffer and hands each to
  ``core.receive_datagram(view, addr, now)`` (the core copies what it keeps); with ``gro``
  (a socket with UDP GRO, :func:`mcastcam.net.enable_gro`) it reads with ``recvmsg_into``
  and cuts each coalesced buffer at the segment size of its ``UDP_GRO`` control message —
  or, for a core with ``receive_segments(view, seg, addr, now)`` (the receiver session),
  hands it the whole buffer and its segment size in one call;
* **events out**: after every datagram (every coalesced buffer given to ``receive_segments``)
  and every timer, ``core.next_event()`` is drained to ``on_event`` (cores without events:
  nothing);
* **datagrams out**: :meth:`Driver.transmit` calls ``core.datagrams_to_send(now)`` and gives
  the list to the shell's ``send`` (which owns the sockets, destinations and full-buffer
  handling), then re-arms **one** timer at ``core.get_timer()``;
* **timer**: when the deadline is reached, ``core.handle_timer(now)`` then :meth:`transmit`.

``now`` is always ``loop.time()`` (monotonic seconds).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mcastcam.net import gro_segment_size

__all__ = ["BATCH", "MAX_DATAGRAM", "Core", "Driver", "LoopTimer"]

log = logging.getLogger(__name__)

BATCH = 64
"""Datagrams read per wake-up at most, so timers, sending and HTTP clients get their turn."""
MAX_DATAGRAM = 65535
"""Bytes of the reused receive buffer (the largest UDP payload)."""

Address = tuple[str, int]

_GRO_ANCILLARY = socket.CMSG_SPACE(4)  # UDP_GRO's control message: the segment size, int


class Core(Protocol):
    """What :class:`Driver` needs of a sans-IO core (``next_event`` is optional)."""

    def receive_datagram(self, data: memoryview, addr: Address, now: float) -> Any:
        """Take one datagram (a view of the driver's buffer) from ``addr`` at ``now``."""

    def datagrams_to_send(self, now: float) -> Sequence[Any]:
        """What may leave now; the shell's ``send`` knows its shape."""

    def get_timer(self) -> float | None:
        """The next deadline (monotonic seconds) or ``None``."""

    def handle_timer(self, now: float) -> None:
        """The deadline was reached."""


class LoopTimer:
    """A re-armable ``loop.call_at`` handle, kept at a core's next deadline.

    Args:
        loop: the running event loop (deadlines are on its ``loop.time()`` clock, seconds).
        callback: called with no arguments when the armed deadline is reached.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def arm(self, at: float | None) -> None:
        """Fire at ``at`` (monotonic seconds); ``None`` disarms. Same deadline: no change."""
        if at == self._at and (at is None or self._handle is not None):
            return
        self.cancel()
        self._at = at
        if at is not None:
            self._handle = self._loop.call_at(at, self._fire)

    def cancel(self) -> None:
        """Disarm."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = None

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        self._callback()


class Driver:
    """Runs one sans-IO core on the running loop.

    Args:
        core: the sans-IO core (:class:`Core`).
        send: given every non-empty list ``core.datagrams_to_send(now)`` returns; it sends
            them (and keeps what a full socket refused, setting :attr:`paused`).
        sock: a non-blocking UDP socket to read datagrams from (``None``: none are read).
        on_event: given every event ``core.next_event()`` yields.
        on_result: given what ``core.receive_datagram`` returns when it is not ``None``
            (e.g. the discovery responder's answers).
        after_transmit: called after every :meth:`transmit` (e.g. to track idleness).
        batch: datagrams read per wake-up at most.
        max_datagram: receive buffer size, bytes.
        gro: ``sock`` has UDP GRO on: read with ``recvmsg_into`` and split coalesced buffers
            (settable before :meth:`start`).

    Attributes:
        paused: while ``True``, :meth:`transmit` does not ask the core for datagrams (the
            shell has a backlog for a full socket); the timer is still re-armed.
        socket_errors: ``OSError`` s reading the socket (ICMP errors surface there).
        gro_buffers: reads (with ``gro``) that returned more than one datagram.
        truncated: reads cut short by a too small buffer (``MSG_TRUNC``); the rest is lost.
    """

    def __init__(
        self,
        core: Core,
        send: Callable[[Sequence[Any]], None],
        *,
        sock: socket.socket | None = None,
        on_event: Callable[[Any], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        after_transmit: Callable[[], None] | None = None,
        batch: int = BATCH,
        max_datagram: int = MAX_DATAGRAM,
        gro: bool = False,
    ) -> None:
        self.core = core
        self.sock = sock
        self.gro = gro
        self.paused = False
        self.socket_errors = 0
        self.gro_buffers = 0
        self.truncated = 0
        self._send = send
        self._on_event = on_event
        self._on_result = on_result
        self._after_transmit = after_transmit
        self._next_event: Callable[[], Any] | None = getattr(core, "next_event", None)
        self._batch = batch
        self._buffer = bytearray(max_datagram)
        self._loop = asyncio.get_running_loop()
        self._timer = LoopTimer(self._loop, self._on_timer)
        self._reading = False

    def now(self) -> float:
        """``loop.time()``: the clock every core call gets, monotonic seconds."""
        return self._loop.time()

    def start(self) -> None:
        """Start reading ``sock`` (if any) and send what the core has now."""
        if self.sock is not None and not self._reading:
            reader = self._on_readable_gro if self.gro else self._on_readable
            self._loop.add_reader(self.sock.fileno(), reader)
            self._reading = True
        self.transmit()

    def close(self) -> None:
        """Stop reading and cancel the timer; idempotent. The caller closes the socket."""
        self._timer.cancel()
        if self.sock is not None and self._reading:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False

    def transmit(self) -> None:
        """Drain events, send what the core allows now, re-arm the timer at its deadline.

        Call it after every input the shell gives the core itself (e.g. a captured frame).
        """
        self.drain()
        if not self.paused:
            out = self.core.datagrams_to_send(self._loop.time())
            if out:
                self._send(out)
            self.drain()
        self._timer.arm(self.core.get_timer())
        if self._after_transmit is not None:
            self._after_transmit()

    def drain(self) -> None:
        """Hand every queued event to ``on_event``."""
        next_event, on_event = self._next_event, self._on_event
        if next_event is None:
            return
        while (ev := next_event()) is not None:
            if on_event is not None:
                on_event(ev)

    def _on_readable(self) -> None:
        sock, buf = self.sock, self._buffer
        if sock is None:
            return
        view = memoryview(buf)
        receive, on_result = self.core.receive_datagram, self._on_result
        for _ in range(self._batch):
            try:
                size, addr = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._socket_error(exc)
                break
            result = receive(view[:size], addr, self._loop.time())  # AF_INET: (str, int)
            if result is not None and on_result is not None:
                on_result(result)
            self.drain()
        self.transmit()

    def _on_readable_gro(self) -> None:
        """Like :meth:`_on_readable`, for a socket with UDP GRO (``batch`` counts datagrams)."""
        sock, buf = self.sock, self._buffer
        if sock is None:
            return
        view = memoryview(buf)
        receive, on_result, drain = self.core.receive_datagram, self._on_result, self.drain
        segments = getattr(self.core, "receive_segments", None)
        done, batch = 0, self._batch
        while done < batch:
            try:
                size, ancdata, flags, addr = sock.recvmsg_into([buf], _GRO_ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._socket_error(exc)
                break
            if flags & socket.MSG_TRUNC:
                self.truncated += 1
            seg = gro_segment_size(ancdata) if ancdata else 0
            if 0 < seg < size:
                self.gro_buffers += 1
            else:  # one datagram (possibly empty)
                seg = max(size, 1)
            now = self._loop.time()
            if segments is not None:  # one call per buffer: the core loops over its datagrams
                segments(view[:size], seg, addr, now)
                drain()
                done += max(1, -(-size // seg))
                continue
            for start in range(0, max(size, 1), seg):
                result = receive(view[start : min(start + seg, size)], addr, now)
                if result is not None and on_result is not None:
                    on_result(result)
                drain()
                done += 1
        self.transmit()

    def _socket_error(self, exc: OSError) -> None:
        """ICMP errors (port unreachable ...) surface on reads: counted, never fatal."""
        self.socket_errors += 1
        log.debug("socket error: %s", exc)

    def _on_timer(self) -> None:
        self.core.handle_timer(self._loop.time())
        self.transmit()
