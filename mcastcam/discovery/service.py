"""The sender's discovery shell: answer queries, broadcast announces.

Runs :class:`~mcastcam.protocol.discovery.Responder` on :class:`mcastcam.driver.Driver`
(docs/architecture.md): every datagram on the discovery port goes to ``receive_datagram``;
its answers are sent unicast to the querier; one timer, re-armed at ``get_timer()`` after
every input, sends the periodic broadcast announce to ``(iface.broadcast, port)``.

Sockets come from :mod:`mcastcam.net`: :func:`~mcastcam.net.open_broadcast_receiver` (bound to
the subnet broadcast address, so it gets broadcast queries, read by the driver) and
:func:`~mcastcam.net.open_broadcast_sender` (``SO_BROADCAST``, bound to the interface address:
announces and answers leave from there).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Sequence

from mcastcam import net
from mcastcam.driver import Driver
from mcastcam.errors import ConfigError
from mcastcam.protocol.codec import DiscoveryAnnounce
from mcastcam.protocol.config import DEFAULT_LOG_INTERVAL, DiscoveryConfig
from mcastcam.protocol.discovery import Address, Responder
from mcastcam.protocol.ratelimit import RateLimitedLog
from mcastcam.protocol.trust import DiscoveryAuth

__all__ = ["DiscoveryService"]

log = logging.getLogger(__name__)

_DROPS = "discovery dropped %(since)d datagram(s): %(reason)s (%(total)d in all)"


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
        self.config = DiscoveryConfig()
        self.send_errors = 0
        """Datagrams the kernel refused to send (firewall EPERM, ENETUNREACH, ...)."""
        self._driver: Driver | None = None
        self._recv_sock: socket.socket | None = None
        self._send_sock: socket.socket | None = None
        self._drops = RateLimitedLog(log, DEFAULT_LOG_INTERVAL, template=_DROPS)

    @property
    def port(self) -> int:
        """The discovery UDP port."""
        return self.config.port

    @classmethod
    async def start(
        cls,
        iface: net.Interface,
        announce: DiscoveryAnnounce | None,
        config: DiscoveryConfig | None = None,
        auth: DiscoveryAuth | None = None,
    ) -> DiscoveryService:
        """Listen on the discovery port (UDP) of ``iface`` and announce ``announce`` there.

        Args:
            iface: from :func:`mcastcam.net.resolve_interface`.
            announce: the stream description; a ``host`` of ``"0.0.0.0"`` is replaced by
                ``iface.address`` (a directory drops announces whose host is not their
                source address).
            config: port, announce interval (seconds; the first announce goes out now, 0
                disables them, queries are still answered) and the answers' token bucket;
                default :class:`~mcastcam.protocol.config.DiscoveryConfig`.
            auth: with a key: answer only tagged fresh queries, tag every announce (§9).

        Returns:
            A running service, or a disabled one (logged at INFO) when ``iface`` has no
            broadcast address.

        Raises:
            ConfigError: ``announce`` is ``None``.
            LocalProtocolError: ``announce`` does not fit the wire format.
            NetworkSetupError: a socket could not be bound (``errno`` kept, with a hint).
        """
        if announce is None:
            raise ConfigError("discovery needs the stream's announce")
        cfg = config if config is not None else DiscoveryConfig()
        self = cls()
        self.iface = iface
        self.config = cfg
        if iface.broadcast is None:
            log.info("discovery off: %s has no broadcast address", iface.name)
            return self
        if announce.host == "0.0.0.0":
            announce = dataclasses.replace(announce, host=iface.address)
        network = ipaddress.IPv4Network(f"{iface.address}/{iface.netmask}", strict=False)
        self.responder = Responder(
            announce,
            rate=cfg.answer_rate,
            burst=cfg.answer_burst,
            announce_interval=cfg.announce_interval,
            network=str(network),
            auth=auth,
        )
        self._recv_sock = net.open_broadcast_receiver(cfg.port, iface)
        try:
            self._send_sock = net.open_broadcast_sender(iface)
        except BaseException:
            self.close()
            raise
        self._driver = Driver(
            self.responder, self._broadcast, sock=self._recv_sock, on_result=self._answer
        )
        self.enabled = True
        log.info(
            "discovery on %s: answering on %s:%d, announcing every %s",
            iface.name, iface.broadcast, cfg.port,
            f"{cfg.announce_interval:g} s" if cfg.announce_interval > 0
            else "never (interval 0)",
        )  # fmt: skip
        self._driver.start()
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
        if self._driver is not None:
            self._driver.transmit()

    def close(self) -> None:
        """Stop the timer and close both sockets; safe to call twice."""
        self.enabled = False
        if self._driver is not None:
            self._driver.close()
        for sock in (self._recv_sock, self._send_sock):
            if sock is not None:
                sock.close()
        self._recv_sock = self._send_sock = None

    def status_text(self) -> str:
        """One line of counters: queries, answered, rate-limited, announces, garbage.

        ``rate-limited`` says how many of those its querier's own budget refused.
        """
        r = self.responder
        if r is None:
            return "discovery off"
        st = r.stats
        return (
            f"discovery: {st.queries} queries, {st.answered} answered, "
            f"{st.rate_limited} rate-limited ({st.querier_limited} by querier), "
            f"{st.announces} announces, "
            f"{sum(st.garbage.values())} garbage, {sum(st.rejected.values())} refused, "
            f"{self.send_errors} send errors"
        )

    # ------------------------------------------------------------------ driving

    def _sendto(self, data: bytes, dest: Address) -> None:
        if self._send_sock is None:
            return
        try:
            self._send_sock.sendto(data, dest)
        except OSError as exc:  # firewall EPERM, full buffer: discovery is best effort
            self.send_errors += 1
            log.debug("discovery socket error: %s", exc)

    def _broadcast(self, datagrams: Sequence[bytes]) -> None:
        """The responder's periodic announces, to the subnet broadcast address."""
        assert self.iface is not None and self.iface.broadcast is not None
        for data in datagrams:
            self._sendto(data, (self.iface.broadcast, self.config.port))

    def _answer(self, answers: list[tuple[bytes, Address]]) -> None:
        """A datagram was taken: send its answers, log drops (rate-limited)."""
        for data, dest in answers:
            self._sendto(data, dest)
        assert self.responder is not None and self._driver is not None
        st, now = self.responder.stats, self._driver.now()
        self._drops.observe("rate_limited", st.rate_limited - st.querier_limited, now)
        self._drops.observe("querier_limited", st.querier_limited, now)
        self._drops.observe("bad_source", st.bad_source, now)
        for reason, n in st.garbage.items():
            self._drops.observe(reason, n, now)
        for reason, n in st.rejected.items():
            self._drops.observe(f"refused query ({reason})", n, now)
