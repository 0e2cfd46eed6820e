r"""A small client for the receiver's re-serve: iterate over frames from Python.

Two URL forms:

* ``tcp://host:port`` – the raw TCP re-serve (:mod:`mcastcam.receiver.tcp`): 20-byte
  header ``b"MCTF"``, u32 JPEG length, u64 capture time ns, u32 frame id (big-endian),
  then the JPEG.
* ``http://[user:password@]host:port/stream`` – the MJPEG stream
  (``multipart/x-mixed-replace``; mjpg-streamer/µStreamer compatible). Each part needs
  ``Content-Length``; ``X-Timestamp`` (``seconds.microseconds``) becomes ``capture_ts_ns``
  and ``X-Frame-Id``, if present, ``frame_id``.

Example::

    from mcastcam.client import iter_frames
    for frame in iter_frames("tcp://192.0.2.10:8081", max_frames=10):
        print(frame.frame_id, len(frame.jpeg))

The HTTP response head is parsed by :mod:`http.client`; only the multipart parts are
parsed here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import logging
import socket
import struct
import time
import urllib.parse
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import BinaryIO

from mcastcam.errors import ConfigError, McastcamError, RemoteProtocolError

__all__ = [
    "ClientFrame",
    "StreamConnectionError",
    "StreamFormatError",
    "aiter_frames",
    "iter_frames",
]

log = logging.getLogger(__name__)

_TCP_HEADER = struct.Struct(">4sIQI")  # same layout as mcastcam.receiver.tcp.TCP_HEADER
_TCP_MAGIC = b"MCTF"
#: Largest frame accepted from a server, bytes (a 4K JPEG is well under this).
MAX_FRAME_BYTES = 64 * 1024 * 1024
_MAX_HEADER_LINE = 8192
_MAX_PART_HEADERS = 64
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0


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


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    auth: str | None  # "Basic ..." header value


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


def parse_timestamp(value: str) -> int:
    """Turn an ``X-Timestamp`` value (``seconds.fraction``) into integer nanoseconds.

    Raises:
        StreamFormatError: not a non-negative decimal number.
    """
    try:
        seconds = Decimal(value.strip())
    except InvalidOperation:
        raise StreamFormatError(f"bad X-Timestamp {value!r}: not a number") from None
    if not seconds.is_finite() or seconds < 0:
        raise StreamFormatError(f"bad X-Timestamp {value!r}: not a time")
    return int(seconds * 1_000_000_000)


def _parse_int(value: str, name: str, limit: int) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise StreamFormatError(f"bad {name} {value!r}: not an integer") from None
    if not 0 <= n <= limit:
        raise StreamFormatError(f"bad {name} {n}: outside 0..{limit}")
    return n


def _boundary_of(content_type: str) -> bytes:
    """The multipart boundary from a ``Content-Type`` header value (RFC 2046 §5.1.1)."""
    mime, _, params = content_type.partition(";")
    if mime.strip().lower() not in ("multipart/x-mixed-replace", "multipart/mixed"):
        raise StreamFormatError(f"not an MJPEG stream: Content-Type {content_type!r}")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value:
            boundary = value.strip().strip('"')
            # mjpg-streamer clones sometimes put the leading "--" in the parameter too
            return boundary.encode("latin-1").removeprefix(b"--")
    raise StreamFormatError(f"no boundary in Content-Type {content_type!r}")


class _PartParser:
    """Reads multipart parts from a blocking or async line/exact reader (same logic)."""

    def __init__(self, boundary: bytes) -> None:
        self.delimiter = b"--" + boundary

    def check_delimiter(self, line: bytes) -> bool:
        """True for the boundary line, False for blank lines; raise on the closing one."""
        stripped = line.rstrip(b"\r\n")
        if not stripped:
            return False
        if stripped == self.delimiter + b"--":
            raise EOFError("closing boundary: the stream ended")
        if stripped != self.delimiter:
            raise StreamFormatError(f"expected boundary {self.delimiter!r}, got {stripped[:80]!r}")
        return True

    @staticmethod
    def header(line: bytes, headers: dict[str, str]) -> None:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise StreamFormatError(f"bad part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
        if len(headers) > _MAX_PART_HEADERS:
            raise StreamFormatError("too many part headers")

    @staticmethod
    def length(headers: dict[str, str]) -> int:
        value = headers.get("content-length")
        if value is None:
            raise StreamFormatError("part without Content-Length (not supported)")
        return _parse_int(value, "Content-Length", MAX_FRAME_BYTES)

    @staticmethod
    def frame(jpeg: bytes, headers: dict[str, str]) -> ClientFrame:
        ts = headers.get("x-timestamp")
        fid = headers.get("x-frame-id")
        return ClientFrame(
            jpeg=jpeg,
            capture_ts_ns=parse_timestamp(ts) if ts is not None else 0,
            frame_id=_parse_int(fid, "X-Frame-Id", 0xFFFFFFFF) if fid is not None else None,
        )


def _read_exact(fp: BinaryIO, n: int) -> bytes:
    data = fp.read(n)
    if len(data) != n:
        raise EOFError(f"connection closed after {len(data)} of {n} bytes")
    return data


def _readline(fp: BinaryIO) -> bytes:
    line = fp.readline(_MAX_HEADER_LINE + 1)
    if not line:
        raise EOFError("connection closed")
    if len(line) > _MAX_HEADER_LINE:
        raise StreamFormatError(f"header line longer than {_MAX_HEADER_LINE} bytes")
    return line


def _tcp_frame(header: bytes) -> tuple[int, int, int]:
    magic, length, ts_ns, frame_id = _TCP_HEADER.unpack(header)
    if magic != _TCP_MAGIC:
        raise StreamFormatError(f"bad TCP frame magic {magic!r}, expected {_TCP_MAGIC!r}")
    if length > MAX_FRAME_BYTES:
        raise StreamFormatError(f"TCP frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    return length, ts_ns, frame_id


def _iter_tcp(target: _Target, timeout: float) -> Generator[ClientFrame, None, None]:
    with socket.create_connection((target.host, target.port), timeout=timeout) as sock:
        fp = sock.makefile("rb")
        with fp:
            while True:
                length, ts_ns, frame_id = _tcp_frame(_read_exact(fp, _TCP_HEADER.size))
                yield ClientFrame(_read_exact(fp, length), ts_ns, frame_id)


def _iter_http(target: _Target, timeout: float) -> Generator[ClientFrame, None, None]:
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        headers = {"Accept": "multipart/x-mixed-replace, image/jpeg", "Connection": "close"}
        if target.auth is not None:
            headers["Authorization"] = target.auth
        conn.request("GET", target.path, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            reason = resp.read(200).decode("utf-8", "replace").strip()
            raise StreamConnectionError(
                f"GET {target.path} answered {resp.status} {resp.reason}: {reason}", resp.status
            )
        parser = _PartParser(_boundary_of(resp.getheader("Content-Type", "")))
        fp: BinaryIO = resp
        while True:
            while not parser.check_delimiter(_readline(fp)):
                pass
            part: dict[str, str] = {}
            while (line := _readline(fp)).rstrip(b"\r\n"):
                parser.header(line, part)
            jpeg = _read_exact(fp, parser.length(part))
            yield parser.frame(jpeg, part)
    finally:
        conn.close()


def iter_frames(
    url: str,
    *,
    reconnect: bool = True,
    timeout: float = 10.0,
    max_frames: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[ClientFrame]:
    """Yield frames from a receiver's re-serve, blocking (one socket, no threads).

    Args:
        url: ``tcp://host:port`` or ``http://[user:password@]host:port/stream``.
        reconnect: on a connection error or a malformed stream, reconnect with backoff
            (0.1 s doubling to 5 s; reset after each frame) instead of raising.
        timeout: socket timeout, seconds, for connecting and for each read.
        max_frames: stop after this many frames (``None``: never stop).
        sleep: how to wait between reconnects (seconds).

    Raises:
        ConfigError: the URL is not one of the two forms.
        StreamConnectionError: with ``reconnect=False``, the connection failed or ended,
            or the server answered an HTTP error.
        StreamFormatError: with ``reconnect=False``, the server sent a malformed stream.
    """
    target = _parse_url(url)
    if max_frames is not None and max_frames <= 0:
        return
    count = 0
    backoff = _BACKOFF_FIRST
    opener = _iter_tcp if target.scheme == "tcp" else _iter_http
    while True:
        try:
            with contextlib.closing(opener(target, timeout)) as frames:
                for frame in frames:
                    backoff = _BACKOFF_FIRST
                    count += 1
                    yield frame
                    if max_frames is not None and count >= max_frames:
                        return
        except StreamConnectionError as exc:
            if not reconnect or exc.permanent:
                raise
            log.info("%s: %s; reconnecting in %.1f s", url, exc, backoff)
        except (OSError, EOFError, http.client.HTTPException) as exc:
            if not reconnect:
                raise StreamConnectionError(f"{url}: {exc}") from exc
            log.info("%s: %s; reconnecting in %.1f s", url, exc, backoff)
        except StreamFormatError:
            if not reconnect:
                raise
            log.warning("%s: malformed stream; reconnecting in %.1f s", url, backoff, exc_info=True)
        sleep(backoff)
        backoff = min(backoff * 2, _BACKOFF_MAX)


async def _aiter_tcp(target: _Target, read_timeout: float) -> AsyncGenerator[ClientFrame, None]:
    timeout = read_timeout
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        while True:
            async with asyncio.timeout(timeout):
                header = await reader.readexactly(_TCP_HEADER.size)
                length, ts_ns, frame_id = _tcp_frame(header)
                jpeg = await reader.readexactly(length)
            yield ClientFrame(jpeg, ts_ns, frame_id)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _aiter_http(target: _Target, read_timeout: float) -> AsyncGenerator[ClientFrame, None]:
    timeout = read_timeout
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(target.host, target.port, limit=65536)
    try:
        host = f"[{target.host}]" if ":" in target.host else target.host
        request = (
            f"GET {target.path} HTTP/1.1\r\nHost: {host}:{target.port}\r\n"
            "Accept: multipart/x-mixed-replace, image/jpeg\r\nConnection: close\r\n"
        )
        if target.auth is not None:
            request += f"Authorization: {target.auth}\r\n"
        writer.write((request + "\r\n").encode("latin-1"))
        async with asyncio.timeout(timeout):
            status = await reader.readline()
            response: dict[str, str] = {}
            while (line := await reader.readline()).rstrip(b"\r\n"):
                _PartParser.header(line, response)
        fields = status.split(None, 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/"):
            raise StreamFormatError(f"not an HTTP response: {status[:80]!r}")
        if fields[1] != b"200":
            code = int(fields[1]) if fields[1].isdigit() else None
            raise StreamConnectionError(f"GET {target.path} answered {status.strip()!r}", code)
        parser = _PartParser(_boundary_of(response.get("content-type", "")))
        while True:
            async with asyncio.timeout(timeout):
                while not parser.check_delimiter(await reader.readline()):
                    pass
                part: dict[str, str] = {}
                while (line := await reader.readline()).rstrip(b"\r\n"):
                    parser.header(line, part)
                jpeg = await reader.readexactly(parser.length(part))
            yield parser.frame(jpeg, part)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def aiter_frames(
    url: str,
    *,
    reconnect: bool = True,
    timeout: float = 10.0,  # noqa: ASYNC109 - a per-read timeout, not a deadline
    max_frames: int | None = None,
) -> AsyncGenerator[ClientFrame, None]:
    """Async variant of :func:`iter_frames` (asyncio streams); same arguments and errors."""
    target = _parse_url(url)
    if max_frames is not None and max_frames <= 0:
        return
    count = 0
    backoff = _BACKOFF_FIRST
    opener = _aiter_tcp if target.scheme == "tcp" else _aiter_http
    while True:
        frames = opener(target, timeout)
        try:
            async for frame in frames:
                backoff = _BACKOFF_FIRST
                count += 1
                yield frame
                if max_frames is not None and count >= max_frames:
                    return
        except StreamConnectionError as exc:
            if not reconnect or exc.permanent:
                raise
            log.info("%s: %s; reconnecting in %.1f s", url, exc, backoff)
        except (OSError, EOFError) as exc:
            if not reconnect:
                raise StreamConnectionError(f"{url}: {exc}") from exc
            log.info("%s: %s; reconnecting in %.1f s", url, exc, backoff)
        except (StreamFormatError, ValueError) as exc:
            if not reconnect:
                if isinstance(exc, StreamFormatError):
                    raise
                raise StreamFormatError(f"{url}: {exc}") from exc
            log.warning("%s: malformed stream; reconnecting in %.1f s", url, backoff, exc_info=True)
        finally:
            await frames.aclose()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, _BACKOFF_MAX)
