"""Every event the sans-IO cores queue, in one module (aioquic's ``quic/events.py``).

The shells drain them with ``next_event()`` after every input:

* the reassembler (:class:`~mcastcam.protocol.reassembly.Reassembler`): :class:`FrameCompleted`,
  :class:`FrameDropped`, :class:`FrameIncomplete`, :class:`StreamStarted`,
  :class:`StreamForgotten`,
  :class:`ControlReceived` (:data:`Event`);
* the receiver session (:class:`~mcastcam.protocol.receiver.ReceiverSession`):
  :class:`FrameReady`, :class:`Followed`, :class:`LivenessChanged`,
  :class:`HeartbeatReceived` (:data:`SessionEvent`);
* the sender session (:class:`~mcastcam.protocol.sender.SenderSession`):
  :class:`ReceiverJoined`, :class:`ReceiverLeft` (:data:`SenderEvent`).

Times are the ``now`` the core was given (monotonic seconds).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mcastcam.protocol.audience import Listener
from mcastcam.protocol.codec import Heartbeat, Message
from mcastcam.protocol.frame import Frame
from mcastcam.protocol.liveness import LiveState

__all__ = [
    "ControlReceived",
    "DropReason",
    "Event",
    "Followed",
    "FrameCompleted",
    "FrameDropped",
    "FrameIncomplete",
    "FrameReady",
    "HeartbeatReceived",
    "LivenessChanged",
    "ReceiverJoined",
    "ReceiverLeft",
    "SenderEvent",
    "SessionEvent",
    "StreamForgotten",
    "StreamStarted",
]

Address = tuple[str, int]


class DropReason(enum.StrEnum):
    """Why a frame was not completed."""

    LOST = "lost"
    """No fragment of the frame arrived before a newer frame was resolved."""
    LATE = "late"
    """Incomplete when a newer frame completed or timed out (in-order delivery)."""
    TIMEOUT = "timeout"
    """Still incomplete ``frame_timeout`` seconds after its first fragment."""
    CONFLICT = "conflict"
    """A fragment disagreed with the frame's length, count or capture time."""
    TOO_LARGE = "too_large"
    """The declared frame length is above ``max_frame_len``."""
    EVICTED = "evicted"
    """Pushed out to stay within the frames-in-flight or bytes-in-flight bounds."""
    CORRUPT = "corrupt"
    """Complete, but its CRC-32C differs from the one its datagrams carried (never published)."""


@dataclass(frozen=True, slots=True)
class FrameCompleted:
    """The reassembler finished a frame, byte-identical to what the sender sent.

    ``frame.jpeg`` is a read-only view of a buffer that is never written again;
    ``frame.completed_at`` is the ``now`` (monotonic seconds) of the last fragment.
    """

    frame: Frame


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """``count`` consecutive frames from ``frame_id`` on were not completed, for ``reason``."""

    stream_id: int
    frame_id: int
    reason: DropReason
    count: int = 1


@dataclass(frozen=True, slots=True)
class FrameIncomplete:
    """A frame with FEC will not decode from its planned symbols: it needs a NACK.

    Said once per frame, as soon as it is certain: when even the planned symbols still to
    come cannot make k + 2 (at its last source symbol, at a repair symbol, at its last planned
    one), or when a newer frame begins. ``k`` source symbols; ``held`` distinct symbols
    (source and repair) in hand ``at`` that time (monotonic seconds); the frame decodes
    from k + ``overhead`` distinct symbols (2 with RaptorQ, 0 with Reed–Solomon).
    """

    stream_id: int
    frame_id: int
    k: int
    held: int
    at: float
    overhead: int = 2


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The first valid datagram of a stream id arrived from ``addr``."""

    stream_id: int
    addr: Address


@dataclass(frozen=True, slots=True)
class StreamForgotten:
    """The reassembler evicted ``stream_id`` to make room for a new stream (table full).

    ``reason`` is ``"idle"`` (silent past ``stream_idle_timeout``), ``"heartbeats_only"``
    (never sent a symbol) or ``"no_frame"`` (never completed a frame).
    """

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ControlReceived:
    """A valid non-fragment datagram (heartbeat, report, discovery) for the session above."""

    message: Message
    addr: Address
    received_at: float


Event = (
    FrameCompleted
    | FrameDropped
    | FrameIncomplete
    | StreamStarted
    | StreamForgotten
    | ControlReceived
)


@dataclass(frozen=True, slots=True)
class FrameReady:
    """A complete frame of the followed stream (``frame.jpeg`` is read-only)."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class Followed:
    """From now on ``stream_id`` (named ``name``, from ``addr``) is the one re-served."""

    stream_id: int
    name: str
    addr: Address
    previous: int | None


@dataclass(frozen=True, slots=True)
class LivenessChanged:
    """``stream_id`` became ``state`` (alive / stale / lost)."""

    stream_id: int
    name: str
    state: LiveState
    followed: bool


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """A sender heartbeat, for the shell (receiver reports, status)."""

    heartbeat: Heartbeat
    addr: Address
    received_at: float


SessionEvent = FrameReady | Followed | LivenessChanged | HeartbeatReceived


@dataclass(frozen=True, slots=True)
class ReceiverJoined:
    """A receiver's first report arrived."""

    listener: Listener


@dataclass(frozen=True, slots=True)
class ReceiverLeft:
    """A receiver has not reported for three report intervals."""

    listener: Listener


SenderEvent = ReceiverJoined | ReceiverLeft
