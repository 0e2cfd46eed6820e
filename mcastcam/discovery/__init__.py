"""LAN discovery through subnet broadcast (issue #5): who sends what, where.

:mod:`~mcastcam.protocol.discovery` is the pure part (:class:`Responder` on the sender,
:class:`Directory` on the querier); :mod:`~mcastcam.discovery.service` runs the responder in a
sender, :func:`~mcastcam.discovery.query.discover` asks the LAN, and ``mcastcam-discover``
(:mod:`~mcastcam.discovery.cli`) prints the answers.
"""

from mcastcam.protocol.discovery import (
    DEFAULT_ANNOUNCE_INTERVAL,
    DEFAULT_PORT,
    Directory,
    Found,
    Responder,
)

__all__ = ["DEFAULT_ANNOUNCE_INTERVAL", "DEFAULT_PORT", "Directory", "Found", "Responder"]
