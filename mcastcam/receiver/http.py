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
  newer frame in time, sender offline, or a newest frame older than the frame-age bound
  (:func:`frame_age_bound`): ``503`` with a one-line reason.
* Aliases users paste from other tools answer like the canonical routes:
  ``/stream.mjpg``, ``/video.mjpg`` and ``/?action=stream_0`` like ``/stream``;
  ``/snapshot.jpg`` and ``/?action=snapshot_0`` like ``/snapshot``.
* ``GET /status`` – JSON: the app's ``status()`` merged with the hub's clients and totals,
  plus ``state`` (:func:`serve_state`: ``"live"``, ``"no_frames"``, ``"stale"`` or
  ``"offline"``), ``state_reason``, ``frame_age`` and ``max_frame_age`` (seconds), ``now``
  (the receiver's monotonic clock, seconds: divide counter deltas by its delta for rates)
  and ``latest_latency`` (capture -> complete of the newest frame, seconds, by the sender's
  and the receiver's wall clocks: meaningful only when they are synchronised).
* ``GET /senders`` – JSON: the senders discovery found on the LAN (``available``,
  ``reason``, ``senders``, ``age``), from the ``senders`` callback (see :func:`start_http`);
  asking it keeps the receiver's periodic discovery query going.
* ``GET /metrics`` – Prometheus exposition text (``metrics`` callback,
  :mod:`mcastcam.metrics`); 404 without one.
* ``GET /`` – an HTML page showing ``/stream`` and polling ``/status`` once a second
  (package data: ``page/index.html``, ``page.css``, ``page.js``; see :func:`page`).

"No signal" (``no_signal``, a JPEG; ``mcastcam-recv`` passes
:func:`mcastcam.receiver.nosignal.no_signal_jpeg`): while no fresh frame is there (none yet,
the newest older than the frame-age bound, or the sender offline) a ``/stream`` client that
looks like a browser (its ``Accept`` names ``image/*``, ``image/webp``, ``image/avif`` or
``text/html``) or asks with ``?no_signal=1`` gets that JPEG once a second, as µStreamer
does, and real frames again as soon as they come; players and programs (ffmpeg, VLC, curl,
:mod:`mcastcam.client`) get only real frames unless they add ``?no_signal=1``.
``/snapshot`` still answers 503, with the JPEG as body (``Content-Type: image/jpeg``, the
reason in ``X-No-Signal``) for a browser, else the one-line reason as text.

Optional HTTP Basic auth (RFC 7617) on every route, optional
``Access-Control-Allow-Origin``, optional TLS (``ssl_context``: HTTPS).

Limits (issue #12): malformed requests are answered 400 by aiohttp and logged here at DEBUG,
one line each without traceback, plus one INFO line per minute with their count (aiohttp
would log a traceback at ERROR for each); connections past ``max_connections`` (the
descriptor budget) get a 503 and are closed at once, so the server never runs out of
descriptors in ``accept()``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import importlib.resources
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import BasicAuth, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from mcastcam.protocol.config import DEFAULT_LOG_INTERVAL
from mcastcam.protocol.frame import Frame
from mcastcam.protocol.ratelimit import RateLimitedLog
from mcastcam.receiver.fanout import FrameHub, HubFullError, Piece, Subscriber
from mcastcam.receiver.ops import ACCEPT_BACKLOG

__all__ = [
    "FRESH_TIMEOUT_MAX",
    "MIN_FRAME_AGE_BOUND",
    "NO_SIGNAL_INTERVAL",
    "STREAM_BOUNDARY",
    "UNKNOWN_FPS_FRAME_AGE_BOUND",
    "HttpServer",
    "SendersFn",
    "encode_http_part",
    "format_timestamp",
    "frame_age_bound",
    "no_signal_reason",
    "serve_state",
    "start_http",
]

log = logging.getLogger(__name__)
server_log = logging.getLogger(__name__ + ".server")
"""aiohttp's per-connection logger for our servers (malformed requests land here)."""

MIN_FRAME_AGE_BOUND = 1.0
"""Seconds: the automatic frame-age bound is never below this."""
UNKNOWN_FPS_FRAME_AGE_BOUND = 5.0
"""Seconds: the automatic frame-age bound while the stream's frame rate is not known."""

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
#: Returns the ``/senders`` JSON body (see :class:`mcastcam.receiver.senders.SenderWatch`).
SendersFn = Callable[[], Mapping[str, Any]]
MetricsFn = Callable[[], tuple[bytes, str]]
"""Returns one scrape: the exposition text and its ``Content-Type``."""


STREAM_ALIASES = ("/stream.mjpg", "/video.mjpg")
"""Paths that answer like ``/stream`` (µStreamer, motion, ESP32-CAM and IP-camera habits)."""
SNAPSHOT_ALIASES = ("/snapshot.jpg",)
"""Paths that answer like ``/snapshot``."""


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
    tls: bool = False
    refused: Callable[[], int] = int
    """Connections refused so far because ``max_connections`` were open."""

    @property
    def url(self) -> str:
        """``http://host:port`` (``https://`` with TLS) for this server (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

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
_MAX_AGE: web.AppKey[float | None] = web.AppKey("max_frame_age", float)
_NO_SIGNAL: web.AppKey[bytes | None] = web.AppKey("no_signal", bytes)
_SENDERS: web.AppKey[SendersFn | None] = web.AppKey("senders", object)  # type: ignore[arg-type]
_METRICS: web.AppKey[MetricsFn | None] = web.AppKey("metrics", object)  # type: ignore[arg-type]
NO_SIGNAL_INTERVAL = 1.0
"""Seconds between two "no signal" frames on a ``/stream`` client while there is no signal."""


def frame_age_bound(status: Mapping[str, Any], override: float | None = None) -> float:
    """Seconds the newest frame may be old before ``/snapshot`` answers 503.

    ``override`` (``--max-frame-age``) wins. Otherwise a few frame intervals of the followed
    stream, and never less than the time it takes to call a silent sender lost (so a
    sender that just died goes "stale" first, then "offline"):
    ``max(1 s, 5 / fps, 3 × heartbeat interval)``; :data:`UNKNOWN_FPS_FRAME_AGE_BOUND`
    while the frame rate is not known.
    """
    if override is not None:
        return override
    followed = _followed(status)
    fps = float(followed.get("fps") or 0.0) if followed else 0.0
    heartbeat = float(followed.get("heartbeat_interval") or 0.0) if followed else 0.0
    frames = 5.0 / fps if fps > 0 else UNKNOWN_FPS_FRAME_AGE_BOUND
    return max(MIN_FRAME_AGE_BOUND, frames, 3.0 * heartbeat)


def serve_state(
    status: Mapping[str, Any], hub: FrameHub, max_age: float
) -> tuple[str, str, float | None]:
    """What a viewer gets: ``(state, reason, frame_age)``.

    ``state`` is ``"offline"`` (no sender, or lost), ``"stale"`` (heartbeats late, not lost
    yet), ``"no_frames"`` (the sender is alive but no frame completed for ``max_age``
    seconds, or none yet) or ``"live"``; ``reason`` is one line (``""`` when live);
    ``frame_age`` is the newest frame's age in seconds (``None`` before the first).
    ``status`` is the app's ``/status`` part (its ``online`` and the followed stream's
    ``liveness``); without ``online`` the hub's liveness source is asked.
    """
    latest = hub.latest
    age = None if latest is None else max(0.0, hub.now() - latest.completed_at)
    online = bool(status["online"]) if "online" in status else hub.online
    if not online:
        return "offline", hub.offline_reason or "no sender", age
    followed = _followed(status)
    if followed is not None and followed.get("liveness") == "stale":
        return "stale", "the sender's heartbeats are late", age
    if age is None:
        return "no_frames", "the sender is alive but no frame has completed yet", age
    if age > max_age:
        return (
            "no_frames",
            f"the sender is alive but the newest frame is {age:.1f} s old (max {max_age:g} s)",
            age,
        )
    return "live", "", age


def _followed(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    streams = status.get("streams") or ()
    return next((s for s in streams if s.get("followed")), None)


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
    placeholder = request.app[_NO_SIGNAL]
    if placeholder is not None and _wants_no_signal(request):
        ticker = asyncio.create_task(_no_signal_loop(request.app, hub, sub, placeholder))
        try:
            return await _pump(request, writer, sub, response)
        finally:
            ticker.cancel()
    return await _pump(request, writer, sub, response)


async def _pump(
    request: web.Request, writer: Any, sub: Subscriber, response: web.StreamResponse
) -> web.StreamResponse:
    """Wait for the subscriber's writes to drain until it is closed or stalls too long."""
    stall_timeout = request.app[_STALL]
    transport = request.transport
    assert transport is not None
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


def no_signal_reason(app: web.Application) -> str:
    """Why no fresh frame can be served (one line), or ``""`` when one can.

    No fresh frame: the sender is offline, no frame yet, or the newest frame is older than
    the frame-age bound (:func:`frame_age_bound`).
    """
    hub = app[_HUB]
    if not hub.online:
        return f"no frame: {hub.offline_reason}"
    latest = hub.latest
    if latest is None:
        return "no frame yet"
    bound = frame_age_bound(app[_STATUS](), app[_MAX_AGE])
    age = hub.now() - latest.completed_at
    if age > bound:
        return f"no recent frame: the newest is {age:.1f} s old (max {bound:g} s)"
    return ""


async def _no_signal_loop(
    app: web.Application, hub: FrameHub, sub: Subscriber, jpeg: bytes
) -> None:
    """Every :data:`NO_SIGNAL_INTERVAL` s without signal, write the "no signal" JPEG to ``sub``.

    It is written only when the client's transport is idle (never queued), as frame id 0
    with the current wall-clock time, so a real frame always goes first.
    """
    loop = asyncio.get_running_loop()
    while not sub.closed:
        if no_signal_reason(app):
            frame = Frame(jpeg=jpeg, frame_id=0, capture_ts_ns=time.time_ns(), stream_id=0,
                          completed_at=loop.time())  # fmt: skip
            hub.send_to(sub, frame)
        await asyncio.sleep(NO_SIGNAL_INTERVAL)


_BROWSER_ACCEPTS = ("image/*", "image/webp", "image/avif", "text/html")


def _browser_like(request: web.Request) -> bool:
    """Whether ``Accept`` looks like a browser's (``<img>``, a tab).

    Chromium, Firefox and Safari name ``image/*``, ``image/webp`` or ``image/avif`` (and a
    tab ``text/html``); players and programs send ``*/*`` (ffmpeg, VLC, curl) or exactly what
    they parse (:mod:`mcastcam.client`: ``multipart/x-mixed-replace, image/jpeg``).
    """
    accept = request.headers.get(hdrs.ACCEPT, "").lower()
    return any(kind in accept for kind in _BROWSER_ACCEPTS)


def _wants_no_signal(request: web.Request) -> bool:
    """``?no_signal=1``/``0`` if given, else :func:`_browser_like`."""
    asked = request.query.get("no_signal")
    if asked is not None:
        return asked.lower() in ("1", "true", "yes")
    return _browser_like(request)


def _no_frame(request: web.Request, reason: str) -> web.Response:
    """``503`` for ``/snapshot``: the "no signal" JPEG to image clients, else the reason."""
    jpeg = request.app[_NO_SIGNAL]
    if jpeg is None or not _browser_like(request):
        return _unavailable(reason)
    return web.Response(
        status=503,
        body=jpeg,
        content_type="image/jpeg",
        headers={**_NO_CACHE_HEADERS, "X-No-Signal": reason.replace("\n", " ")},
    )


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
        return _no_frame(request, f"no frame: {hub.offline_reason}")
    frame = hub.latest
    if frame is not None and not fresh:
        bound = frame_age_bound(request.app[_STATUS](), request.app[_MAX_AGE])
        age = hub.now() - frame.completed_at
        if age > bound:
            return _no_frame(
                request, f"no recent frame: the newest is {age:.1f} s old (max {bound:g} s)"
            )
    if fresh or frame is None:
        newer = await hub.wait_newer(frame, timeout if fresh else 0.0)
        if newer is None:
            what = "no new frame" if frame is not None else "no frame yet"
            return _no_frame(request, f"{what} within {timeout:g} s")
        frame = newer
    if not hub.online:
        return _no_frame(request, f"no frame: {hub.offline_reason}")
    return _snapshot_response(hub, frame)


async def _handle_status(request: web.Request) -> web.Response:
    hub = request.app[_HUB]
    session = request.app[_STATUS]()
    bound = frame_age_bound(session, request.app[_MAX_AGE])
    state, reason, age = serve_state(session, hub, bound)
    body: dict[str, Any] = {}
    body.update(session)
    body.update(hub.stats())
    body.update(
        state=state,
        state_reason=reason,
        frame_age=None if age is None else round(age, 3),
        max_frame_age=round(bound, 3),
        now=round(hub.now(), 3),  # the receiver's monotonic clock: rates between two polls
    )
    latest = hub.latest
    if latest is not None:  # capture -> complete of the newest frame (the two hosts' clocks)
        done_ns = time.time_ns() - int((hub.now() - latest.completed_at) * 1e9)
        body["latest_latency"] = round((done_ns - latest.capture_ts_ns) / 1e9, 4)
    return web.json_response(body, dumps=json.dumps, headers=dict(_NO_CACHE_HEADERS))


async def _handle_senders(request: web.Request) -> web.Response:
    senders = request.app[_SENDERS]
    body: Mapping[str, Any] = (
        senders() if senders is not None
        else {"available": False, "reason": "discovery is off in this receiver", "senders": []}
    )  # fmt: skip
    return web.json_response(dict(body), headers=dict(_NO_CACHE_HEADERS))


async def _handle_metrics(request: web.Request) -> web.Response:
    metrics = request.app[_METRICS]
    if metrics is None:
        raise web.HTTPNotFound(text="metrics are off in this receiver\n")
    body, content_type = metrics()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type, **_NO_CACHE_HEADERS})


async def _handle_root(request: web.Request) -> web.StreamResponse:
    action = request.query.get("action")
    if action is None:
        return web.Response(text=page(), content_type="text/html", charset="utf-8")
    if action in ("stream", "stream_0"):  # _0: mjpg-streamer's first (only) input
        return await _handle_stream(request)
    if action in ("snapshot", "snapshot_0"):
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


class _MalformedRequestFilter(logging.Filter):
    """Turns aiohttp's traceback per malformed request into DEBUG lines and a count.

    Installed on :data:`server_log`: a record carrying an
    :class:`~aiohttp.http_exceptions.HttpProcessingError` (bad request line, header, method,
    TLS on the plain port...) is dropped; one DEBUG line without traceback says who sent
    what, and an INFO line at most once per ``interval`` seconds gives the count.
    """

    def __init__(self, interval: float = DEFAULT_LOG_INTERVAL) -> None:
        super().__init__()
        self.limited = RateLimitedLog(
            log, interval, level=logging.INFO,
            template="%(since)d %(reason)s answered 400 (%(total)d in all; details at DEBUG)",
        )  # fmt: skip

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if log.isEnabledFor(logging.DEBUG):
            message = " ".join(str(exc.message).split())[:200]
            log.debug("%s: %s %s", record.getMessage(), type(exc).__name__, message)
        self.limited.count("malformed HTTP request(s)", record.created)
        return False


_MALFORMED = _MalformedRequestFilter()
server_log.addFilter(_MALFORMED)


class _Refuse(asyncio.Protocol):
    """A connection over the budget: a 503 and close, no request parsed."""

    _REPLY = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n"
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._REPLY)
        transport.close()


class _CappedSite(web.BaseSite):
    """A TCP site like :class:`aiohttp.web.TCPSite` that keeps at most ``cap`` connections.

    Connections past the cap get :class:`_Refuse` (503, close) from their first moment, so
    descriptors stay within the budget; refusals are counted and logged once a minute.
    """

    __slots__ = ("_cap", "_host", "_limited", "_port", "refused")

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        cap: int | None,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=ACCEPT_BACKLOG)
        self._host, self._port, self._cap = host, port, cap
        self.refused = 0
        self._limited = RateLimitedLog(
            log, DEFAULT_LOG_INTERVAL,
            template="refused %(since)d HTTP connection(s): %(reason)s (%(total)d in all)",
        )  # fmt: skip

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    def _factory(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if self._cap is not None and len(server.connections) >= self._cap:
            self.refused += 1
            loop = asyncio.get_running_loop()
            self._limited.count(f"{self._cap} connections open (the descriptor budget)",
                                loop.time())
            return _Refuse()
        return server()

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=True,
        )  # fmt: skip


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
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | None = None,
    max_frame_age: float | None = None,
    no_signal: bytes | None = None,
    senders: SendersFn | None = None,
    metrics: MetricsFn | None = None,
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
        ssl_context: serve HTTPS with this server context (see
            :func:`mcastcam.receiver.ops.load_tls`); ``None``: plain HTTP.
        max_connections: connections open at once, stream clients included (the
            descriptor budget, :func:`mcastcam.receiver.ops.fd_budget`); more get a 503 and
            are closed. ``None``: no bound.
        max_frame_age: seconds the newest frame may be old before ``/snapshot`` answers
            503 and ``/status`` says ``no_frames``; ``None``: :func:`frame_age_bound`.
        no_signal: the "no signal" JPEG (:func:`mcastcam.receiver.nosignal.no_signal_jpeg`)
            sent to ``/stream`` clients once a second while there is no fresh frame, and the
            body of ``/snapshot``'s 503 for image clients; ``None``: none (text 503 only).
        senders: returns the ``/senders`` body; ``None``: ``/senders`` says discovery is off.
        metrics: returns ``/metrics`` (Prometheus text and its content type, see
            :class:`mcastcam.metrics.ReceiverMetrics`); ``None``: ``/metrics`` is 404.

    Raises:
        OSError: the address cannot be bound (e.g. ``EADDRINUSE``).
    """
    middlewares = [_auth_middleware(*auth)] if auth is not None else []
    app = web.Application(middlewares=middlewares)
    app[_HUB] = hub
    app[_STATUS] = status if status is not None else _no_status
    app[_STALL] = stall_timeout
    app[_MAX_AGE] = max_frame_age
    app[_NO_SIGNAL] = no_signal
    app[_SENDERS] = senders
    app[_METRICS] = metrics
    streams: set[Subscriber] = set()
    app[_STREAMS] = streams
    if cors is not None:
        origin = cors

        async def add_cors(request: web.Request, response: web.StreamResponse) -> None:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin

        app.on_response_prepare.append(add_cors)
    app.router.add_get("/", _handle_root)
    for path in ("/stream", *STREAM_ALIASES):
        app.router.add_get(path, _handle_stream)
    for path in ("/snapshot", *SNAPSHOT_ALIASES):
        app.router.add_get(path, _handle_snapshot)
    app.router.add_get("/status", _handle_status)
    app.router.add_get("/senders", _handle_senders)
    app.router.add_get("/metrics", _handle_metrics)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        keepalive_timeout=keepalive_timeout,
        access_log=None,
        shutdown_timeout=2.0,
        logger=server_log,
    )
    await runner.setup()
    site = _CappedSite(runner, host, port, cap=max_connections, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    return HttpServer(
        runner=runner,
        host=host,
        port=int(bound[1]),
        streams=streams,
        tls=ssl_context is not None,
        refused=lambda: site.refused,
    )

