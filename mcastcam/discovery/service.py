"""The sender's discovery shell: answer queries, broadcast announces (asyncio).

Drives :class:`~mcastcam.protocol.discovery.Responder` the aioquic way (DESIGN.md §1): every
datagram on the discovery port goes to ``receive_datagram``; the answers are sent unicast to
the querier; one timer, re-armed at ``get_timer()`` after every input, sends the periodic
broadcast announce to ``(iface.broadcast, port)``.

Sockets come from :mod:`mcastcam.net`: :func:`~mcastcam.net.open_broadcast_receiver` (bound to
the subnet broadcast address, so it gets broadcast queries) and
:func:`~mcastcam.net.open_broadcast_sender` (``SO_BROADCAST``, bound to the interface address:
announces and answers leave from there). Both are wrapped in asyncio datagram transports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from mcastcam import net
from mcastcam.errors import ConfigError
from mcastcam.looptimer import LoopTimer
from mcastcam.protocol.codec import DiscoveryAnnounce
from mcastcam.protocol.discovery import DEFAULT_ANNOUNCE_INTERVAL, DEFAULT_PORT, Address, Responder

__all__ = ["DiscoveryService"]

log = logging.getLogger(__name__)

LOG_INTERVAL = 60.0
"""Seconds between two log lines about dropped discovery datagrams (garbage, rate limit)."""


class _Protocol(asyncio.DatagramProtocol):
    """Hands datagrams to a callback and counts send errors (EPERM from a firewall, ...)."""

    def __init__(self, on_datagram: Callable[[bytes, Address], None] | None = None) -> None:
        self.on_datagram = on_datagram
        self.errors = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.on_datagram is not None:
            self.on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.errors += 1
        log.debug("discovery socket error: %s", exc)


class DiscoveryService:
    """A running discovery responder for one sender; create it with :meth:`start`.

    ``enabled`` is ``False`` when the interface has no broadcast address (``lo``): then
    nothing is listened on or sent, and :meth:`update`/:meth:`close` do nothing.
    ``responder`` is the pure core (its ``stats`` are the counters), ``None`` when disabled.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.responder: Responder | None = None
        self.iface: net.Interface | None = None
        self.port = DEFAULT_PORT
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listen: asyncio.DatagramTransport | None = None
        self._send: asyncio.DatagramTransport | None = None
        self._send_proto: _Protocol | None = None
        self._timer: LoopTimer | None = None
        self._logged_at = -LOG_INTERVAL
        self._logged_drops = 0

    @classmethod
    async def start(
        cls,
        iface: net.Interface,
        port: int = DEFAULT_PORT,
        announce: DiscoveryAnnounce | None = None,
        announce_interval: float = DEFAULT_ANNOUNCE_INTERVAL,
        *,
        rate: float = 5.0,
        burst: int = 5,
    ) -> DiscoveryService:
        """Listen on ``port`` (UDP) of ``iface`` and announce ``announce`` there.

        Args:
            iface: from :func:`mcastcam.net.resolve_interface`.
            port: the discovery port (``--discovery-port``, default 8990).
            announce: the stream description; a ``host`` of ``"0.0.0.0"`` is replaced by
                ``iface.address`` (a directory drops announces whose host is not their
                source address).
            announce_interval: seconds between broadcast announces (the first goes out
                now); 0 disables them (queries are still answered).
            rate: answers per second the token bucket refills.
            burst: answers the token bucket holds (given at once after a silence).

        Returns:
            A running service, or a disabled one (logged at INFO) when ``iface`` has no
            broadcast address.

        Raises:
            ConfigError: bad ``port``, ``rate``, ``burst`` or ``announce_interval``, or
                ``announce`` is ``None``.
            LocalProtocolError: ``announce`` does not fit the wire format.
            NetworkSetupError: a socket could not be bound (``errno`` kept, with a hint).
        """
        if announce is None:
            raise ConfigError("discovery needs the stream's announce")
        self = cls()
        self.iface = iface
        self.port = port
        if iface.broadcast is None:
            log.info("discovery off: %s has no broadcast address", iface.name)
            return self
        if not 1 <= port <= 65535:
            raise ConfigError(f"bad discovery port {port}: expected 1..65535")
        if announce.host == "0.0.0.0":
            announce = dataclasses.replace(announce, host=iface.address)
        network = ipaddress.IPv4Network(f"{iface.address}/{iface.netmask}", strict=False)
        self.responder = Responder(
            announce,
            rate=rate,
            burst=burst,
            announce_interval=announce_interval,
            network=str(network),
        )
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._timer = LoopTimer(loop, self._on_timer)
        recv_sock = net.open_broadcast_receiver(port, iface)
        try:
            send_sock = net.open_broadcast_sender(iface)
        except BaseException:
            recv_sock.close()
            raise
        try:
            self._send_proto = _Protocol()
            send_proto = self._send_proto
            self._send, _ = await loop.create_datagram_endpoint(lambda: send_proto, sock=send_sock)
        except BaseException:
            send_sock.close()
            recv_sock.close()
            raise
        try:
            self._listen, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self._on_datagram), sock=recv_sock
            )
        except BaseException:
            recv_sock.close()
            self.close()
            raise
        self.enabled = True
        log.info(
            "discovery on %s: answering on %s:%d, announcing every %s",
            iface.name, iface.broadcast, port,
            f"{announce_interval:g} s" if announce_interval > 0 else "never (interval 0)",
        )
        self._transmit()
        return self

    # ------------------------------------------------------------------ API

    def update(
        self, *, width: int | None = None, height: int | None = None, fps: float | None = None
    ) -> None:
        """The stream changed size (pixels) or rate (frames/s); announce it at once.

        Raises:
            LocalProtocolError: the values do not fit the wire format.
        """
        if self.responder is None:
            return
        self.responder.update(width=width, height=height, fps=fps)
        self._transmit()

    def close(self) -> None:
        """Stop the timer and close both sockets; safe to call twice."""
        self.enabled = False
        if self._timer is not None:
            self._timer.cancel()
        for transport in (self._listen, self._send):
            if transport is not None:
                transport.close()
        self._listen = self._send = None

    def status_text(self) -> str:
        """One line of counters: queries, answered, rate-limited, announces, garbage."""
        r = self.responder
        if r is None:
            return "discovery off"
        st = r.stats
        return (
            f"discovery: {st.queries} queries, {st.answered} answered, "
            f"{st.rate_limited} rate-limited, {st.announces} announces, "
            f"{sum(st.garbage.values())} garbage, {self.send_errors} send errors"
        )

    @property
    def send_errors(self) -> int:
        """Datagrams the kernel refused to send (firewall EPERM, ENETUNREACH, ...)."""
        return self._send_proto.errors if self._send_proto is not None else 0

    # ------------------------------------------------------------------ driving

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if self.responder is None or self._loop is None or self._send is None:
            return
        now = self._loop.time()
        for answer, dest in self.responder.receive_datagram(data, addr, now):
            self._send.sendto(answer, dest)
        self._log_drops(now)
        self._transmit()

    def _transmit(self) -> None:
        if self.responder is None or self._loop is None or self._send is None:
            return
        assert self.iface is not None and self.iface.broadcast is not None
        for data in self.responder.datagrams_to_send(self._loop.time()):
            self._send.sendto(data, (self.iface.broadcast, self.port))
        self._arm_timer()

    def _arm_timer(self) -> None:
        assert self.responder is not None and self._timer is not None
        self._timer.arm(self.responder.get_timer())

    def _on_timer(self) -> None:
        if self.responder is None or self._loop is None or self._send is None:
            return
        self.responder.handle_timer(self._loop.time())
        self._transmit()

    def _log_drops(self, now: float) -> None:
        assert self.responder is not None
        st = self.responder.stats
        drops = st.rate_limited + st.bad_source + sum(st.garbage.values())
        if drops > self._logged_drops and now - self._logged_at >= LOG_INTERVAL:
            self._logged_at = now
            self._logged_drops = drops
            log.warning(
                "discovery dropped %d datagrams so far (rate-limited %d, bad source %d, "
                "garbage %s)",
                drops, st.rate_limited, st.bad_source, dict(st.garbage) or 0,
            )
