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
import tomllib
from collections.abc import Callable, Coroutine, Sequence
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
    """An ``ArgumentParser`` whose errors are one line and exit code 2 (via :func:`run_main`).

    With ``config_file=True`` it has ``--config FILE``: a TOML file whose keys are the long
    options (see :func:`expand_config`), read before the command line, which overrides it.
    """

    def __init__(self, *args: Any, config_file: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_file = config_file
        if config_file:
            self.add_argument(
                "--config",
                metavar="FILE",
                help="read options from a TOML file; its keys are the long options without "
                '"--" (group = "239.255.0.1:8989", fec = "auto", no_gso = true, a list for a '
                "repeatable option); options on the command line win",
            )

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse ``args`` after the options read from ``--config FILE`` (if enabled)."""
        if self.config_file:
            args = expand_config(self, list(sys.argv[1:] if args is None else args))
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """Turn argparse's error into a :class:`UsageError`."""
        raise UsageError(f"{message} (see {self.prog} --help)")


def _config_path(args: Sequence[str]) -> str | None:
    """The value of the last ``--config FILE`` / ``--config=FILE`` in ``args``."""
    path = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--config="):
            path = arg.partition("=")[2]
    return path


def expand_config(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """``args`` with the options of its ``--config FILE`` (TOML) put in front.

    Each key is a long option of ``parser`` without ``--`` (``_`` and ``-`` alike):
    ``true`` gives a flag (``false``: left out), a list repeats a repeatable option,
    strings and numbers give ``--key=value``. Options given in ``args`` win: a key whose
    option is on the command line is skipped.

    Raises:
        ConfigError: the file cannot be read or is not TOML, a key is no option (all such
            keys named in one line), or a value has the wrong type.
    """
    path = _config_path(args)
    if path is None:
        return args
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    given = {a.partition("=")[0] for a in args if a.startswith("--")}
    actions = parser._option_string_actions
    unknown = []
    out: list[str] = []
    for key, value in table.items():
        option = "--" + key.replace("_", "-")
        action = actions.get(option)
        if action is None or option in ("--config", "--help") or not option.startswith("--"):
            unknown.append(key)
            continue
        if given & set(action.option_strings):
            continue
        out += _config_option(path, key, option, action, value)
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown key(s) {', '.join(map(repr, unknown))}: the keys are "
            f"the long options of {parser.prog} --help without '--'"
        )
    return out + args


def _config_option(
    path: str, key: str, option: str, action: argparse.Action, value: object
) -> list[str]:
    """The command-line words for one TOML ``key = value``."""
    where = f"--config {path}: {key}"
    if action.nargs == 0:  # a flag (store_true and the like)
        if not isinstance(value, bool):
            raise ConfigError(f"{where} is a flag: write {key} = true or false")
        return [option] if value else []
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not isinstance(action, argparse._AppendAction):
        raise ConfigError(f"{where} takes one value, not a list")
    words = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ConfigError(f"{where}: expected a string or a number, got {item!r}")
        words.append(f"{option}={item}")
    return words


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
