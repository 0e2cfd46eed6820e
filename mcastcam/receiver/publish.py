"""Publishing shell: the received MJPEG frames pushed to an RTMP server by ffmpeg.

``mcastcam-recv --publish rtmp://HOST/APP/NAME`` runs ``ffmpeg`` as a child process that
reads the received JPEGs on its stdin (``-f mjpeg -i -``, timestamps from the wall clock
when each frame is written) and encodes H.264 with a low-latency preset (``libx264
-preset veryfast -tune zerolatency``, keyframe every ``2 × fps`` frames, ``yuv420p``) into
FLV over RTMP: a server such as nginx with its RTMP module then serves RTMP and HLS to any
number of viewers (see docs/scaling.md).

ffmpeg is one more subscriber of the :class:`~mcastcam.receiver.fanout.FrameHub`, its
stdin pipe the transport (``loop.connect_write_pipe``): it has the same latest-frame slot
as an HTTP client, so a slow ffmpeg skips frames and never blocks the others.

:class:`Publisher` keeps ffmpeg running: when it exits (crash, RTMP server down or
refusing, killed) it is started again after a back-off of ``min_backoff`` seconds doubling
to ``max_backoff`` (reset once ffmpeg has run ``stable_after`` seconds). Each exit is one
log line with ffmpeg's last error line (warnings at most once per ``log_interval``, the
others at debug level with a count); ``/status`` has ``publish: {url, state, restarts,
last_error, ...}``, the URL without credentials. ffmpeg missing from ``PATH`` is one clear
error and publishing stops; the receiver keeps serving HTTP either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, Literal

from mcastcam.errors import ConfigError
from mcastcam.protocol.config import DEFAULT_LOG_INTERVAL
from mcastcam.protocol.frame import Frame
from mcastcam.receiver.fanout import FrameHub, HubFullError, Piece, Subscriber

__all__ = [
    "DEFAULT_FPS",
    "PublishState",
    "Publisher",
    "check_publish_url",
    "ffmpeg_command",
    "redact_url",
]

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0
"""Frame rate (frames/s) of the encoded stream when the sender's heartbeats have none yet."""
PIPE_SIZE = 1 << 20
"""Bytes asked for ffmpeg's stdin pipe (``F_SETPIPE_SZ``; capped by ``pipe-max-size``)."""
STDERR_TAIL = 4096
"""Longest ffmpeg stderr line kept, bytes."""

FPS_WAIT = 2.0
"""Seconds to wait, after the first frame, for a heartbeat to give the frame rate."""

PublishState = Literal["waiting", "starting", "running", "backoff", "missing", "stopped"]


def redact_url(url: str) -> str:
    """``url`` without its ``user:password@`` part (for logs and ``/status``)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def check_publish_url(url: str) -> str:
    """Validate a ``--publish`` URL: ``rtmp://`` or ``rtmps://`` with a host and a path.

    Returns:
        ``url`` unchanged.

    Raises:
        ConfigError: another scheme, no host, or no ``/APP/NAME`` path.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("rtmp", "rtmps"):
        raise ConfigError(
            f"--publish {redact_url(url)!r}: expected rtmp://HOST[:PORT]/APP/NAME (or rtmps://)"
        )
    if not parts.hostname:
        raise ConfigError(f"--publish {redact_url(url)!r}: no host")
    if len([p for p in parts.path.split("/") if p]) < 2:
        raise ConfigError(
            f"--publish {redact_url(url)!r}: give the application and the stream name, "
            "e.g. rtmp://HOST/live/camera"
        )
    return url


def ffmpeg_command(ffmpeg: str, url: str, fps: float) -> list[str]:
    """The ffmpeg command line: MJPEG on stdin → H.264 (low latency) in FLV to ``url``.

    ``fps`` (frames/s, > 0) sets the output rate (constant: frames a slow ffmpeg skipped
    are repeated) and the keyframe interval (``2 × fps`` frames, about 2 s). Odd widths or
    heights are cut to even ones (4:2:0 H.264 needs even sizes; libx264 refuses the rest).
    """
    rate = f"{fps:g}"
    gop = str(max(1, round(2 * fps)))
    return [
        ffmpeg, "-hide_banner", "-nostats", "-loglevel", "error",
        "-use_wallclock_as_timestamps", "1", "-f", "mjpeg", "-i", "-",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2",
        "-fps_mode", "cfr", "-r", rate, "-g", gop, "-pix_fmt", "yuv420p", "-an",
        "-f", "flv", url,
    ]  # fmt: skip


def _jpeg_only(frame: Frame) -> Sequence[Piece]:
    """The pieces written to ffmpeg for a frame: the JPEG alone (the mjpeg demuxer splits)."""
    return (frame.jpeg,)


class _PipeProtocol(asyncio.BaseProtocol):
    """Flow control of ffmpeg's stdin: a drained pipe lets the subscriber's next frame go."""

    def __init__(self) -> None:
        self.subscriber: Subscriber | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        pass  # the hub sees the unsent bytes itself (get_write_buffer_size)

    def resume_writing(self) -> None:
        if self.subscriber is not None:
            self.subscriber.drained()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Publisher:
    """Runs ffmpeg to push the hub's frames to ``url`` and restarts it when it exits.

    Args:
        hub: where the frames come from (ffmpeg is one subscriber, kind ``"publish"``).
        url: ``rtmp://HOST[:PORT]/APP/NAME`` (see :func:`check_publish_url`).
        fps: returns the stream's frame rate in frames/s (0: not known yet, then
            :data:`DEFAULT_FPS`); read each time ffmpeg starts.
        ffmpeg: the program, looked up on ``PATH``.
        min_backoff, max_backoff: seconds before a restart: ``min_backoff`` doubling up to
            ``max_backoff`` while ffmpeg keeps exiting.
        stable_after: seconds ffmpeg must have run for the back-off to start again from
            ``min_backoff``.
        log_interval: seconds between two warnings about ffmpeg exiting (others: debug).

    Raises:
        ValueError: a back-off below 0 or ``max_backoff < min_backoff``.

    Use on the event loop thread: :meth:`start`, then :meth:`close`. ffmpeg first starts
    when the first frame has arrived (state ``waiting`` until then).
    """

    def __init__(
        self,
        hub: FrameHub,
        url: str,
        *,
        fps: Callable[[], float] = lambda: 0.0,
        ffmpeg: str = "ffmpeg",
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        stable_after: float = 30.0,
        log_interval: float = DEFAULT_LOG_INTERVAL,
    ) -> None:
        if not 0 <= min_backoff <= max_backoff:
            raise ValueError(f"bad back-off {min_backoff}..{max_backoff} s")
        self.hub = hub
        self.url = url
        self.shown_url = redact_url(url)
        self._fps = fps
        self.ffmpeg = ffmpeg
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.log_interval = log_interval
        self.state: PublishState = "stopped"
        self.starts = 0
        self.restarts = 0
        self.last_error = ""
        self.last_exit: int | None = None
        self.pid: int | None = None
        self.retry_in: float | None = None
        self._subscriber: Subscriber | None = None
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._warned_at: float | None = None
        self._quiet_exits = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start publishing in a background task (returns at once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="publish")

    async def close(self) -> None:
        """Stop ffmpeg (SIGTERM, then SIGKILL after 3 s) and the restart loop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_process()
        if self.state != "missing":
            self.state = "stopped"

    def status(self) -> dict[str, Any]:
        """``/status``'s ``publish`` object, JSON-ready (seconds, counts)."""
        sub = self._subscriber
        return {
            "url": self.shown_url,
            "state": self.state,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_exit": self.last_exit,
            "pid": self.pid,
            "retry_in": self.retry_in,
            "frames_sent": sub.frames_sent if sub is not None else 0,
            "frames_skipped": sub.frames_skipped if sub is not None else 0,
        }

    # ------------------------------------------------------------ the loop

    async def _first_frame(self) -> None:
        """Wait for a frame, then briefly for the stream's frame rate (heartbeats)."""
        self.state = "waiting"
        while self.hub.latest is None:
            await self.hub.wait_newer(None, 10.0)
        for _ in range(int(FPS_WAIT / 0.1)):
            if self._fps() > 0:
                return
            await asyncio.sleep(0.1)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.min_backoff
        await self._first_frame()
        while True:
            program = shutil.which(self.ffmpeg)
            if program is None:
                self._missing()
                return
            self.state = "starting"
            self.retry_in = None
            started = loop.time()
            try:
                code = await self._run_once(program)
            except FileNotFoundError:
                self._missing()
                return
            except (OSError, HubFullError) as exc:
                code = None
                self.last_error = f"cannot start {self.ffmpeg}: {exc}"
            ran = loop.time() - started
            if ran >= self.stable_after:
                backoff = self.min_backoff
            self.last_exit = code
            self.restarts += 1
            self.state = "backoff"
            self.retry_in = backoff
            self._report_exit(code, ran, backoff, loop.time())
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff, max(backoff * 2, self.min_backoff))

    def _missing(self) -> None:
        self.state = "missing"
        self.last_error = f"{self.ffmpeg} not found on PATH"
        log.error(
            "--publish %s: %s: install it (Debian: apt-get install ffmpeg); not publishing, "
            "the receiver keeps serving its own clients",
            self.shown_url,
            self.last_error,
        )

    def _report_exit(self, code: int | None, ran: float, backoff: float, now: float) -> None:
        why = self.last_error or "no error message"
        what = "could not start" if code is None else f"exited {code}"
        if self._warned_at is not None and now - self._warned_at < self.log_interval:
            self._quiet_exits += 1
            log.debug("publish: ffmpeg %s after %.1f s: %s", what, ran, why)
            return
        quiet = self._quiet_exits
        more = f" ({quiet} more exit(s) since the last warning)" if quiet else ""
        log.warning(
            "publishing to %s: ffmpeg %s after %.1f s: %s; restart #%d in %g s%s",
            self.shown_url,
            what,
            ran,
            why,
            self.restarts,
            backoff,
            more,
        )
        self._warned_at = now
        self._quiet_exits = 0

    async def _run_once(self, program: str) -> int:
        """Start ffmpeg, feed it until it exits; returns its exit status."""
        loop = asyncio.get_running_loop()
        fps = self._fps() or DEFAULT_FPS
        read_fd, write_fd = os.pipe()
        try:
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            proc = await asyncio.create_subprocess_exec(
                *ffmpeg_command(program, self.url, fps),
                stdin=read_fd,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self._proc = proc
        self.pid = proc.pid
        self.starts += 1
        self.last_error = ""
        log.info(
            "publishing to %s: ffmpeg pid %d, H.264 at %g fps", self.shown_url, proc.pid, fps
        )
        pipe = os.fdopen(write_fd, "wb", buffering=0)
        protocol = _PipeProtocol()
        transport, _ = await loop.connect_write_pipe(lambda: protocol, pipe)
        try:
            sub = self.hub.subscribe(
                transport,
                kind="publish",
                address=f"ffmpeg[{proc.pid}]",
                encoder=_jpeg_only,
            )
        except Exception:
            transport.close()
            await self._stop_process()
            raise
        protocol.subscriber = sub
        self._subscriber = sub
        self.state = "running"
        try:
            assert proc.stderr is not None
            await self._read_stderr(proc.stderr)
            return await proc.wait()
        finally:
            self.hub.unsubscribe(sub)
            transport.close()
            await self._stop_process()

    async def _read_stderr(self, stderr: asyncio.StreamReader) -> None:
        """Keep ffmpeg's last non-empty stderr line as :attr:`last_error` until EOF."""
        while True:
            try:
                line = await stderr.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                line = exc.partial
                if not line:
                    return
            except asyncio.LimitOverrunError as exc:
                line = await stderr.readexactly(exc.consumed)
            text = line[:STDERR_TAIL].decode(errors="replace").strip()
            text = text.replace(self.url, self.shown_url)  # ffmpeg names the URL in errors
            if text:
                self.last_error = text
                log.debug("ffmpeg: %s", text)

    async def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        self.pid = None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 3.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
