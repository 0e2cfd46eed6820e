"""Prometheus /metrics of a real receiver and sender on loopback multicast (issue #14 item 1).

Read back with prometheus-client's own parser; values must move while a stream flows.
"""

from __future__ import annotations

import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcastcam import net
from mcastcam.metrics import MAX_REASONS, MAX_STREAMS, bounded_reasons
from tests import test_end_to_end as e2e
from tests.test_end_to_end import Loop, free_port, http_get, receiver, sender, status, wait_for

pytestmark = pytest.mark.multicast


# the fixtures of the end-to-end tests: a loop running the CLIs, a random loopback group
programs = e2e.programs
group = e2e.group

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[Samples, dict[str, str], str]:
    """Every sample of one scrape, the families' types, and the Content-Type."""
    got = http_get(port, "/metrics")
    assert got is not None and got[0] == 200, got
    _, body, headers = got
    samples: Samples = {}
    types = {}
    for family in text_string_to_metric_families(body.decode()):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types, headers["Content-Type"]


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, lab), v in samples.items()
        if n == name and all(dict(lab).get(k) == x for k, x in labels.items())
    )  # fmt: skip


def test_receiver_and_sender_metrics_move_with_the_stream(programs: Loop, group: str) -> None:
    port, _ = receiver(programs, group)
    metrics_port = free_port()
    sender(programs, group, "sample", "--fps", "30", "--name", "metrics-cam", "--loop",
           "--metrics", str(metrics_port))  # fmt: skip
    wait_for(lambda: status(port)["online"], 10)
    # the name comes with the first heartbeat (frames may complete before it)
    wait_for(lambda: any(s["name"] == "metrics-cam" for s in status(port)["streams"]), 10)
    # a stream client, so complete -> written is observed for kind http
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        client.recv(65536)
        wait_for(lambda: scrape(port)[0].get(
            ("mcastcam_receiver_clients", (("kind", "http"),))) == 1, 5)  # fmt: skip
        first, types, content_type = scrape(port)
        t0 = time.monotonic()
        time.sleep(1.0)
        client.recv(1 << 20)
        second, _, _ = scrape(port)
        elapsed = time.monotonic() - t0
    assert content_type.startswith("text/plain")

    sid = status(port)["followed"]
    labels = {"stream": "metrics-cam", "stream_id": sid}
    for name in ("frames", "datagrams", "bytes"):
        assert types[f"mcastcam_receiver_{name}"] == "counter"
        before = total(first, f"mcastcam_receiver_{name}_total", **labels)
        after = total(second, f"mcastcam_receiver_{name}_total", **labels)
        assert 0 < before < after, (name, before, after)
    # 30 frames a second: the counter moved by the stream's rate, counted once
    moved = total(second, "mcastcam_receiver_frames_total", **labels) - total(
        first, "mcastcam_receiver_frames_total", **labels
    )
    assert 10 <= moved <= 30 * elapsed + 5, (moved, elapsed)
    assert total(second, "mcastcam_receiver_stream_up", **labels) == 1
    assert total(second, "mcastcam_receiver_stream_followed", **labels) == 1
    for name in ("mcastcam_receiver_datagrams_lost_total", "mcastcam_receiver_frames_corrupt_total",
                 "mcastcam_receiver_frames_unrepairable_total"):  # fmt: skip
        assert (name, tuple(sorted(labels.items()))) in second, name
    assert ("mcastcam_receiver_frames_repaired_total",
            tuple(sorted({**labels, "method": "nack"}.items()))) in second  # fmt: skip

    # histograms, base unit seconds; counts grow with the frames
    assert types["mcastcam_receiver_capture_to_complete_seconds"] == "histogram"
    c1 = total(first, "mcastcam_receiver_capture_to_complete_seconds_count", **labels)
    c2 = total(second, "mcastcam_receiver_capture_to_complete_seconds_count", **labels)
    assert 0 < c1 < c2
    mean = total(second, "mcastcam_receiver_capture_to_complete_seconds_sum", **labels) / c2
    assert 0 <= mean < 1.0, mean  # one host's clock: a loopback frame takes milliseconds
    inf = total(second, "mcastcam_receiver_capture_to_complete_seconds_bucket", le="+Inf",
                **labels)  # fmt: skip
    assert inf == c2
    w1 = total(first, "mcastcam_receiver_complete_to_written_seconds_count", kind="http")
    w2 = total(second, "mcastcam_receiver_complete_to_written_seconds_count", kind="http")
    assert 0 < w1 < w2

    # the sender's own endpoint
    sent1, sender_types, _ = scrape(metrics_port)
    wait_for(lambda: total(scrape(metrics_port)[0], "mcastcam_sender_frames_total") >
             total(sent1, "mcastcam_sender_frames_total") + 10, 5)  # fmt: skip
    sent2, _, _ = scrape(metrics_port)
    slabels = {"stream": "metrics-cam", "stream_id": sid}
    for name in ("frames", "datagrams", "bytes"):
        assert sender_types[f"mcastcam_sender_{name}"] == "counter"
        assert (
            0
            < total(sent1, f"mcastcam_sender_{name}_total", **slabels)
            < total(sent2, f"mcastcam_sender_{name}_total", **slabels)
        ), name
    assert total(sent2, "mcastcam_sender_source_up", **slabels) == 1
    # the receiver reports (about once a second): the sender counts them and its audience
    wait_for(lambda: total(scrape(metrics_port)[0], "mcastcam_sender_receivers") >= 1, 10)
    assert total(scrape(metrics_port)[0], "mcastcam_sender_reports_received_total") >= 1


def test_refused_datagrams_by_reason(programs: Loop, group: str) -> None:
    port, _ = receiver(programs, group)
    addr, udp_port = group.split(":")
    with net.open_multicast_sender(net.resolve_interface("lo"), ttl=0, loop=True) as tx:
        for i in range(50):  # 40 without our magic, 10 of a kind no version has
            tx.sendto(b"junk" * (i % 5) + b"MC\x02\x63" + bytes(10), (addr, int(udp_port)))
    wait_for(lambda: sum(status(port)["decode_errors"].values()) == 50, 5)
    samples, types, _ = scrape(port)
    assert types["mcastcam_receiver_decode_errors"] == "counter"
    assert samples[("mcastcam_receiver_decode_errors_total", (("reason", "bad_magic"),))] == 40
    assert samples[("mcastcam_receiver_decode_errors_total", (("reason", "unknown_kind"),))] == 10
    assert samples[("mcastcam_receiver_clients", (("kind", "http"),))] == 0


def test_reason_labels_are_capped_and_tokens() -> None:
    counts = {f"reason_{i:03d}": 1 for i in range(3 * MAX_REASONS)}
    counts["Bad Label\n"] = 5
    out = bounded_reasons(counts)
    assert len(out) == MAX_REASONS
    assert sum(out.values()) == sum(counts.values())
    assert out["other"] == 5 + 3 * MAX_REASONS - (MAX_REASONS - 1)
    assert MAX_STREAMS >= 2  # the followed stream and at least one other
