"""The receiver's raw TCP re-serve: length-prefixed JPEG frames, one latest frame per client.

Each frame is a 20-byte header (magic ``b"MCTF"``, ``jpeg_len`` u32, ``capture_ts_ns`` u64,
``frame_id`` u32, big-endian) followed by the JPEG; the layout is defined once in
:mod:`mcastcam.protocol.tcpframe` (and docs/protocol.md, "TCP re-serve").

The server sends only; anything the client sends is ignored. A client that cannot keep up
skips frames (it always gets the newest one when its socket drains), and one whose socket
stays unwritable for ``stall_timeout`` seconds is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from mcastcam.protocol.frame import Frame
from mcastcam.protocol.tcpframe import TCP_HEADER, TCP_MAGIC, encode_tcp_header
from mcastcam.receiver.fanout import FrameHub, HubFullError, Piece, Subscriber

__all__ = ["TCP_HEADER", "TCP_MAGIC", "TcpServer", "encode_tcp_frame", "start_tcp"]

log = logging.getLogger(__name__)


def encode_tcp_frame(frame: Frame) -> tuple[Piece, Piece]:
    """The pieces of one frame on the TCP re-serve: the 20-byte header and the JPEG view.

    The header comes from :func:`mcastcam.protocol.tcpframe.encode_tcp_header`.

    Raises:
        LocalProtocolError: the JPEG is 4 GiB or more, or a field is out of range.
    """
    jpeg = memoryview(frame.jpeg)
    return encode_tcp_header(jpeg.nbytes, frame.capture_ts_ns, frame.frame_id), jpeg


class _FrameStreamProtocol(asyncio.Protocol):
    """One TCP client: registers with the hub, relays drain/pause events, enforces stalls."""

    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._sub: Subscriber | None = None
        self._transport: asyncio.Transport | None = None
        self._stall_handle: asyncio.TimerHandle | None = None
        self.bytes_ignored = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        server = self._server
        server.protocols.add(self)
        try:
            self._sub = server.hub.subscribe(
                transport, kind="tcp", address=address, encoder=encode_tcp_frame
            )
        except HubFullError as exc:
            log.warning("refusing TCP client %s: %s", address, exc)
            transport.abort()

    def data_received(self, data: bytes) -> None:
        self.bytes_ignored += len(data)

    def eof_received(self) -> bool:
        # The client half-closed its side; keep sending frames until it closes fully.
        return True

    def pause_writing(self) -> None:
        loop = asyncio.get_running_loop()
        self._stall_handle = loop.call_later(self._server.stall_timeout, self._stalled)

    def resume_writing(self) -> None:
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        if self._sub is not None:
            self._sub.drained()

    def _stalled(self) -> None:
        self._stall_handle = None
        if self._transport is not None:
            log.warning(
                "dropping TCP client %s: socket unwritable for %.0f s",
                self._sub.address if self._sub else "?",
                self._server.stall_timeout,
            )
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        if self._sub is not None:
            self._server.hub.unsubscribe(self._sub)
        self._server.protocols.discard(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass
class TcpServer:
    """A running TCP re-serve.

    Attributes:
        hub: the frames served.
        host: the address it listens on.
        port: the bound port (the real one when 0 was asked for).
        stall_timeout: seconds a client's socket may stay unwritable before it is dropped.
    """

    hub: FrameHub
    host: str
    port: int = 0
    stall_timeout: float = 30.0
    server: asyncio.Server | None = None
    protocols: set[_FrameStreamProtocol] = field(default_factory=set)

    async def close(self) -> None:
        """Stop listening and close every client connection."""
        if self.server is not None:
            self.server.close()
        for proto in list(self.protocols):
            proto.close()
        if self.server is not None:
            await self.server.wait_closed()


async def start_tcp(
    hub: FrameHub, host: str, port: int, *, stall_timeout: float = 30.0
) -> TcpServer:
    """Start the raw TCP re-serve of ``hub`` and return once it listens.

    Args:
        hub: the frames to serve; its ``max_clients`` bounds clients (more are closed at
            once).
        host: address to listen on.
        port: TCP port; 0 picks a free one (read :attr:`TcpServer.port`).
        stall_timeout: seconds a client's socket may stay unwritable before it is dropped.

    Raises:
        OSError: the address cannot be bound.
    """
    tcp = TcpServer(hub=hub, host=host, stall_timeout=stall_timeout)
    loop = asyncio.get_running_loop()
    tcp.server = await loop.create_server(lambda: _FrameStreamProtocol(tcp), host, port)
    tcp.port = int(tcp.server.sockets[0].getsockname()[1])
    return tcp
