"""Prometheus metrics of a receiver (``GET /metrics``) and a sender (``--metrics ADDR:PORT``).

Everything goes through ``prometheus-client``: the exposition text is its
``generate_latest``. Each program holds its own :class:`~prometheus_client.CollectorRegistry`
(never the library's global one), so two receivers in one process (tests) never share or
double-count a number.

Counters and gauges are read from the live status at scrape time by a custom collector
(:class:`ReceiverCollector`, :class:`SenderCollector`): the numbers are the ones ``/status``
and the status line show, counted once, where they are counted. The two receiver histograms
are observed as frames go by (hooks of :class:`mcastcam.receiver.fanout.FrameHub`):

* ``mcastcam_receiver_capture_to_complete_seconds``: the sender's capture time to the
  frame's last datagram here (wall clocks of two hosts: meaningful when they are
  synchronised; a negative difference counts as 0);
* ``mcastcam_receiver_complete_to_written_seconds``: frame complete to handed to a client's
  socket (one monotonic clock), by client kind (``http``, ``tcp``, ``publish``, ``record``).

Units are base units: seconds, bytes, ratios (0..1). Cardinality is bounded: stream labels
(``stream`` = name, ``stream_id`` = 8 hex digits) only for the followed stream and at most
:data:`MAX_STREAMS` - 1 others; reason labels are the codes the core counts (lower-case
tokens), at most :data:`MAX_REASONS` per family, the rest summed into ``other``.

This module imports neither the sender nor the receiver: it reads their status mappings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mcastcam.protocol.frame import Frame

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "MAX_REASONS",
    "MAX_STREAMS",
    "ReceiverCollector",
    "ReceiverMetrics",
    "SenderCollector",
    "SenderMetrics",
    "bounded_reasons",
    "start_metrics_server",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of the exposition text (prometheus-client's)."""
MAX_STREAMS = 4
"""Streams with their own labels: the followed one first, then the lowest stream ids."""
MAX_REASONS = 24
"""Distinct ``reason`` label values per metric family; more are summed into ``other``."""
LATENCY_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, float("inf"),
)  # fmt: skip
"""Histogram bucket bounds, seconds (LAN latencies: 1 ms to 5 s)."""
CLIENT_KINDS = ("http", "tcp", "publish", "record")
"""The hub's subscriber kinds (a fixed set: the ``kind`` label)."""
RECORDING_STATES = ("idle", "recording", "stopped")
"""The recorder's states (a fixed set: the ``state`` label)."""

_REASON_RE = re.compile(r"[a-z][a-z0-9_]{0,47}")
Status = Callable[[], Mapping[str, Any]]
STREAM_LABELS = ["stream", "stream_id"]


def bounded_reasons(counts: Mapping[str, int]) -> dict[str, int]:
    """``counts`` by reason with at most :data:`MAX_REASONS` keys (label-safe tokens).

    Reasons that are not lower-case tokens, and those past the first ``MAX_REASONS - 1`` in
    name order, are summed into ``"other"``.
    """
    out: dict[str, int] = {}
    other = 0
    for reason in sorted(counts):
        n = int(counts[reason])
        if _REASON_RE.fullmatch(reason) and reason != "other" and len(out) < MAX_REASONS - 1:
            out[reason] = n
        else:
            other += n
    if other:
        out["other"] = other
    return out


def _labelled_streams(streams: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The followed stream, then the others by stream id, at most :data:`MAX_STREAMS`."""
    ordered = sorted(streams, key=lambda s: (not s.get("followed"), str(s["stream_id"])))
    return ordered[:MAX_STREAMS]


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class _StatusCollector(Collector):
    """Base: reads ``status()`` at each scrape; ``describe`` is empty (no scrape at register)."""

    def __init__(self, status: Status) -> None:
        self._status = status

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families depend on the live status."""
        return []


# (status key, family name without _total, help) for the per-stream receiver counters
_RECEIVER_STREAM_COUNTERS = (
    ("frames_completed", "mcastcam_receiver_frames", "Frames completed (reassembled)"),
    ("datagrams", "mcastcam_receiver_datagrams", "Datagrams received (source and repair)"),
    ("bytes", "mcastcam_receiver_bytes", "Datagram bytes received"),
    ("lost", "mcastcam_receiver_datagrams_lost", "Datagrams lost (sequence gaps)"),
    ("duplicates", "mcastcam_receiver_datagrams_duplicate", "Duplicate datagrams"),
    ("unrepairable", "mcastcam_receiver_frames_unrepairable",
     "Frames lost beyond what FEC and NACK repair could restore"),
    ("corrupt", "mcastcam_receiver_frames_corrupt", "Frames refused for a wrong CRC-32C"),
    ("repair_datagrams", "mcastcam_receiver_repair_datagrams", "Repair datagrams received"),
    ("repair_bytes", "mcastcam_receiver_repair_bytes", "Repair datagram bytes received"),
)  # fmt: skip


class ReceiverCollector(_StatusCollector):
    """The receiver's counters and gauges from its ``/status`` mapping, at scrape time.

    ``status()`` returns what ``mcastcam-recv`` serves as ``/status`` before the HTTP
    layer's additions: ``streams`` (the session's), ``decode_errors``, ``socket_errors``,
    optionally ``recording``, merged with the hub's ``clients`` and ``clients_refused``.
    """

    def collect(self) -> Iterator[Metric]:
        """The families of one scrape."""
        st = self._status()
        streams = _labelled_streams(st.get("streams", ()))
        counters = {key: _counter(name, doc, STREAM_LABELS)
                    for key, name, doc in _RECEIVER_STREAM_COUNTERS}  # fmt: skip
        repaired = _counter("mcastcam_receiver_frames_repaired",
                            "Frames completed thanks to repair, by method (fec, nack)",
                            [*STREAM_LABELS, "method"])  # fmt: skip
        dropped = _counter("mcastcam_receiver_frames_dropped",
                           "Frames given up, by reason", [*STREAM_LABELS, "reason"])  # fmt: skip
        rejected = _counter(
            "mcastcam_receiver_datagrams_rejected",
            "Datagrams of a known stream refused (malformed, forged, no room), by reason",
            [*STREAM_LABELS, "reason"],
        )
        up = _gauge("mcastcam_receiver_stream_up", "1 while the stream's sender is live",
                    STREAM_LABELS)  # fmt: skip
        followed = _gauge("mcastcam_receiver_stream_followed",
                          "1 for the stream re-served over HTTP/TCP", STREAM_LABELS)  # fmt: skip
        for s in streams:
            labels = [str(s.get("name") or ""), str(s["stream_id"])]
            for key, family in counters.items():
                family.add_metric(labels, float(s.get(key, 0)))
            repaired.add_metric([*labels, "fec"], float(s.get("repaired_fec", 0)))
            repaired.add_metric([*labels, "nack"], float(s.get("repaired_nack", 0)))
            for reason, n in bounded_reasons(s.get("frames_dropped", {})).items():
                dropped.add_metric([*labels, reason], float(n))
            for reason, n in bounded_reasons(s.get("decode_errors", {})).items():
                rejected.add_metric([*labels, reason], float(n))
            up.add_metric(labels, 1.0 if s.get("online") else 0.0)
            followed.add_metric(labels, 1.0 if s.get("followed") else 0.0)
        yield from counters.values()
        yield from (repaired, dropped, rejected, up, followed)

        errors = _counter("mcastcam_receiver_decode_errors",
                          "Datagrams refused before any stream could be named, by reason",
                          ["reason"])  # fmt: skip
        for reason, n in bounded_reasons(st.get("decode_errors", {})).items():
            errors.add_metric([reason], float(n))
        yield errors
        sock = _counter("mcastcam_receiver_socket_errors", "Errors reading the UDP socket")
        sock.add_metric([], float(st.get("socket_errors", 0)))
        yield sock

        clients = _gauge(
            "mcastcam_receiver_clients", "Subscribers now, by kind (http, tcp, publish, record)",
            ["kind"],
        )  # fmt: skip
        kinds = dict.fromkeys(CLIENT_KINDS, 0)
        for client in st.get("clients", ()):
            if client.get("kind") in kinds:
                kinds[client["kind"]] += 1
        for kind, n in kinds.items():
            clients.add_metric([kind], float(n))
        yield clients
        refused = _counter("mcastcam_receiver_clients_refused",
                           "Clients refused because --max-clients were connected")  # fmt: skip
        refused.add_metric([], float(st.get("clients_refused", 0)))
        yield refused
        yield from _recording(st.get("recording"))


def _recording(rec: Mapping[str, Any] | None) -> Iterator[Metric]:
    if rec is None:
        return
    state = _gauge("mcastcam_receiver_recording_state",
                   "1 for the recorder's state (idle, recording, stopped)", ["state"])  # fmt: skip
    for name in RECORDING_STATES:
        state.add_metric([name], 1.0 if rec.get("state") == name else 0.0)
    yield state
    for key, name, doc in (
        ("bytes", "mcastcam_receiver_recorded_bytes", "Bytes written to segments"),
        ("frames", "mcastcam_receiver_recorded_frames", "Frames written to segments"),
        ("write_errors", "mcastcam_receiver_recording_write_errors", "Failed segment writes"),
    ):
        family = _counter(name, doc)
        family.add_metric([], float(rec.get(key, 0)))
        yield family


class ReceiverMetrics:
    """A receiver's registry: :class:`ReceiverCollector` plus the two latency histograms.

    Args:
        status: see :class:`ReceiverCollector`.
        stream_name: stream id -> its name (``""`` while unknown), for histogram labels.
        wall_ns: the wall clock, ns (``time.time_ns``; tests may inject one).

    Wire :meth:`on_publish` and :meth:`on_write` to the hub's hooks (:meth:`attach`).
    """

    def __init__(
        self,
        status: Status,
        stream_name: Callable[[int], str] = lambda _sid: "",
        *,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ReceiverCollector(status))
        self._stream_name = stream_name
        self._wall_ns = wall_ns
        self._labels: dict[int, tuple[str, str]] = {}  # stream id -> labels, <= MAX_STREAMS
        self._kinds: dict[int, set[str]] = {}  # stream id -> client kinds observed
        self.capture_to_complete = Histogram(
            "mcastcam_receiver_capture_to_complete_seconds",
            "Sender capture time to the frame's last datagram here (two hosts' wall clocks)",
            STREAM_LABELS, registry=self.registry, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.complete_to_written = Histogram(
            "mcastcam_receiver_complete_to_written_seconds",
            "Frame complete to handed to a client's socket, by client kind",
            [*STREAM_LABELS, "kind"], registry=self.registry, buckets=LATENCY_BUCKETS,
        )  # fmt: skip

    def attach(self, hub: Any) -> None:
        """Set ``hub.on_publish`` and ``hub.on_write`` (a :class:`FrameHub`) to this."""
        hub.on_publish = self.on_publish
        hub.on_write = self.on_write

    def _stream_labels(self, stream_id: int) -> tuple[str, str]:
        labels = self._labels.get(stream_id)
        name = self._stream_name(stream_id)
        if labels is not None and labels[0] == name:
            return labels
        if labels is not None or len(self._labels) >= MAX_STREAMS:  # renamed, or one too many
            old_id = stream_id if labels is not None else next(iter(self._labels))
            old = self._labels.pop(old_id)
            self.capture_to_complete.remove(*old)
            for kind in self._kinds.pop(old_id, ()):
                self.complete_to_written.remove(*old, kind)
        labels = self._labels[stream_id] = (name, f"{stream_id:08x}")
        return labels

    def on_publish(self, frame: Frame, now: float) -> None:
        """A frame was published at hub clock ``now``: observe capture -> complete."""
        labels = self._stream_labels(frame.stream_id)
        completed_wall_ns = self._wall_ns() - round((now - frame.completed_at) * 1e9)
        latency = max(0.0, (completed_wall_ns - frame.capture_ts_ns) / 1e9)
        self.capture_to_complete.labels(*labels).observe(latency)

    def on_write(self, sub: Any, frame: Frame, now: float) -> None:
        """A frame went to subscriber ``sub`` at ``now``: observe complete -> written.

        Frames of streams never published (the "no signal" placeholder) are not observed.
        """
        labels = self._labels.get(frame.stream_id)
        if labels is None or sub.kind not in CLIENT_KINDS:
            return
        self._kinds.setdefault(frame.stream_id, set()).add(sub.kind)
        latency = max(0.0, now - frame.completed_at)
        self.complete_to_written.labels(*labels, sub.kind).observe(latency)

    def render(self) -> bytes:
        """The exposition text of one scrape (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


# (key in status, family name without _total, help) for the sender's counters
_SENDER_COUNTERS = (
    ("frames_sent", "mcastcam_sender_frames", "Frames sent"),
    ("frames_skipped", "mcastcam_sender_frames_skipped",
     "Frames skipped (the link or --max-rate was slower than the source)"),
    ("datagrams_sent", "mcastcam_sender_datagrams", "Datagrams sent (symbols and control)"),
    ("bytes_sent", "mcastcam_sender_bytes", "Stream bytes sent"),
    ("heartbeats_sent", "mcastcam_sender_heartbeats", "Heartbeats sent"),
    ("reports_received", "mcastcam_sender_reports_received", "Receiver reports received"),
)  # fmt: skip


class SenderCollector(_StatusCollector):
    """The sender's counters and gauges from its status mapping, at scrape time.

    ``status()`` returns :meth:`mcastcam.sender.app.SenderApp.status` plus ``bytes_sent``.
    """

    def collect(self) -> Iterator[Metric]:
        """The families of one scrape."""
        st = self._status()
        labels = [str(st.get("name") or ""), str(st.get("stream_id", ""))]
        for key, name, doc in _SENDER_COUNTERS:
            family = _counter(name, doc, STREAM_LABELS)
            family.add_metric(labels, float(st.get(key, 0)))
            yield family
        fec = st.get("fec", {})
        repair = _counter("mcastcam_sender_repair_datagrams",
                          "Repair symbols sent, by why (proactive, nack)",
                          [*STREAM_LABELS, "why"])  # fmt: skip
        repair.add_metric([*labels, "proactive"], float(fec.get("repair_proactive_sent", 0)))
        repair.add_metric([*labels, "nack"], float(fec.get("repair_nack_sent", 0)))
        yield repair
        nacks = _counter("mcastcam_sender_nacks_received", "NACKs received", STREAM_LABELS)
        nacks.add_metric(labels, float(fec.get("nacks_received", 0)))
        yield nacks
        for name, doc, counts in (
            ("mcastcam_sender_nacks_refused", "NACKs refused, by reason",
             fec.get("nacks_refused", {})),
            ("mcastcam_sender_rejected_datagrams", "Datagrams received and refused, by reason",
             st.get("rx_errors", {})),
            ("mcastcam_sender_send_errors", "Failed sends, by error",
             {_errno_token(k): v for k, v in st.get("send_errors", {}).items()}),
        ):  # fmt: skip
            family = _counter(name, doc, [*STREAM_LABELS, "reason"])
            for reason, n in bounded_reasons(counts).items():
                family.add_metric([*labels, reason], float(n))
            yield family
        audience = st.get("audience", {})
        receivers = _gauge("mcastcam_sender_receivers", "Receivers reporting", STREAM_LABELS)
        receivers.add_metric(labels, float(audience.get("receivers", 0)))
        yield receivers
        loss = _gauge("mcastcam_sender_worst_loss_ratio",
                      "Worst loss a receiver reports (0..1)", STREAM_LABELS)  # fmt: skip
        loss.add_metric(labels, float(audience.get("worst_loss_pct") or 0) / 100)
        yield loss
        redundancy = _gauge("mcastcam_sender_redundancy_ratio",
                            "Repair symbols per source symbol of the latest frame",
                            STREAM_LABELS)  # fmt: skip
        redundancy.add_metric(labels, float(fec.get("redundancy_pct", 0)) / 100)
        yield redundancy
        fps = _gauge(
            "mcastcam_sender_fps",
            "Frames per second over the last second (in: from the source, out: sent)",
            [*STREAM_LABELS, "direction"],
        )
        fps.add_metric([*labels, "in"], float(st.get("fps_in", 0)))
        fps.add_metric([*labels, "out"], float(st.get("fps_out", 0)))
        yield fps
        source = _gauge("mcastcam_sender_source_up", "1 while the source delivers frames",
                        STREAM_LABELS)  # fmt: skip
        source.add_metric(labels, 1.0 if st.get("source", {}).get("state") == "live" else 0.0)
        yield source


def _errno_token(key: str) -> str:
    """A send-error key (an errno name or number) as a label token."""
    token = key.strip().lower()
    return token if _REASON_RE.fullmatch(token) else f"errno_{token}" if token.isdigit() else key


async def start_metrics_server(render: Callable[[], bytes], host: str, port: int) -> web.AppRunner:
    """Serve ``GET /metrics`` (``render()``'s text) on ``host:port``; returns the runner.

    ``port`` 0 picks a free port (read it from ``runner.addresses``); stop it with
    ``await runner.cleanup()``.

    Raises:
        OSError: the address cannot be bound.
    """

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


class SenderMetrics:
    """A sender's registry with :class:`SenderCollector`; :meth:`render` for a scrape."""

    def __init__(self, status: Status) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SenderCollector(status))

    def render(self) -> bytes:
        """The exposition text of one scrape (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
