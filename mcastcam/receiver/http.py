r"""The receiver's HTTP re-serve (aiohttp): MJPEG stream, snapshot, status, and a page.

Routes (mjpg-streamer and µStreamer compatible URLs):

* ``GET /stream``, ``GET /?action=stream`` – ``multipart/x-mixed-replace`` MJPEG, byte
  compatible with mjpg-streamer ``plugins/output_http/httpd.c`` and µStreamer
  ``src/ustreamer/http/server.c`` (default mode): a close-delimited body (no
  ``Transfer-Encoding``, ``Connection: close``), ``Content-Type:
  multipart/x-mixed-replace;boundary=boundarydonotcross``, no-cache headers. The body
  starts with ``--boundarydonotcross\\r\\n``; each frame is sent as::

      Content-Type: image/jpeg\\r\\n
      Content-Length: <N>\\r\\n
      X-Timestamp: <capture time, seconds.microseconds>\\r\\n
      X-Frame-Id: <sender frame id>\\r\\n
      \\r\\n
      <N bytes of JPEG>\\r\\n
      --boundarydonotcross\\r\\n

  so the next part's boundary line follows each frame at once (its headers go with the
  next frame, since its Content-Length is not known yet), exactly as µStreamer does.
  ``?advance_headers=1`` (µStreamer's option of that name) sends the next part's headers
  right after each frame too — ``Content-Type`` only, as its length is not known yet — so
  Chromium, which draws a part when the next one begins, shows each frame without waiting
  for the next; the page at ``/`` uses it.
* ``GET /snapshot``, ``GET /?action=snapshot`` – the latest JPEG (``X-Timestamp``, ``Age``
  in whole seconds since the frame completed, RFC 9111 §5.1); ``?fresh=1&timeout=S`` waits
  up to ``S`` seconds (at most :data:`FRESH_TIMEOUT_MAX`) for a newer frame. No frame, no
  newer frame in time, or sender offline: ``503`` with a one-line reason.
* ``GET /status`` – JSON: the app's ``status()`` merged with the hub's clients and totals.
* ``GET /`` – an HTML page showing ``/stream`` and polling ``/status`` once a second
  (package data: ``page/index.html``, ``page.css``, ``page.js``; see :func:`page`).

Optional HTTP Basic auth (RFC 7617) on every route, optional
``Access-Control-Allow-Origin``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import importlib.resources
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import BasicAuth, hdrs, web

from mcastcam.protocol.frame import Frame
from mcastcam.receiver.fanout import FrameHub, HubFullError, Piece, Subscriber

__all__ = [
    "FRESH_TIMEOUT_MAX",
    "STREAM_BOUNDARY",
    "HttpServer",
    "encode_http_part",
    "format_timestamp",
    "start_http",
]

log = logging.getLogger(__name__)

#: The multipart boundary of mjpg-streamer and µStreamer.
STREAM_BOUNDARY = "boundarydonotcross"
_BOUNDARY_LINE = b"--" + STREAM_BOUNDARY.encode() + b"\r\n"
_PART_TRAILER = b"\r\n" + _BOUNDARY_LINE
_ADVANCE_HEADERS = b"Content-Type: image/jpeg\r\n\r\n"
_ADVANCE_TRAILER = _PART_TRAILER + _ADVANCE_HEADERS
#: Longest ``/snapshot?fresh=1&timeout=S`` wait, seconds.
FRESH_TIMEOUT_MAX = 10.0
_FRESH_TIMEOUT_DEFAULT = 5.0

_NO_CACHE_HEADERS: dict[str, str] = {
    hdrs.CACHE_CONTROL: (
        "no-store, no-cache, must-revalidate, proxy-revalidate, pre-check=0, post-check=0, "
        "max-age=0"
    ),
    hdrs.PRAGMA: "no-cache",
    hdrs.EXPIRES: "Mon, 3 Jan 2000 12:34:56 GMT",
}

StatusFn = Callable[[], Mapping[str, Any]]


def format_timestamp(ts_ns: int) -> str:
    """Format a wall-clock time in ns as ``seconds.microseconds`` (``X-Timestamp``)."""
    seconds, rest = divmod(ts_ns, 1_000_000_000)
    return f"{seconds}.{rest // 1000:06d}"


def encode_http_part(frame: Frame) -> tuple[Piece, Piece, Piece]:
    r"""The pieces of one multipart part: part headers, the JPEG, ``\\r\\n--boundary\\r\\n``.

    The JPEG piece is a ``memoryview`` of ``frame.jpeg`` (no copy).
    """
    jpeg = memoryview(frame.jpeg)
    header = (
        f"Content-Type: image/jpeg\r\nContent-Length: {jpeg.nbytes}\r\n"
        f"X-Timestamp: {format_timestamp(frame.capture_ts_ns)}\r\n"
        f"X-Frame-Id: {frame.frame_id}\r\n\r\n"
    ).encode("ascii")
    return header, jpeg, _PART_TRAILER


def encode_http_part_advance(frame: Frame) -> tuple[Piece, Piece]:
    """``advance_headers`` mode: the JPEG, then the next part's boundary and headers at once."""
    return memoryview(frame.jpeg), _ADVANCE_TRAILER


class _CloseDelimitedResponse(web.StreamResponse):
    """A response whose body ends when the connection closes (HTTP/1.0 style).

    aiohttp would otherwise switch an HTTP/1.1 response without Content-Length to chunked
    transfer encoding; like aiohttp's own ``WebSocketResponse`` we turn the length check
    off, so no ``Transfer-Encoding`` is sent and the body is written as is.
    """

    _length_check = False


@dataclass
class HttpServer:
    """A running HTTP re-serve.

    Attributes:
        runner: the aiohttp runner (``await server.close()`` cleans it up).
        host: the address it listens on.
        port: the bound TCP port (the real one when 0 was asked for).
    """

    runner: web.AppRunner
    host: str
    port: int
    streams: set[Subscriber]

    @property
    def url(self) -> str:
        """``http://host:port`` for this server (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and close every connection, stream clients included."""
        hub = self.runner.app[_HUB]
        for sub in list(self.streams):
            hub.unsubscribe(sub)  # ends its handler, which closes the connection
        await self.runner.cleanup()


_HUB: web.AppKey[FrameHub] = web.AppKey("hub", FrameHub)
_STATUS: web.AppKey[StatusFn] = web.AppKey("status", StatusFn)  # type: ignore[arg-type]
_STALL: web.AppKey[float] = web.AppKey("stall_timeout", float)
_STREAMS: web.AppKey[set[Subscriber]] = web.AppKey("streams", set)


def _peer(request: web.Request) -> str:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(request.remote)


def _unavailable(reason: str) -> web.Response:
    return web.Response(
        status=503, text=reason.replace("\n", " ") + "\n", headers=dict(_NO_CACHE_HEADERS)
    )


async def _handle_stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[_HUB]
    transport = request.transport
    if transport is None or transport.is_closing():
        raise web.HTTPBadRequest(text="connection closed\n")
    advance = request.query.get("advance_headers", "") in ("1", "true", "yes")
    encoder = encode_http_part_advance if advance else encode_http_part
    try:  # held: counted now, frames wait in its slot until the headers are out
        sub = hub.subscribe(
            transport, kind="http", address=_peer(request), encoder=encoder, held=True
        )
    except HubFullError:
        return _unavailable(f"too many clients (max_clients={hub.max_clients})")
    streams = request.app[_STREAMS]
    streams.add(sub)
    try:
        return await _stream_to(request, hub, sub, advance)
    finally:
        streams.discard(sub)
        hub.unsubscribe(sub)


async def _stream_to(
    request: web.Request, hub: FrameHub, sub: Subscriber, advance: bool
) -> web.StreamResponse:
    stall_timeout = request.app[_STALL]
    transport = request.transport
    assert transport is not None
    response = _CloseDelimitedResponse(
        status=200,
        headers={
            **_NO_CACHE_HEADERS,
            hdrs.CONTENT_TYPE: f"multipart/x-mixed-replace;boundary={STREAM_BOUNDARY}",
        },
    )
    response.force_close()
    writer = await response.prepare(request)
    assert writer is not None
    if request.method == hdrs.METH_HEAD or sub.closed:
        return response
    transport.write(_BOUNDARY_LINE + _ADVANCE_HEADERS if advance else _BOUNDARY_LINE)
    hub.start(sub)
    while True:
        await sub.wait_busy()
        if sub.closed:
            break
        try:
            async with asyncio.timeout(stall_timeout):
                await writer.drain()
        except TimeoutError:
            log.warning(
                "dropping stream client %s: socket unwritable for %.0f s",
                sub.address,
                stall_timeout,
            )
            transport.abort()
            break
        except ConnectionError:
            break
        sub.drained()
    return response


def _snapshot_response(hub: FrameHub, frame: Frame) -> web.Response:
    age = max(0.0, hub.now() - frame.completed_at)
    return web.Response(
        body=memoryview(frame.jpeg),
        content_type="image/jpeg",
        headers={
            **_NO_CACHE_HEADERS,
            "X-Timestamp": format_timestamp(frame.capture_ts_ns),
            "X-Frame-Id": str(frame.frame_id),
            hdrs.AGE: str(int(age)),
        },
    )


async def _handle_snapshot(request: web.Request) -> web.Response:
    hub = request.app[_HUB]
    fresh = request.query.get("fresh", "0").lower() in ("1", "true", "yes")
    try:
        timeout = float(request.query.get("timeout", _FRESH_TIMEOUT_DEFAULT))
    except ValueError:
        raise web.HTTPBadRequest(text="timeout must be a number of seconds\n") from None
    if not 0.0 <= timeout < float("inf"):
        raise web.HTTPBadRequest(text="timeout must be >= 0 seconds\n")
    timeout = min(timeout, FRESH_TIMEOUT_MAX)
    if not hub.online:
        return _unavailable(f"no frame: {hub.offline_reason}")
    frame = hub.latest
    if fresh or frame is None:
        newer = await hub.wait_newer(frame, timeout if fresh else 0.0)
        if newer is None:
            what = "no new frame" if frame is not None else "no frame yet"
            return _unavailable(f"{what} within {timeout:g} s")
        frame = newer
    if not hub.online:
        return _unavailable(f"no frame: {hub.offline_reason}")
    return _snapshot_response(hub, frame)


async def _handle_status(request: web.Request) -> web.Response:
    hub = request.app[_HUB]
    body: dict[str, Any] = {}
    body.update(request.app[_STATUS]())
    body.update(hub.stats())
    return web.json_response(body, dumps=json.dumps, headers=dict(_NO_CACHE_HEADERS))


async def _handle_root(request: web.Request) -> web.StreamResponse:
    action = request.query.get("action")
    if action is None:
        return web.Response(text=page(), content_type="text/html", charset="utf-8")
    if action == "stream":
        return await _handle_stream(request)
    if action == "snapshot":
        return await _handle_snapshot(request)
    raise web.HTTPNotFound(text=f"unknown action {action!r}: use stream or snapshot\n")


@functools.cache
def page() -> str:
    """The page at ``/``: ``page/index.html`` with ``page.css`` and ``page.js`` inlined.

    Read once from the package data (``importlib.resources``), so the page is one
    self-contained document: no further request, no external resource.
    """
    folder = importlib.resources.files("mcastcam.receiver") / "page"
    html = (folder / "index.html").read_text("utf-8")
    for name in ("page.css", "page.js"):
        marker = f"/* {name} */\n"
        if marker not in html:
            raise RuntimeError(f"page/index.html lacks the line {marker.strip()!r}")
        html = html.replace(marker, (folder / name).read_text("utf-8"))
    return html


def _auth_middleware(user: str, password: str) -> Any:
    want_user = user.encode()
    want_password = password.encode()

    @web.middleware
    async def middleware(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        ok = False
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is not None:
            try:
                creds = BasicAuth.decode(header)
            except ValueError:
                creds = None
            if creds is not None:
                # Compare both, always, in constant time (no early exit on the user).
                user_ok = hmac.compare_digest(creds.login.encode(), want_user)
                password_ok = hmac.compare_digest(creds.password.encode(), want_password)
                ok = user_ok and password_ok
        if not ok:
            raise web.HTTPUnauthorized(
                text="authentication required\n",
                headers={hdrs.WWW_AUTHENTICATE: 'Basic realm="mcastcam", charset="UTF-8"'},
            )
        return await handler(request)

    return middleware


def _no_status() -> Mapping[str, Any]:
    return {}


async def start_http(
    hub: FrameHub,
    host: str,
    port: int,
    *,
    status: StatusFn | None = None,
    auth: tuple[str, str] | None = None,
    cors: str | None = None,
    keepalive_timeout: float = 15.0,
    stall_timeout: float = 30.0,
) -> HttpServer:
    """Start the HTTP re-serve of ``hub`` and return once it listens.

    Args:
        hub: the frames to serve; its ``max_clients`` bounds ``/stream`` clients (one more
            gets 503).
        host: address to listen on (``"127.0.0.1"``, ``"0.0.0.0"``, ``"::"``...).
        port: TCP port; 0 picks a free one (read :attr:`HttpServer.port`).
        status: returns the app's part of ``/status`` (streams, liveness, counters); the
            hub's ``clients`` list and totals are merged in.
        auth: ``(user, password)`` for HTTP Basic auth on every route (401 otherwise).
        cors: if given, the ``Access-Control-Allow-Origin`` value sent on every response.
        keepalive_timeout: seconds an idle connection (no request yet, or between
            requests) stays open.
        stall_timeout: seconds a stream client's socket may stay unwritable before it is
            dropped.

    Raises:
        OSError: the address cannot be bound (e.g. ``EADDRINUSE``).
    """
    middlewares = [_auth_middleware(*auth)] if auth is not None else []
    app = web.Application(middlewares=middlewares)
    app[_HUB] = hub
    app[_STATUS] = status if status is not None else _no_status
    app[_STALL] = stall_timeout
    streams: set[Subscriber] = set()
    app[_STREAMS] = streams
    if cors is not None:
        origin = cors

        async def add_cors(request: web.Request, response: web.StreamResponse) -> None:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin

        app.on_response_prepare.append(add_cors)
    app.router.add_get("/", _handle_root)
    app.router.add_get("/stream", _handle_stream)
    app.router.add_get("/snapshot", _handle_snapshot)
    app.router.add_get("/status", _handle_status)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        keepalive_timeout=keepalive_timeout,
        access_log=None,
        shutdown_timeout=2.0,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    return HttpServer(runner=runner, host=host, port=int(bound[1]), streams=streams)

