"""The querier's discovery shell: broadcast a query, collect the announces (asyncio).

:func:`discover` is a plain coroutine, so an asyncio program (``mcastcam-recv`` without
``--group``) awaits it directly. The socket is :func:`mcastcam.net.open_broadcast_sender`
(``SO_BROADCAST``, bound to the interface address): the query goes to
``(iface.broadcast, port)`` and the senders answer unicast to that socket. Answers go through
the pure :class:`~mcastcam.protocol.discovery.Directory` (forged and garbage datagrams counted
and dropped there). Every query copy carries its own random ``query_nonce``
(``secrets.randbits(64)``); with a key (``auth``) the queries are tagged and only tagged
answers echoing one of those nonces count as answers (§9).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from typing import Any

from mcastcam import net
from mcastcam.errors import ConfigError, LocalProtocolError
from mcastcam.protocol import codec
from mcastcam.protocol.codec import DiscoveryQuery
from mcastcam.protocol.discovery import DEFAULT_PORT, Directory, Found
from mcastcam.protocol.trust import DiscoveryAuth

__all__ = ["QUERY_SENDS", "discover"]

log = logging.getLogger(__name__)

QUERY_SENDS = 3
"""A query is sent this many times, spread over the timeout, in case one is lost."""


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, directory: Directory, loop: asyncio.AbstractEventLoop,
                 max_found: int | None) -> None:
        self.directory = directory
        self.loop = loop
        self.max_found = max_found
        self.enough = asyncio.Event()
        self.errors = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.directory.receive_datagram(data, (str(addr[0]), int(addr[1])), self.loop.time())
        if self.max_found is not None and len(self.directory) >= self.max_found:
            self.enough.set()

    def error_received(self, exc: Exception) -> None:
        self.errors += 1
        log.debug("discovery query socket error: %s", exc)


async def discover(
    iface: str | net.Interface | None = None,
    *,
    port: int = DEFAULT_PORT,
    timeout: float = 1.0,  # noqa: ASYNC109 - the listening window, not a cancel deadline
    name: str | None = None,
    query_id: int | None = None,
    max_found: int | None = None,
    directory: Directory | None = None,
    auth: DiscoveryAuth | None = None,
    answers_only: bool | None = None,
) -> list[Found]:
    """Ask the LAN which senders there are and wait ``timeout`` seconds for answers.

    The query (docs/protocol.md kind 4) is broadcast to ``(iface.broadcast, port)``
    :data:`QUERY_SENDS` times, at 0, ``timeout/3`` and ``2*timeout/3`` s; every sender that
    matches answers unicast with an announce (kind 5).

    Args:
        iface: an interface name, an :class:`~mcastcam.net.Interface`, or ``None`` for the
            default route's interface.
        port: the senders' discovery port (UDP).
        timeout: seconds to listen, > 0.
        name: only senders with this stream name answer (``None`` or ``""``: all).
        query_id: the querier's u32 id (the query's ``stream_id``); random
            (``secrets.randbits(32)``) when ``None``.
        max_found: return as soon as this many senders have answered (``None``: wait the
            whole ``timeout``).
        directory: collect into this :class:`Directory` (its ``stats`` then show what was
            dropped); a fresh one when ``None`` (with ``auth``).
        auth: with a key (from :func:`mcastcam.keys.load_master_keys`): tag the queries,
            accept only tagged announces, answers only when they echo our nonce.
        answers_only: leave out hints (unsolicited announces under a key: a replay of an
            earlier run's announce verifies too), as a receiver choosing a group must;
            ``None``: when ``auth`` is given.

    Returns:
        The senders found, sorted by name (see :meth:`Directory.entries`); empty if none.

    Raises:
        ConfigError: no such interface, an interface without a broadcast address (``lo``),
            a bad ``port``/``timeout``/``max_found``, or a ``name`` over 64 bytes.
        NetworkSetupError: the socket could not be set up.
    """
    if not 0 < timeout < math.inf:
        raise ConfigError(f"bad discovery timeout {timeout}: expected seconds above 0")
    if not 1 <= port <= 65535:
        raise ConfigError(f"bad discovery port {port}: expected 1..65535")
    if max_found is not None and max_found < 1:
        raise ConfigError(f"bad max_found {max_found}: expected at least 1")
    ifc = iface if isinstance(iface, net.Interface) else net.resolve_interface(iface)
    if ifc.broadcast is None:
        raise ConfigError(
            f"interface {ifc.name} has no broadcast address, so discovery cannot work there; "
            "pick a LAN interface (--interface eth0) or give the group explicitly"
        )
    qid = secrets.randbits(32) if query_id is None else query_id
    found = directory if directory is not None else Directory(auth=auth)
    nonces = [secrets.randbits(64) or 1 for _ in range(QUERY_SENDS)]
    try:
        queries = [
            codec.encode(
                DiscoveryQuery(stream_id=qid, seq=seq, name=name or "", query_nonce=nonce)
            )
            for seq, nonce in enumerate(nonces)
        ]
    except LocalProtocolError as err:
        raise ConfigError(f"bad discovery query: {err}") from None
    if auth is not None:
        queries = [auth.seal(q) for q in queries]
    for nonce in nonces:
        found.expect(nonce)
    loop = asyncio.get_running_loop()
    sock = net.open_broadcast_sender(ifc)
    try:
        collector = _Collector(found, loop, max_found)
        transport, _ = await loop.create_datagram_endpoint(lambda: collector, sock=sock)
    except BaseException:
        sock.close()
        raise
    dest = (ifc.broadcast, port)
    start = loop.time()
    try:
        for i, query in enumerate(queries):
            transport.sendto(query, dest)
            until = start + timeout * (i + 1) / len(queries)
            try:
                await asyncio.wait_for(collector.enough.wait(), max(0.0, until - loop.time()))
            except TimeoutError:
                continue
            break
    finally:
        transport.close()
    if collector.errors:
        log.warning("discovery on %s: %d query datagrams could not be sent", ifc.name,
                    collector.errors)
    if answers_only is None:
        answers_only = auth is not None
    return found.entries(loop.time(), answers_only=answers_only)
