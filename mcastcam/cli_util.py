"""What both command-line programs share: one-line errors, exit codes, logging, status line.

Exit codes (see mcastcam.errors): 0 ok, 1 runtime failure (one line; traceback with ``--debug``),
2 usage (a bad value: one line naming it), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TextIO, TypeVar

from mcastcam.errors import ConfigError, McastcamError
from mcastcam.protocol.wire import MAX_NAME_BYTES

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Raised instead of printing argparse's two-line usage message."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit code 2 (via :func:`run_main`)."""

    def error(self, message: str) -> NoReturn:
        """Turn argparse's error into a :class:`UsageError`."""
        raise UsageError(f"{message} (see {self.prog} --help)")


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(width, height)`` in pixels.

    Raises:
        argparse.ArgumentTypeError: not two positive integers joined by ``x``.
    """
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) <= 0 or int(h) <= 0:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    return int(w), int(h)


_RATE_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_rate(text: str) -> float:
    """``"20M"`` -> 20e6 bits per second (suffixes k, M, G: powers of 1000).

    Raises:
        argparse.ArgumentTypeError: not a positive number with an optional suffix.
    """
    raw = text.strip().lower().removesuffix("bit/s").removesuffix("bps")
    suffix = raw[-1:] if raw[-1:] in ("k", "m", "g") else ""
    try:
        value = float(raw[: len(raw) - len(suffix)]) * _RATE_SUFFIX[suffix]
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"bad rate {text!r}: expected bits/s like 800k, 20M, 1G")
    return value


def positive_float(text: str) -> float:
    """A float > 0 (seconds, frames per second ...)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"bad value {text!r}: expected a number above 0")
    return value


def non_negative_float(text: str) -> float:
    """A float >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"bad value {text!r}: expected a number >= 0")
    return value


def name_option(given: str | None, flag: str) -> str:
    """A name for the wire (stream or receiver): ``given``, or this host's name.

    Raises:
        ConfigError: ``given`` is empty or longer than 64 UTF-8 bytes (``MAX_NAME_BYTES``);
            a long host name is cut to fit instead.
    """
    if given is not None:
        if not given or len(given.encode()) > MAX_NAME_BYTES:
            raise ConfigError(f"{flag} {given!r}: must be 1 to {MAX_NAME_BYTES} UTF-8 bytes")
        return given
    host = socket.gethostname().encode()[:MAX_NAME_BYTES].decode(errors="ignore")
    return host or "mcastcam"


def setup_logging(debug: bool, quiet: bool) -> None:
    """Log to stderr: INFO by default, DEBUG with ``--debug``, WARNING with ``--quiet``."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mcastcam", False):
            root.removeHandler(handler)
    handler = StatusAwareHandler(sys.stderr)
    handler._mcastcam = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("linuxpy").setLevel(logging.WARNING)


class StatusLine:
    """A live one-line status on a terminal, a log line every ``log_interval`` s otherwise."""

    active: StatusLine | None = None

    def __init__(self, stream: TextIO, log_interval: float = 10.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.log_interval = log_interval
        self._last_log = time.monotonic()
        self._shown = ""

    def update(self, text: str, logger: logging.Logger) -> None:
        """Show ``text`` (terminal) or log it when the interval has passed."""
        if self.tty:
            self._shown = text
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            StatusLine.active = self
        elif time.monotonic() - self._last_log >= self.log_interval:
            self._last_log = time.monotonic()
            logger.info("%s", text)

    def clear(self) -> None:
        """Erase the live line (before a log line or at exit)."""
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class StatusAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Logs above a live status line without mixing the two."""

    def emit(self, record: logging.LogRecord) -> None:
        """Clear the status line, log, redraw the status line."""
        line = StatusLine.active
        if line is not None:
            line.clear()
        super().emit(record)
        if line is not None and line._shown:
            line.stream.write(line._shown)
            line.stream.flush()


def run_main(
    prog: str,
    argv: list[str] | None,
    parse: Callable[[list[str]], T],
    run: Callable[[T], Coroutine[Any, Any, int]],
    debug_flag: Callable[[T], bool],
) -> int:  # fmt: skip
    """Parse, run the async program with clean signal handling, and map errors to exit codes.

    ``parse`` returns the parsed options or raises :class:`UsageError`/``ConfigError``;
    ``run`` is the program. SIGINT/SIGTERM cancel it (exit 130 / 0).
    """
    args_list = sys.argv[1:] if argv is None else argv
    try:
        opts = parse(args_list)
    except SystemExit as exc:  # --help (argparse exits after printing it)
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except (UsageError, ConfigError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    debug = debug_flag(opts)
    try:
        return asyncio.run(_with_signals(run(opts)))
    except KeyboardInterrupt:
        _clear_status()
        return EXIT_INTERRUPTED
    except (McastcamError, OSError) as exc:
        _clear_status()
        if debug:
            logging.exception("failed")
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE


def _clear_status() -> None:
    if StatusLine.active is not None:
        StatusLine.active.clear()
        StatusLine.active.stream.write("\n")


async def _with_signals(coro: Coroutine[Any, Any, int]) -> int:
    """Run ``coro``; SIGINT cancels it with exit 130, SIGTERM with exit 0."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    got: list[int] = []

    def stop(signum: int) -> None:
        got.append(signum)
        task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
            installed.append(signum)
        except (RuntimeError, ValueError):  # not the main thread: tests run us in-process
            pass
    try:
        return await task
    except asyncio.CancelledError:
        if not got:
            raise
        _clear_status()
        return EXIT_INTERRUPTED if got[0] == signal.SIGINT else EXIT_OK
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
