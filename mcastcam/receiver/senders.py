"""The senders on the LAN for the page's picker (``GET /senders``): discovery, on demand.

:class:`SenderWatch` runs :func:`mcastcam.discovery.query.discover` (a bounded broadcast
query, :data:`QUERY_TIMEOUT` seconds) every :data:`QUERY_INTERVAL` seconds, but only while a
page asked ``/senders`` in the last :data:`IDLE_AFTER` seconds: an unwatched receiver sends
no query. The receiver cannot switch streams at run time, so the list comes with the
command line that follows each sender (``mcastcam-recv --name NAME``, or ``--group`` and
``--stream``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from typing import Any

from mcastcam import net
from mcastcam.discovery.query import discover
from mcastcam.errors import McastcamError
from mcastcam.protocol.discovery import Found
from mcastcam.protocol.trust import DiscoveryAuth
from mcastcam.protocol.wire import Transport

__all__ = ["IDLE_AFTER", "QUERY_INTERVAL", "QUERY_TIMEOUT", "SenderWatch", "follow_command"]

log = logging.getLogger(__name__)

QUERY_INTERVAL = 10.0
"""Seconds between two discovery queries while a page is watching."""
QUERY_TIMEOUT = 1.0
"""Seconds one query listens for answers."""
IDLE_AFTER = 30.0
"""Seconds after the last ``/senders`` request at which the queries stop."""


def follow_command(found: Found, interface: str) -> str:
    """The ``mcastcam-recv`` command line that follows ``found`` (a shell-quoted string)."""
    args = ["mcastcam-recv", "--interface", interface]
    if found.name:
        args += ["--name", found.name]
    elif found.transport is Transport.MULTICAST:
        args += ["--group", found.destination, "--stream", f"0x{found.stream_id:08x}"]
    elif found.transport is Transport.BROADCAST:
        args += ["--broadcast", "--port", str(found.port), "--stream", f"0x{found.stream_id:08x}"]
    else:
        args += ["--unicast-port", str(found.port)]
    return shlex.join(args)


class SenderWatch:
    """Discovery queries on ``iface`` while someone looks; call it for the ``/senders`` body.

    Args:
        iface: the receiving interface; without a broadcast address nothing is queried and
            the body says why.
        port: the senders' discovery UDP port.
        auth: with a key, tagged queries and tagged answers only (§9).
    """

    def __init__(
        self, iface: net.Interface, port: int, auth: DiscoveryAuth | None = None
    ) -> None:
        self.iface = iface
        self.port = port
        self.auth = auth
        self.queries = 0
        self._found: list[Found] = []
        self._updated: float | None = None
        self._asked = -IDLE_AFTER
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task (idle until the first ``/senders`` request)."""
        if self.iface.broadcast is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the background task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def __call__(self) -> dict[str, Any]:
        """The ``/senders`` body; also marks a page as watching (queries go on for a while).

        ``available`` (bool), ``reason`` (why not, one line), ``interface``, ``senders``
        (each :meth:`Found.to_json` plus ``command``, the command line to follow it),
        ``age`` (seconds since the list was made, ``None`` before the first query).
        """
        now = asyncio.get_running_loop().time()
        self._asked = now
        self._wake.set()
        if self.iface.broadcast is None:
            return {
                "available": False,
                "reason": f"{self.iface.name} has no broadcast address: discovery cannot ask",
                "interface": self.iface.name,
                "senders": [],
                "age": None,
            }
        return {
            "available": True,
            "reason": "" if self._updated is not None else "first query in progress",
            "interface": self.iface.name,
            "senders": [
                {**f.to_json(), "command": follow_command(f, self.iface.name)} for f in self._found
            ],
            "age": None if self._updated is None else round(now - self._updated, 1),
        }

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() - self._asked > IDLE_AFTER:
                self._wake.clear()
                await self._wake.wait()
            try:
                self._found = await discover(
                    self.iface, port=self.port, timeout=QUERY_TIMEOUT, auth=self.auth
                )
                self._updated = loop.time()
            except (OSError, McastcamError) as exc:  # interface down, no route: retry later
                log.warning("discovery query for /senders failed: %s", exc)
            self.queries += 1
            await asyncio.sleep(QUERY_INTERVAL)
