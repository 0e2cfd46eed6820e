"""The relay's shell: :class:`~mcastcam.protocol.relay.RelayCore` on its sockets.

One :class:`mcastcam.driver.Driver` per socket (near: the joined group, the unicast socket
towards the senders, the tunnel; far: the multicast socket, the tunnel), all on one core:
each driver hands the core what its socket reads (tagged with the socket's
:class:`~mcastcam.protocol.relay.Port`) and :meth:`RelayApp.send` routes what the core gives
back to the socket it names. A full socket (EAGAIN/ENOBUFS) drops the datagram (counted:
the core's queues are the buffer); other send errors (an ICMP error from an unreachable peer
surfaces as ``ECONNREFUSED``) are counted and never fatal.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from typing import Any

from mcastcam.driver import Driver
from mcastcam.protocol.relay import Outgoing, PeerDown, PeerUp, Port, RelayCore

log = logging.getLogger("mcastcam.relay")

_FULL = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


def _hp(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


class _PortCore:
    """What a :class:`Driver` needs, for the datagrams of one socket of the shared core."""

    def __init__(self, core: RelayCore, port: Port) -> None:
        self.core = core
        self.port = port

    def receive_datagram(self, data: memoryview, addr: tuple[str, int], now: float) -> None:
        self.core.receive(self.port, data, addr, now)

    def datagrams_to_send(self, now: float) -> list[Outgoing]:
        return self.core.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    def next_event(self) -> PeerUp | PeerDown | None:
        return self.core.next_event()


class RelayApp:
    """One running relay.

    Args:
        core: the pure core.
        sockets: a non-blocking UDP socket per :class:`Port` the role uses.
        describe: what the relay does, for the log (``"near: 239.255.0.1:8989 on eth0"``).
    """

    def __init__(self, core: RelayCore, sockets: dict[Port, socket.socket], describe: str) -> None:
        self.core = core
        self.sockets = sockets
        self.describe = describe
        self.send_full = 0
        self.send_errors: dict[str, int] = {}
        # every driver re-arms its timer at the core's deadline; handle_timer is idempotent
        self.drivers = [
            Driver(_PortCore(core, port), self.send, sock=sock, on_event=self.on_event)
            for port, sock in sockets.items()
        ]

    def start(self) -> None:
        """Start reading every socket; the first ping leaves now."""
        peer = _hp(self.core.cfg.peer)
        log.info("relay %s; peer %s: waiting for it to answer", self.describe, peer)
        for driver in self.drivers:
            driver.start()

    def close(self) -> None:
        """Stop reading and cancel the timers; the caller closes the sockets."""
        for driver in self.drivers:
            driver.close()

    def send(self, items: Sequence[Any]) -> None:
        """Send each :class:`Outgoing` from the socket it names."""
        for item in items:
            try:
                self.sockets[item.port].sendto(item.data, item.addr)
            except OSError as exc:
                if exc.errno in _FULL:
                    self.send_full += 1
                else:
                    key = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                    self.send_errors[key] = self.send_errors.get(key, 0) + 1
                    log.debug("send to %s:%d: %s", *item.addr, exc)

    def on_event(self, ev: Any) -> None:
        """One log line per state change of the peer."""
        peer = _hp(self.core.cfg.peer)
        if isinstance(ev, PeerUp):
            log.info("peer %s answers (round trip %.1f ms): forwarding%s", peer, ev.rtt * 1e3,
                     "" if ev.first else " again")  # fmt: skip
        elif isinstance(ev, PeerDown):
            what = "never answered" if ev.never_heard else "stopped answering"
            log.warning("peer %s %s (silent for %.1f s): not forwarding; pinging it every "
                        "2 s doubling to %.0f s until it answers", peer, what, ev.silent_for,
                        ev.retry_max)  # fmt: skip

    def status(self) -> dict[str, Any]:
        """The relay's state and counters (``--status-json``)."""
        core = self.core
        return {
            "role": core.cfg.role.value,
            "peer": _hp(core.cfg.peer),
            "auth": bool(core.cfg.key_ids),
            "state": core.state,
            "rtt_ms": None if core.rtt is None else round(core.rtt * 1e3, 3),
            "state_changes": core.state_changes,
            "pings_sent": core.pings_sent,
            "pongs_received": core.pongs_received,
            "forwarded": dict(core.forwarded),
            "forwarded_bytes": dict(core.forwarded_bytes),
            "dropped": dict(core.dropped),
            "queued": core.queued(),
            "senders": {str(k): _hp(v) for k, v in core.senders().items()},
            "send_full": self.send_full,
            "send_errors": dict(self.send_errors),
            "socket_errors": sum(d.socket_errors for d in self.drivers),
        }
