"""Operating limits of ``mcastcam-recv``: file descriptors, TLS files, accept errors, loss window.

Issue #12 (logs and limits, honest status):

* :func:`raise_fd_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard one at start-up and
  :func:`fd_budget` says how many connections fit under it; ``--max-clients`` is clamped
  below that (:func:`clamp_max_clients`, logged at WARNING) and the HTTP server refuses
  connections past the budget instead of running out of descriptors.
* :func:`install_accept_error_handler`: asyncio logs a traceback for every failed
  ``accept()`` when descriptors run out (and retries ``backlog`` times per wake-up); this
  loop exception handler turns those into one rate-limited line per minute.
* :func:`load_tls` builds the HTTPS server's :class:`ssl.SSLContext`, checking the files
  at start-up (one line, exit 2, on a bad file).
* :class:`LossWindow`: datagram loss over the last ``window`` seconds (the status line),
  not since start.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import ssl
from pathlib import Path
from typing import Any

from mcastcam.errors import ConfigError
from mcastcam.protocol.config import DEFAULT_LOG_INTERVAL
from mcastcam.protocol.ratelimit import RateLimitedLog
from mcastcam.protocol.rates import RateMeter

__all__ = [
    "ACCEPT_BACKLOG",
    "FD_RESERVE",
    "LOSS_WINDOW",
    "STATUS_HEADROOM",
    "LossWindow",
    "clamp_max_clients",
    "fd_budget",
    "install_accept_error_handler",
    "load_tls",
    "raise_fd_limit",
]

log = logging.getLogger(__name__)

ACCEPT_BACKLOG = 128
"""``listen()`` backlog of the HTTP server; asyncio accepts up to this many connections per
wake-up before any of them is handled (or refused and closed)."""
FD_RESERVE = 64 + 3 * ACCEPT_BACKLOG
"""Descriptors kept out of the connection budget: 64 for UDP sockets, listening sockets, log
files, the interpreter's own files and libraries, plus three accept batches of connections
past the cap that are open until they are refused and closed."""
STATUS_HEADROOM = 16
"""Connections kept free beyond ``--max-clients`` stream clients for ``/status``, ``/``
and ``/snapshot`` requests."""
LOSS_WINDOW = 10.0
"""Seconds of the status line's loss % window."""
_FD_CAP = 1 << 20  # an unlimited hard limit is raised to this many descriptors
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return ``(soft, hard)`` after.

    An unlimited hard limit raises the soft one to 2**20. Failure to raise (a container
    that forbids it) is logged at WARNING and the old limits are returned.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = _FD_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as err:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, err)
            return soft, hard
        log.debug("open-file limit raised from %d to %d (hard limit)", soft, want)
        soft = want
    return soft, hard


def fd_budget(soft_limit: int) -> int:
    """Connections (HTTP and TCP) that fit under ``soft_limit`` descriptors, at least 1."""
    return max(1, soft_limit - FD_RESERVE)


def clamp_max_clients(max_clients: int, soft_limit: int) -> int:
    """``max_clients`` kept below the descriptor budget (logged at WARNING when clamped).

    Returns ``min(max_clients, fd_budget(soft_limit) - STATUS_HEADROOM)``, at least 1.
    """
    cap = max(1, fd_budget(soft_limit) - STATUS_HEADROOM)
    if max_clients <= cap:
        return max_clients
    log.warning(
        "--max-clients %d lowered to %d: the open-file limit is %d (raise it, e.g. "
        "LimitNOFILE=65536 in the systemd unit or ulimit -Hn)",
        max_clients, cap, soft_limit,
    )  # fmt: skip
    return cap


def install_accept_error_handler(
    loop: asyncio.AbstractEventLoop, interval: float = DEFAULT_LOG_INTERVAL
) -> RateLimitedLog:
    """Log ``accept()`` failures for lack of resources once per ``interval`` s, no traceback.

    Other exceptions go to the handler that was there (or the loop's default). Returns the
    :class:`RateLimitedLog` (its ``totals()`` count the failures by errno name).
    """
    previous = loop.get_exception_handler()
    limited = RateLimitedLog(
        log, interval, template="could not accept %(since)d connection(s): %(reason)s "
        "(%(total)d in all); raise the open-file limit or lower --max-clients",
    )  # fmt: skip

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS and "accept" in str(
            context.get("message", "")
        ):
            limited.count(errno.errorcode.get(exc.errno or 0, "error"), lp.time())
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return limited


def load_tls(cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context from a PEM certificate (chain) file and its private key file.

    Raises:
        ConfigError: a file is missing or unreadable, not PEM, or the key does not match the
            certificate (one line, naming the file).
    """
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or str(err)
        raise ConfigError(
            f"--tls-cert {cert} / --tls-key {key}: cannot load ({reason}); expected a PEM "
            "certificate and its matching PEM private key"
        ) from None
    return ctx


class LossWindow:
    """Datagram loss % over the last ``window`` seconds, from running counters.

    Start it with the counters' values at ``now``, then feed :meth:`observe` the stream's
    running ``datagrams`` (received) and ``lost`` counts;
    :meth:`percent` is ``lost / (received + lost)`` of their growth over the window (0.0 when
    nothing was expected). A counter that goes down (a new stream) starts the window over.
    """

    def __init__(
        self, now: float, datagrams: int = 0, lost: int = 0, window: float = LOSS_WINDOW
    ) -> None:
        self._got = RateMeter(window, now, datagrams)
        self._lost = RateMeter(window, now, lost)

    def observe(self, now: float, datagrams: int, lost: int) -> None:
        """The counters read ``datagrams`` and ``lost`` at ``now`` (monotonic seconds)."""
        self._got.observe(now, datagrams)
        self._lost.observe(now, lost)

    def percent(self, now: float) -> float:
        """Loss in percent over the window before ``now``."""
        got, lost = self._got.rate(now), self._lost.rate(now)
        return 100.0 * lost / (got + lost) if got + lost > 0 else 0.0
