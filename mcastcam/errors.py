"""The mcastcam exception tree (see mcastcam.errors).

Remote garbage is a counter, never a crash: only :class:`RemoteProtocolError` and its
subclasses describe what the network sent, and the receive path catches exactly those.
"""

from __future__ import annotations


class McastcamError(Exception):
    """Base of every error mcastcam raises on purpose."""


class ConfigError(McastcamError):
    """A bad command-line or configuration value; the CLI exits with status 2."""


class ProtocolError(McastcamError):
    """Something about the wire protocol is wrong."""


class LocalProtocolError(ProtocolError):
    """We were asked to build something the wire format cannot carry (a bug or misuse)."""


class RemoteProtocolError(ProtocolError):
    """The network sent something invalid; recoverable: count it and drop it."""


class DecodeError(RemoteProtocolError):
    """A datagram could not be decoded.

    ``reason`` is a short stable token used as a counter key (``"truncated"``,
    ``"bad_magic"``, ``"unknown_kind"``, ...); ``str(err)`` is the exact message.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SourceError(McastcamError):
    """A frame source failed: camera gone, unreadable file, malformed MJPEG."""


class NetworkSetupError(McastcamError):
    """A socket could not be bound, joined or configured.

    ``errno`` keeps the OS error number (or ``None``); the message says what to do.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
