"""How often receivers report: the rule both ends must agree on (RFC 3550 §6.2 style).

All receivers' reports together stay under :data:`REPORT_SHARE` of the stream's bandwidth:
with ``n`` receivers (the audience the sender announces in its heartbeats), each reports
every ``max(heartbeat interval, n * report_bytes / (REPORT_SHARE * stream_bytes_per_s))``
seconds, randomised to 0.5-1.5 times that (RFC 3550 §6.3.1). The sender uses the same rule
to know when a silent receiver has left.
"""

from __future__ import annotations

from mcastcam.protocol.wire import CONTROL_PREAMBLE_SIZE, PREFIX_SIZE

REPORT_SHARE = 0.05
"""Fraction of the stream's bandwidth all receiver reports together may use."""
IP_UDP_OVERHEAD = 28
"""IPv4 (20) + UDP (8) header bytes per report datagram."""
TYPICAL_REPORT_BYTES = 140
"""A report on the wire with a short name (v2: 137 bytes with 8); the sender's estimate for
expiry times."""


def report_wire_bytes(name: str) -> int:
    """Bytes one report from a receiver called ``name`` takes on the wire (IP/UDP included)."""
    v1_fields = 4 + 1 + len(name.encode()) + 4 + 8 + 8 + 4 + 8 + 8
    v2_fields = 4 + 8 + 8 + 8 + 8  # burst_milli, repaired_fec/nack, unrepairable, challenge
    return IP_UDP_OVERHEAD + PREFIX_SIZE + CONTROL_PREAMBLE_SIZE + v1_fields + v2_fields


def report_interval(
    audience: int, stream_bytes_per_s: float, min_interval: float, report_bytes: int
) -> float:
    """Mean seconds between one receiver's reports, before randomisation.

    Args:
        audience: receivers reporting (at least 1 is assumed).
        stream_bytes_per_s: the stream's bandwidth; 0 (unknown) gives ``min_interval``.
        min_interval: the floor, seconds (the heartbeat interval).
        report_bytes: one report on the wire, bytes.
    """
    if stream_bytes_per_s <= 0:
        return min_interval
    return max(min_interval, max(audience, 1) * report_bytes / (REPORT_SHARE * stream_bytes_per_s))
