r"""A small client for the receiver's re-serve: iterate over frames from Python.

Two URL forms:

* ``tcp://host:port`` – the raw TCP re-serve (:mod:`mcastcam.receiver.tcp`): 20-byte
  header ``b"MCTF"``, u32 JPEG length, u64 capture time ns, u32 frame id (big-endian),
  then the JPEG; decoded by :class:`mcastcam.protocol.tcpframe.TcpFrameParser`.
* ``http://[user:password@]host:port/stream`` – the MJPEG stream
  (``multipart/x-mixed-replace``; mjpg-streamer/µStreamer compatible), fetched with
  aiohttp and decoded by :class:`mcastcam.protocol.multipart.MultipartParser`. A part
  with ``Content-Length`` is read by count, one without up to the next boundary;
  ``X-Timestamp`` (``seconds.microseconds``) becomes ``capture_ts_ns`` and
  ``X-Frame-Id``, if present, ``frame_id``.

Example::

    from mcastcam.client import iter_frames
    for frame in iter_frames("tcp://192.0.2.10:8081", max_frames=10):
        print(frame.frame_id, len(frame.jpeg))

:func:`aiter_frames` is the asyncio client; :func:`iter_frames` runs the same code in a
private event loop in the calling thread, so both share the parsers and the retry rules.
While it reconnects, the client logs what it waits for (``logging.getLogger(
"mcastcam.client")``: a WARNING when an outage starts, then an INFO line at most every
:data:`WAIT_LOG_INTERVAL` seconds, and one when frames flow again).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import logging
import time
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import aiohttp

from mcastcam.errors import ConfigError, McastcamError, RemoteProtocolError
from mcastcam.protocol.multipart import MAX_PART_BYTES, MultipartParser
from mcastcam.protocol.multipart import parse_timestamp as parse_timestamp
from mcastcam.protocol.tcpframe import MAX_FRAME_BYTES, TcpFrameParser

__all__ = [
    "ClientFrame",
    "StreamConnectionError",
    "StreamFormatError",
    "aiter_frames",
    "iter_frames",
]

log = logging.getLogger(__name__)

_READ_CHUNK = 256 * 1024  # bytes asked of the socket per read
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
#: Seconds between two "still waiting" log lines while the client reconnects.
WAIT_LOG_INTERVAL = 30.0


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """One frame as a client receives it.

    Attributes:
        jpeg: the whole JPEG (bytes).
        capture_ts_ns: capture time at the sender, wall clock ns (HTTP: from
            ``X-Timestamp``, microsecond precision; 0 if the server sent none).
        frame_id: the sender's frame id, or ``None`` when the server does not say.
    """

    jpeg: bytes
    capture_ts_ns: int
    frame_id: int | None


class StreamFormatError(RemoteProtocolError):
    """The server sent something that is not the expected stream (bad magic, no boundary...)."""


class StreamConnectionError(McastcamError):
    """The connection failed or ended (and ``reconnect`` is off), or HTTP said no.

    ``status`` is the HTTP status when the server answered one (else ``None``); a 4xx
    answer (bad credentials, wrong path) is raised even with ``reconnect`` on.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def permanent(self) -> bool:
        """True for HTTP 4xx answers: retrying cannot help."""
        return self.status is not None and 400 <= self.status < 500


class _StreamEnded(Exception):
    """The server ended the stream (closed the connection or sent the closing boundary)."""


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query, if any
    auth: str | None  # "Basic ..." header value

    @property
    def http_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


def _parse_url(url: str) -> _Target:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("tcp", "http"):
        raise ConfigError(
            f"unsupported URL {url!r}: use tcp://host:port or http://host:port/stream"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad port in URL {url!r}: {exc}") from None
    if not parts.hostname or port is None:
        raise ConfigError(f"URL {url!r} needs a host and a port")
    auth = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    path = parts.path or "/stream"
    if parts.query:
        path += "?" + parts.query
    return _Target(parts.scheme, parts.hostname, port, path, auth)


async def _tcp_frames(
    target: _Target, read_timeout: float, session: aiohttp.ClientSession | None
) -> AsyncGenerator[ClientFrame, None]:
    """Frames of one TCP connection; ends by raising (``_StreamEnded``, OSError, ...)."""
    timeout = read_timeout
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(target.host, target.port)
    parser = TcpFrameParser(MAX_FRAME_BYTES)
    try:
        while True:
            async with asyncio.timeout(timeout):
                data = await reader.read(_READ_CHUNK)
            if not data:
                parser.feed(b"")  # raises an error found after the last frames delivered
                where = "" if parser.at_frame_boundary else f" {parser.buffered} bytes into a frame"
                raise _StreamEnded(f"the receiver closed the connection{where}")
            for frame in parser.feed(data):
                yield ClientFrame(frame.jpeg, frame.capture_ts_ns, frame.frame_id)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _http_frames(
    target: _Target, read_timeout: float, session: aiohttp.ClientSession | None
) -> AsyncGenerator[ClientFrame, None]:
    """Frames of one HTTP response; ends by raising (``_StreamEnded``, ClientError, ...)."""
    assert session is not None  # it carries read_timeout
    headers = {"Accept": "multipart/x-mixed-replace, image/jpeg"}
    if target.auth is not None:
        headers["Authorization"] = target.auth
    try:
        response = await session.get(target.http_url, allow_redirects=False, headers=headers)
    except aiohttp.ClientResponseError as exc:  # the answer is not HTTP
        raise StreamFormatError(f"not an HTTP response: {' '.join(exc.message.split())}") from None
    async with response:
        if response.status != 200:
            reason = (await response.content.read(200)).decode("utf-8", "replace").strip()
            raise StreamConnectionError(
                f"GET {target.path} answered {response.status} {response.reason}: {reason}",
                response.status,
            )
        parser = MultipartParser.from_content_type(
            response.headers.get("Content-Type", ""), max_part_bytes=MAX_PART_BYTES
        )
        async for data in response.content.iter_any():
            for part in parser.feed(data):
                yield ClientFrame(part.body, part.capture_ts_ns, part.frame_id)
            if parser.closed:
                raise _StreamEnded("the receiver sent the closing boundary")
        raise _StreamEnded("the receiver closed the connection")


class _WaitLog:
    """Says what the client waits for while it reconnects, without flooding the log."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.since: float | None = None  # monotonic start of the outage
        self.attempts = 0
        self.last_log = 0.0

    def describe(self, exc: BaseException) -> str:
        """What the failure means, in words a user can act on."""
        if isinstance(exc, StreamConnectionError) and exc.status is not None:
            return f"{exc} (waiting for the receiver to serve the stream)"
        if isinstance(exc, aiohttp.ClientConnectorError):
            exc = exc.os_error
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == (
            errno.ECONNREFUSED
        ):
            return "connection refused (waiting for a receiver to listen there)"
        if isinstance(exc, TimeoutError):
            return f"nothing received for {self.timeout:g} s (waiting for frames)"
        if isinstance(exc, _StreamEnded):
            return f"{exc} (waiting to reconnect)"
        if isinstance(exc, RemoteProtocolError):
            return f"malformed stream: {exc}"
        return f"{type(exc).__name__}: {exc}"

    def failed(self, exc: BaseException, backoff: float) -> None:
        now = time.monotonic()
        self.attempts += 1
        if self.since is None:
            self.since = self.last_log = now
            log.warning("%s: %s; retrying in %.1f s", self.url, self.describe(exc), backoff)
        elif isinstance(exc, RemoteProtocolError) or now - self.last_log >= WAIT_LOG_INTERVAL:
            self.last_log = now
            log.info(
                "%s: still no frames after %.0f s and %d attempts: %s; retrying in %.1f s",
                self.url,
                now - self.since,
                self.attempts,
                self.describe(exc),
                backoff,
            )

    def receiving(self) -> None:
        if self.since is not None:
            log.info(
                "%s: frames again after %.1f s and %d attempts",
                self.url,
                time.monotonic() - self.since,
                self.attempts,
            )
            self.since = None
            self.attempts = 0


async def _frames(
    url: str,
    *,
    reconnect: bool,
    timeout: float,  # noqa: ASYNC109 - a per-read timeout, not a deadline
    max_frames: int | None,
    sleep: Callable[[float], Awaitable[None]],
) -> AsyncGenerator[ClientFrame, None]:
    """The retry loop both APIs share; see :func:`iter_frames`."""
    target = _parse_url(url)
    if max_frames is not None and max_frames <= 0:
        return
    count = 0
    backoff = _BACKOFF_FIRST
    waiting = _WaitLog(url, timeout)
    async with contextlib.AsyncExitStack() as stack:
        session = None
        opener = _tcp_frames
        if target.scheme == "http":
            opener = _http_frames
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
                    connector=aiohttp.TCPConnector(force_close=True),
                )
            )
        while True:
            frames = opener(target, timeout, session)
            try:
                async for frame in frames:
                    waiting.receiving()
                    backoff = _BACKOFF_FIRST
                    count += 1
                    yield frame
                    if max_frames is not None and count >= max_frames:
                        return
            except StreamConnectionError as exc:
                if not reconnect or exc.permanent:
                    raise
                waiting.failed(exc, backoff)
            except (OSError, _StreamEnded, aiohttp.ClientError) as exc:
                if not reconnect:
                    raise StreamConnectionError(f"{url}: {exc}") from exc
                waiting.failed(exc, backoff)
            except RemoteProtocolError as exc:  # the parsers' errors, StreamFormatError
                if not reconnect:
                    if isinstance(exc, StreamFormatError):
                        raise
                    raise StreamFormatError(f"{url}: {exc}") from exc
                waiting.failed(exc, backoff)
            finally:
                await frames.aclose()
            await sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)


def iter_frames(
    url: str,
    *,
    reconnect: bool = True,
    timeout: float = 10.0,
    max_frames: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[ClientFrame]:
    """Yield frames from a receiver's re-serve, blocking.

    Runs :func:`aiter_frames`'s code in a private event loop in the calling thread (no
    threads), one step per frame; so it cannot be called from a thread whose event loop
    is running (use :func:`aiter_frames` there).

    Args:
        url: ``tcp://host:port`` or ``http://[user:password@]host:port/stream``.
        reconnect: on a connection error or a malformed stream, reconnect with backoff
            (0.1 s doubling to 5 s; reset after each frame) instead of raising. While it
            retries it logs what it waits for (see the module docstring).
        timeout: seconds allowed for connecting and for each read.
        max_frames: stop after this many frames (``None``: never stop).
        sleep: how to wait between reconnects (seconds).

    Raises:
        ConfigError: the URL is not one of the two forms.
        StreamConnectionError: with ``reconnect=False``, the connection failed or ended,
            or the server answered an HTTP error; with ``reconnect=True``, an HTTP 4xx.
        StreamFormatError: with ``reconnect=False``, the server sent a malformed stream.
        RuntimeError: called while this thread runs an event loop.
    """

    async def pause(seconds: float) -> None:
        sleep(seconds)

    frames = _frames(url, reconnect=reconnect, timeout=timeout, max_frames=max_frames, sleep=pause)
    with asyncio.Runner() as runner:
        try:
            while (frame := runner.run(_next(frames))) is not None:
                yield frame
        finally:
            runner.run(frames.aclose())


async def _next(frames: AsyncGenerator[ClientFrame, None]) -> ClientFrame | None:
    return await anext(frames, None)


async def aiter_frames(
    url: str,
    *,
    reconnect: bool = True,
    timeout: float = 10.0,  # noqa: ASYNC109 - a per-read timeout, not a deadline
    max_frames: int | None = None,
) -> AsyncGenerator[ClientFrame, None]:
    """Async variant of :func:`iter_frames` (aiohttp for HTTP, asyncio streams for TCP).

    Same arguments (waits between reconnects with ``asyncio.sleep``) and errors.
    """
    frames = _frames(
        url, reconnect=reconnect, timeout=timeout, max_frames=max_frames, sleep=asyncio.sleep
    )
    try:
        async for frame in frames:
            yield frame
    finally:
        await frames.aclose()
